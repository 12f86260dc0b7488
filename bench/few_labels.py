"""Few labels: critic against SetFit on the same few labelled reviews, the same body, the same machine.

For each dataset (IMDB, drugs: 3 classes), size (labelled training reviews per class) and seed: a CSV holding that
many seeded training reviews per class, 200 validation reviews (drugs has 98: all of them) and the test reviews (a
`split` column keeps them apart). critic: `critic train --data FILE` with its defaults (below 200 per class that is
the few-label path; with `--fine-tune`, `--few-labels on` against `--few-labels off`, critic's fine-tuning, at every
size); SetFit 1.2 with its defaults on the same training reviews and the same body (all-MiniLM-L6-v2). Accuracy and
macro F1 on the test reviews, process CPU seconds and wall seconds of training (SetFit's contrastive pairs and head;
critic's whole `train`, calibration included). A critic model that reads long reviews whole through windows (the
few-label default) is also scored with them cut, as SetFit cuts them. Prints mean and spread over seeds, and the
ratio of accuracies and of CPU seconds.

    python bench/few_labels.py [--datasets imdb drugs] [--sizes 8 16 32 64] [--seeds 5] [--first-seed 0]
                               [--setfit-sizes 8 16] [--test-size 1000] [--fine-tune] [--regularisation C]
                               [--pair-epochs N] [--max-length N] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from critic import data  # noqa: E402
from critic.data import catalogue  # noqa: E402
from critic.inference.backends import cpu_name  # noqa: E402
from critic.training import few_labels  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def few_label_file(
    name: str, dataset, size: int, seed: int, test: pd.DataFrame, folder: Path
) -> tuple[Path, pd.DataFrame]:
    """`size` seeded training reviews per class, up to 200 validation reviews, the test reviews; a CSV with a split."""
    train = dataset.split("train")
    rng = np.random.default_rng(seed)
    picked = np.concatenate(
        [
            rng.choice(np.flatnonzero(train["label"].to_numpy() == c), size, replace=False)
            for c in range(len(dataset.labels))
        ]
    )
    few = train.iloc[picked].assign(split="train")
    validation = dataset.split("validation", 200, seed).assign(split="validation")
    frame = pd.concat([few, validation, test.assign(split="test")], ignore_index=True)
    frame["label"] = [dataset.labels[i] for i in frame["label"]]
    path = folder / f"{name}-{size}-{seed}.csv"  # each its own file, and so its own model folder
    frame[["text", "label", "split"]].to_csv(path, index=False)
    return path, few


def scores(predicted: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.metrics import f1_score

    return {
        "accuracy": float((predicted == labels).mean()),
        "f1_macro": float(f1_score(labels, predicted, average="macro")),
    }


def run_critic(path: Path, folder: Path, test: pd.DataFrame, classes: tuple, *extra: str) -> dict:
    from critic.cli import main as critic
    from critic.inference.predict import Classifier

    output = folder / ("critic-" + path.stem + "".join(extra).replace("-", ""))
    cpu, wall = cpu_seconds(), time.perf_counter()
    assert critic(["train", "--data", str(path), "--output", str(output), *extra]) == 0
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    classifier = Classifier.load(output)
    predicted = np.array(classifier.predict(test["text"].tolist()))  # names: the file's classes, in its order
    meta = json.loads((output / "critic.json").read_text())
    labels = np.array([classes[i] for i in test["label"]])
    reads = classifier.long_reviews.mode
    if reads == "windows":  # what the model gives with long reviews cut instead, as SetFit cuts them
        cut = np.array(Classifier.load(output, long_reviews="truncate").predict(test["text"].tolist()))
    return {
        **scores(predicted, labels),
        "cpu_seconds": cpu,
        "seconds": wall,
        "path": "few labels" if "few_labels" in meta else "fine-tuning",
        "labels": list(classes),
        "long_reviews": reads,
        **({"truncated": scores(cut, labels)} if reads == "windows" else {}),
    }


def run_setfit(few: pd.DataFrame, test: pd.DataFrame, seed: int, folder: Path, max_length: int | None) -> dict:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(str(catalogue.resolve_model("minilm")))
    if max_length:
        model.model_body.max_seq_length = max_length
    trainer = Trainer(
        model=model,
        # its defaults, but its checkpoints in the run's folder and no experiment tracker writing into this one
        args=TrainingArguments(seed=seed, show_progress_bar=False, output_dir=str(folder / "setfit"), report_to="none"),
        train_dataset=Dataset.from_dict({"text": few["text"].tolist(), "label": few["label"].tolist()}),
    )
    cpu, wall = cpu_seconds(), time.perf_counter()
    trainer.train()
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    predicted = np.asarray(model.predict(test["text"].tolist(), batch_size=64))
    return {**scores(predicted, test["label"].to_numpy()), "cpu_seconds": cpu, "seconds": wall}


def summary(runs: list[dict]) -> dict:
    accuracy = [r["accuracy"] for r in runs]
    cut = [r["truncated"]["accuracy"] for r in runs if "truncated" in r]
    return {
        "accuracy_mean": float(np.mean(accuracy)),
        "accuracy_sd": float(np.std(accuracy)),
        "f1_macro_mean": float(np.mean([r["f1_macro"] for r in runs])),
        "cpu_seconds_mean": float(np.mean([r["cpu_seconds"] for r in runs])),
        "seconds_mean": float(np.mean([r["seconds"] for r in runs])),
        "runs": len(runs),
        **({"truncated_accuracy_mean": float(np.mean(cut))} if len(cut) == len(runs) else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["imdb", "drugs"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[8, 16, 32, 64])
    parser.add_argument("--setfit-sizes", nargs="*", type=int, help="sizes SetFit also runs at (default: every size)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds run from here (default 0): 3 with --seeds 2 adds seeds 3 and 4"
    )
    parser.add_argument("--test-size", type=int, default=1000, help="seeded test reviews (default 1,000)")
    parser.add_argument(
        "--fine-tune",
        action="store_true",
        help="critic's two paths at every size: --few-labels on against off (fine-tuning), to find the crossing",
    )
    parser.add_argument(
        "--regularisation",
        type=float,
        help=f"the logistic regression's C in critic's few-label fit (default {few_labels.REGULARISATION})",
    )
    parser.add_argument(
        "--pair-epochs",
        type=int,
        help="critic's --pair-epochs (default: critic's; 0 compares the frozen encoder's regression)",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        help="both read N tokens of a review (default: each its own; 256 for SetFit's MiniLM and critic's windows)",
    )
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    if args.regularisation is not None:
        few_labels.REGULARISATION = args.regularisation  # critic runs in this process
    setfit_sizes = args.sizes if args.setfit_sizes is None else args.setfit_sizes
    results = {
        "machine": cpu_name(),
        "date": date.today().isoformat(),
        "regularisation": few_labels.REGULARISATION,
        "pair_epochs": args.pair_epochs,
        "max_length": args.max_length,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        for name in args.datasets:
            dataset = data.load(name)
            test = dataset.split("test", args.test_size, 42)
            for size in args.sizes:
                row = {"dataset": name, "size": size, "critic": [], "setfit": [], "fine_tuning": []}
                results["rows"].append(row)
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    path, few = few_label_file(name, dataset, size, seed, test, folder)
                    run_seed(row, args, path, few, test, dataset.labels, seed, folder)
                    if size in setfit_sizes:
                        row["setfit"].append({"seed": seed, **run_setfit(few, test, seed, folder, args.max_length)})
                    if args.out:  # after every seed: a long run stopped early keeps what it measured
                        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
                report(row)
                if args.out:
                    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


def run_seed(row: dict, args, path: Path, few, test, classes: tuple, seed: int, folder: Path) -> None:
    """critic on one seed's file (both of its paths with --fine-tune: where does fine-tuning overtake?)."""
    chosen = ("--few-labels", "on") if args.fine_tune else ()
    if args.pair_epochs is not None:
        chosen += ("--pair-epochs", str(args.pair_epochs))
    if args.max_length:
        chosen += ("--max-length", str(args.max_length))
    row["critic"].append({"seed": seed, **run_critic(path, folder, test, classes, *chosen)})
    if args.fine_tune:
        row["fine_tuning"].append({"seed": seed, **run_critic(path, folder, test, classes, "--few-labels", "off")})


