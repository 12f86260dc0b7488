"""Active learning: critic's picks against random picks from the same pool, trained by the same `critic train`.

For each dataset and seed: a pool of unlabelled training reviews and a seeded test set. A simulated annotator answers
each review with its true label. Active: a labelling session (critic.labelling.session, as `critic label` runs it)
starts from a diverse sample, then after each round retrains from its store and asks for the next round's reviews.
Random: the same pool, reviews drawn uniformly, the same `critic train --data STORE` at the same label counts. Both
use the loop's retrain settings (few labels: MiniLM's mean embedding tuned on the labels' pairs in a 128-token
window, then a logistic regression on it). Accuracy and macro F1 on the test reviews at each count; the seconds of
each retrain (training in its own process, then the pool scored and the next batch picked). Mean and spread over
seeds, the differences last, against the targets.

    python bench/active_learning.py [--datasets imdb drugs] [--seeds 3] [--pool 5000] [--test-size 1000]
                                    [--out results.json]
    python bench/active_learning.py --datasets imdb --rounds 100 400 500 600 800 1000 --measure 600 800 1000
                                    (the least certain, which the loop asks for from 200 labels a class on)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from critic import data  # noqa: E402
from critic.data.store import Store  # noqa: E402
from critic.inference.backends import cpu_name  # noqa: E402
from critic.labelling.session import LabelSession, LoopSettings, train_in_process  # noqa: E402

# Labels after each round of the active arm, and the counts at which both arms are measured (the targets' counts)
ROUNDS = {"imdb": [20, 50, 100, 150, 200, 250], "drugs": [30, 60, 90, 120, 150]}
TRAIN_ARGS: list[str] = []  # --train-arg: more `critic train` flags for both arms
MEASURED = {
    "imdb": {"active": [100, 200, 250], "random": [100, 200, 400]},  # random at 400: what active should reach by 250
    "drugs": {"active": [150], "random": [150]},
}


def pool_and_test(name: str, pool_size: int, test_size: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, tuple]:
    """The pool (text, label name) from the training split and the test reviews; drugs: its whole training split,
    and its validation and test splits as the test (97 test reviews alone are too few to tell 0.03 of F1)."""
    dataset = data.load(name)
    classes = dataset.labels
    train = dataset.split("train")
    pool = train.sample(n=min(pool_size, len(train)), random_state=seed)
    if name == "drugs":
        test = pd.concat([dataset.split("validation"), dataset.split("test")], ignore_index=True)
    else:
        test = dataset.split("test", test_size, seed)
    named = lambda frame: frame.assign(label=[classes[i] for i in frame["label"]]).reset_index(drop=True)  # noqa: E731
    return named(pool), named(test), classes


def scores(model: Path, test: pd.DataFrame) -> dict:
    from sklearn.metrics import f1_score

    from critic.inference.predict import Classifier

    predicted = np.array(Classifier.load(model).predict(test["text"].tolist()))  # as the model answers by default
    truth = test["label"].to_numpy()
    return {
        "accuracy": float((predicted == truth).mean()),
        "f1_macro": float(f1_score(truth, predicted, average="macro")),
    }


def run_active(name: str, pool: pd.DataFrame, test: pd.DataFrame, classes, seed: int, folder: Path, base: str) -> dict:
    store = Store(folder / "active.db", create=True, labels=classes)
    pool[["text"]].to_csv(folder / "pool.csv", index=False)
    store.import_file(folder / "pool.csv")
    truth = dict(zip(pool["text"], pool["label"]))
    rounds = ROUNDS[name]
    # each round's batch planned whole by the model of the round before (no planning ahead with the same model)
    settings = LoopSettings(
        base, retrain_every=0, batch=rounds[0], plan_ahead=False, seed=seed, models=folder / "active"
    )
    settings.train_args += TRAIN_ARGS
    session = LabelSession(store, None, settings)
    session.start()
    measured, retrains, given = {}, [], 0
    for count, following in zip(rounds, rounds[1:] + [None]):
        items = session.next(count - given)
        assert len(items) == count - given, (len(items), count - given)
        for item in items:
            session.label(item["id"], truth[item["text"]], "simulated")
        given = count
        settings.batch = (following or count) - count or 1
        started = time.perf_counter()
        assert session.retrain()
        session.wait()
        retrains.append({"labels": count, "seconds": time.perf_counter() - started})
        if session.retraining.last_error:
            raise RuntimeError(session.retraining.last_error)
        if count in MEASURED[name]["active"]:
            measured[count] = scores(session.models / f"round-{session.retraining.round:03d}", test)
            measured[count]["picked"] = dict(pd.Series([i["reason"] for i in items]).value_counts())
            print(f"  active {count}: {measured[count]}", flush=True)
    return {"measured": measured, "retrains": retrains, "per_class": store.counts()}


def run_random(name: str, pool: pd.DataFrame, test: pd.DataFrame, classes, seed: int, folder: Path, base: str) -> dict:
    store = Store(folder / "random.db", create=True, labels=classes)
    order = np.random.default_rng(seed).permutation(len(pool))
    ids, _ = store.add_reviews(pool["text"].tolist(), source="pool")
    measured, given = {}, 0
    for count in MEASURED[name]["random"]:
        for position in order[given:count]:
            store.add_label(ids[position], pool["label"].iloc[position], "simulated")
        given = count
        settings = LoopSettings(base)
        settings.train_args += TRAIN_ARGS
        model = train_in_process(str(folder / "random.db"), settings, folder / f"random-{count}")
        measured[count] = scores(model, test)
        print(f"  random {count}: {measured[count]}", flush=True)
    return {"measured": measured}


def retrain_while_labelling(pool: pd.DataFrame, labels: int, folder: Path) -> dict:
    """The real `critic label` server over the pool, `labels` of its reviews labelled in the file it imports: a
    retrain asked through the API, and GET /v1/label/next asked every 50 ms (the status every second) until the new
    model is in use and has planned."""
    import httpx
    from benchlib.serving import free_port, start_labelling

    frame = pool.assign(label=[*pool["label"][:labels], *[""] * (len(pool) - labels)])
    frame.to_csv(folder / "partly-labelled.csv", index=False)
    port = free_port()
    flags = [f"--train-arg={flag}" for flag in TRAIN_ARGS]  # --train-arg, as the arms take it
    server = start_labelling(
        str(folder / "serving.db"), port, str(folder / "partly-labelled.csv"), "--retrain-every", "0", *flags
    )
    latencies = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert client.post("/v1/label/retrain").json()["started"]
            checked = time.perf_counter()
            while time.perf_counter() - checked < 1 or client.get("/v1/label/status").json()["retrain"]["running"]:
                if time.perf_counter() - checked >= 1:  # the status once a second (the page: every 5 s)
                    checked = time.perf_counter()
                started = time.perf_counter()
                client.get("/v1/label/next").raise_for_status()
                latencies.append(time.perf_counter() - started)
                time.sleep(0.05)
            status = client.get("/v1/label/status").json()
    finally:
        server.terminate()
        server.wait(30)
    if status["retrain"]["last_error"]:
        raise RuntimeError(status["retrain"]["last_error"])
    found = {
        "labels": labels,
        "retrain_seconds": status["retrain"]["last_seconds"],  # until the new model's first plan
        "model_seconds": status["retrain"]["model_seconds"],  # until the new model answered (suggestions)
        "next_ms_p50": 1000 * float(np.percentile(latencies, 50)),
        "next_ms_p95": 1000 * float(np.percentile(latencies, 95)),
        "next_requests": len(latencies),
    }
    print(
        f"retrain at {labels} labels: the model in use in {found['model_seconds']:.0f} s, its first plan in "
        f"{found['retrain_seconds']:.0f} s; next p50 "
        f"{found['next_ms_p50']:.1f} ms, p95 {found['next_ms_p95']:.1f} ms over {len(latencies)} requests meanwhile",
        flush=True,
    )
    return found


def summary(runs: list[dict], arm: str, count: int, metric: str) -> tuple[float, float]:
    values = [run[arm]["measured"][count][metric] for run in runs if count in run[arm]["measured"]]
    return float(np.mean(values)), float(np.std(values))


def report(name: str, runs: list[dict]) -> dict:
    """Mean ± sd per arm and count, and the targets' differences."""
    metric = "f1_macro" if name == "drugs" else "accuracy"
    table = {}
    for arm in ("active", "random"):
        for count in MEASURED[name][arm]:
            mean, spread = summary(runs, arm, count, metric)
            table[f"{arm} {count}"] = {"mean": mean, "sd": spread}
            print(f"{name} {arm:6s} {count:4d} labels: {metric} {mean:.4f} ± {spread:.4f}")
    verdict = {}
    for count in MEASURED[name]["random"]:
        if count in MEASURED[name]["active"]:
            gains = [r["active"]["measured"][count][metric] - r["random"]["measured"][count][metric] for r in runs]
            verdict[f"gain at {count}"] = {"mean": float(np.mean(gains)), "sd": float(np.std(gains))}
            print(f"{name} active - random at {count}: {np.mean(gains):+.4f} ± {np.std(gains):.4f}")
    if name == "imdb" and "random 400" in table:
        goal = table["random 400"]["mean"]
        reached = [c for c in MEASURED[name]["active"] if table[f"active {c}"]["mean"] >= goal]  # the fewest
        verdict["active labels to reach random at 400"] = min(reached) if reached else None
        print(
            f"imdb: active reaches random's 400-label accuracy ({goal:.4f}) at {min(reached) if reached else '> 400'}"
        )
    seconds = [r["seconds"] for run in runs for r in run["active"]["retrains"]]
    verdict["retrain seconds (max, median)"] = [float(np.max(seconds)), float(np.median(seconds))]
    print(
        f"{name} retrain (train, score the pool, pick): max {np.max(seconds):.0f} s, median {np.median(seconds):.0f} s"
    )
    return {"table": table, "verdict": verdict}


def plot(results: dict, path: Path) -> None:
    """Accuracy (macro F1 for drugs) against labels, active and random, the mean over seeds with its spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    figure, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        metric = "f1_macro" if name == "drugs" else "accuracy"
        runs = results["datasets"][name]["runs"]
        for arm, colour in (("active", "#1e8449"), ("random", "#7f8c8d")):
            counts = sorted({int(c) for run in runs for c in run[arm]["measured"]})
            values = np.array([[run[arm]["measured"][str(c)][metric] for c in counts] for run in runs])
            mean, spread = values.mean(axis=0), values.std(axis=0)
            ax.plot(counts, mean, "o-", color=colour, label=f"{arm} ({len(runs)} seeds)")
            ax.fill_between(counts, mean - spread, mean + spread, color=colour, alpha=0.15)
        ax.set_xlabel("labels")
        ax.set_ylabel("macro F1" if metric == "f1_macro" else "test accuracy")
        ax.set_title(f"{name}: critic's picks against random picks")
        ax.grid(alpha=0.3)
        ax.legend()
    figure.text(0.01, 0.01, f"{results['machine']}, {results['date']}", fontsize=7, color="#667")
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["imdb", "drugs"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--pool", type=int, default=5000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--out", default="active-learning.json")
    parser.add_argument("--base-model", default="minilm", help="the encoder each retrain starts from")
    parser.add_argument("--smoke", action="store_true", help="two short rounds on IMDB (the test suite's check)")
    parser.add_argument("--train-arg", action="append", default=[], help="a `critic train` flag for both arms")
    parser.add_argument(
        "--rounds",
        type=int,
        nargs="+",
        metavar="LABELS",
        help="the active arm's label counts after each round, for every dataset (default: the targets' rounds)",
    )
    parser.add_argument(
        "--measure", type=int, nargs="+", metavar="LABELS", help="the counts at which both arms are measured"
    )
    parser.add_argument("--plot", metavar="RESULTS", help="only this: the curves of a results file, as RESULTS.svg")
    parser.add_argument(
        "--retrain-check",
        type=int,
        metavar="LABELS",
        help="only this: a retrain at LABELS IMDB labels through the real server, and /v1/label/next meanwhile",
    )
    args = parser.parse_args()
    if args.plot:
        plot(json.loads(Path(args.plot).read_text()), Path(args.plot).with_suffix(".svg"))
        return
    TRAIN_ARGS.extend(args.train_arg)
    if args.smoke:
        ROUNDS["imdb"], MEASURED["imdb"] = [20, 40], {"active": [40], "random": [40]}
    for name in args.datasets:
        ROUNDS[name] = args.rounds or ROUNDS[name]
        if args.measure:
            MEASURED[name] = {"active": args.measure, "random": args.measure}
    results = {"machine": cpu_name(), "date": str(date.today()), "settings": vars(args), "datasets": {}}
    if args.retrain_check:
        pool, _, _ = pool_and_test("imdb", args.pool, 10, 0)
        with tempfile.TemporaryDirectory() as folder:
            results["retrain_check"] = retrain_while_labelling(pool, args.retrain_check, Path(folder))
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
        return
    for name in args.datasets:
        runs = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            print(f"{name}, seed {seed}", flush=True)
            pool, test, classes = pool_and_test(name, args.pool, args.test_size, seed)
            with tempfile.TemporaryDirectory() as folder:
                runs.append(
                    {
                        "seed": seed,
                        "active": run_active(name, pool, test, classes, seed, Path(folder), args.base_model),
                        "random": run_random(name, pool, test, classes, seed, Path(folder), args.base_model),
                    }
                )
            results["datasets"][name] = {"runs": runs}
            Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
        results["datasets"][name]["summary"] = report(name, runs)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    plot(json.loads(Path(args.out).read_text()), Path(args.out).with_suffix(".svg"))


if __name__ == "__main__":
    main()