def report(row: dict) -> None:
    line = f"{row['dataset']} {row['size']}/class:"
    for who in ("critic", "fine_tuning", "setfit"):
        if row[who]:
            s = summary(row[who])
            row[f"{who}_summary"] = s
            line += (
                f"  {who} {s['accuracy_mean']:.2%} ± {s['accuracy_sd']:.2%} (F1 {s['f1_macro_mean']:.3f}, "
                f"{s['cpu_seconds_mean']:.0f} CPU s"
                + (f"; long reviews cut: {s['truncated_accuracy_mean']:.2%}" if "truncated_accuracy_mean" in s else "")
                + ")"
            )
    if row["setfit"]:
        ours, theirs = row["critic_summary"], row["setfit_summary"]
        line += (
            f"  | accuracy {ours['accuracy_mean'] - theirs['accuracy_mean']:+.2%} against SetFit "
            f"({'met' if ours['accuracy_mean'] >= theirs['accuracy_mean'] else 'not met'}), CPU time "
            f"{theirs['cpu_seconds_mean'] / max(ours['cpu_seconds_mean'], 1e-9):.1f}x less "
            f"({'met' if ours['cpu_seconds_mean'] <= theirs['cpu_seconds_mean'] else 'not met'})"
        )
    print(line, flush=True)


if __name__ == "__main__":
    main()
