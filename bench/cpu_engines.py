"""CPU scoring: critic against the engines a user picks for speed, each at its best, in one run, on the same model
and the same IMDB test reviews, tokenization included, each engine's accuracy beside its rate.

The peers, run by hand as their documentation shows, on length-sorted batches (their best case):
  - transformers.pipeline in bf16 (where the chip has it);
  - OpenVINO: `openvino.convert_model` of the PyTorch model, at its defaults (bf16 where the chip has it), with the
    f32 hint, and statically quantized to int8 by NNCF on validation reviews;
  - ONNX Runtime: the model exported to ONNX, its transformer fusions applied (onnxruntime.transformers.optimizer:
    attention, skip-layernorm, GELU), and that dynamically quantized to int8;
  - CTranslate2 int8, for the BERT-architecture models it supports (it has no MPNet).
critic runs as a user gets it after `critic export MODEL` (`Classifier.load(MODEL)`, backend auto; with its cascade
where `critic export --cascade` fitted one, and then also without it) and with each of its backends. The peers read
the texts critic's cleaning already cleaned (their cleaning is not timed), and cut the first MAX_LENGTH tokens;
critic cleans inside its timing and cuts as the model was trained (head+tail). Every engine is built first; then in
each of --rounds rounds every engine scores the reviews once, in turn, so that a shared machine's changing load
meets them alike, and each engine's median rate counts. Ratios last.

    python bench/cpu_engines.py runs/minilm-imdb                    # 1,000 test reviews
    python bench/cpu_engines.py runs/mpnet-imdb --reviews 300
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from critic import data, modeling  # noqa: E402
from critic.inference import backends  # noqa: E402
from critic.inference.export import export  # noqa: E402
from critic.inference.predict import Classifier  # noqa: E402

PEERS = (
    "pipeline-bf16",
    "openvino",
    "openvino-f32",
    "openvino-int8",
    "onnxruntime-fused",
    "onnxruntime-fused-int8",
    "ctranslate2-int8",
)


class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def sorted_batches(tokenizer, texts: list[str], batch_size: int, max_length: int):
    """(positions, tokenized batch as numpy) for batches of texts sorted by length, tokenized as they are used."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield (
            rows,
            tokenizer(
                [texts[i] for i in rows], padding=True, truncation=True, max_length=max_length, return_tensors="np"
            ),
        )


def score_by_hand(run, tokenizer, texts: list[str], batch_size: int, max_length: int) -> np.ndarray:
    """Probabilities from `run(input_ids, attention_mask) -> logits`, over sorted batches, in input order."""
    out = None
    for rows, batch in sorted_batches(tokenizer, texts, batch_size, max_length):
        probs = modeling.softmax(run(batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)))
        out = np.zeros((len(texts), probs.shape[1]), dtype=np.float32) if out is None else out
        out[rows] = probs
    return out


def pipeline_peer(model_dir: Path, **_):
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(model_dir), top_k=None, dtype=torch.bfloat16, device="cpu")
    labels = json.loads((model_dir / "critic.json").read_text())["labels"]

    def score(texts, batch_size, max_length, tokenizer):
        order = np.argsort([len(t) for t in texts], kind="stable")
        results = classify([texts[i] for i in order], batch_size=batch_size, truncation=True, max_length=max_length)
        out = np.zeros((len(texts), len(labels)), dtype=np.float32)
        out[order] = [[next(s["score"] for s in row if s["label"] == name) for name in labels] for row in results]
        return out

    return score


def openvino_peer(
    model_dir: Path,
    work: Path,
    hint: str | None = None,
    calibration: list[str] | None = None,
    tokenizer=None,
    max_length: int = 256,
    **_,
):
    import openvino as ov

    model, _, _ = modeling.load(model_dir)
    example = tokenizer(
        ["a padded example", "and a longer one, to trace the attention mask"], padding=True, return_tensors="pt"
    )
    converted = ov.convert_model(Logits(model).eval(), example_input=dict(example))
    if calibration is not None:
        import nncf

        batches = [
            {k: v.astype(np.int64) for k, v in batch.items()}
            for _, batch in sorted_batches(tokenizer, calibration, 8, max_length)
        ]
        converted = nncf.quantize(
            converted, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches)
        )
    compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": hint} if hint else {})

    def score(texts, batch_size, max_length, tokenizer):
        return score_by_hand(
            lambda ids, mask: compiled({"input_ids": ids, "attention_mask": mask})[0],
            tokenizer,
            texts,
            batch_size,
            max_length,
        )

    return score


def onnxruntime_peer(model_dir: Path, work: Path, int8: bool = False, **_):
    """Exported with the TorchScript exporter (whose graphs ONNX Runtime's transformer optimizer recognises), fused
    at its highest level for the CPU, and dynamically quantized to int8 (VNNI) on request."""
    import onnxruntime as ort
    from onnxruntime.transformers import optimizer

    model, tokenizer, _ = modeling.load(model_dir)
    exported, fused = work / "model.onnx", work / "model.fused.onnx"
    if not fused.is_file():
        example = tokenizer(["a padded example", "and a longer one"], padding=True, return_tensors="pt")
        torch.onnx.export(
            Logits(model).eval(),
            (example["input_ids"], example["attention_mask"]),
            str(exported),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"}},
            opset_version=17,
        )
        optimizer.optimize_model(
            str(exported),
            model_type="bert",
            num_heads=model.config.num_attention_heads,
            hidden_size=model.config.hidden_size,
            opt_level=2,
        ).save_model_to_file(str(fused))
    path = fused
    if int8:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        path = work / "model.fused.int8.onnx"
        # the fused graph's contrib operators leave shape inference without types: tell it they are float
        quantize_dynamic(
            fused,
            path,
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def score(texts, batch_size, max_length, tokenizer):
        return score_by_hand(
            lambda ids, mask: session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0],
            tokenizer,
            texts,
            batch_size,
            max_length,
        )

    return score


def ctranslate2_peer(model_dir: Path, work: Path, **_):
    """CTranslate2's encoder in int8 and the classification head applied to its pooled output (CTranslate2 has no
    sequence-classification head)."""
    import ctranslate2
    import transformers
    from ctranslate2.converters import TransformersConverter

    model, tokenizer, _ = modeling.load(model_dir)
    if model.config.model_type != "bert":
        raise NotImplementedError(f"CTranslate2 has no {model.config.model_type}")
    # CTranslate2 4.8 reads a setting transformers 5 no longer keeps on BERT's config
    transformers.BertConfig.position_embedding_type = "absolute"
    TransformersConverter(str(model_dir)).convert(str(work / "ct2"), quantization="int8", force=True)
    encoder = ctranslate2.Encoder(
        str(work / "ct2"), device="cpu", compute_type="int8", intra_threads=torch.get_num_threads()
    )
    weight, bias = model.classifier.weight.detach().numpy(), model.classifier.bias.detach().numpy()

    def score(texts, batch_size, max_length, tokenizer):
        out = np.zeros((len(texts), len(bias)), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids = tokenizer([texts[i] for i in rows], truncation=True, max_length=max_length)["input_ids"]
            pooled = np.asarray(encoder.forward_batch([tokenizer.convert_ids_to_tokens(x) for x in ids]).pooler_output)
            out[rows] = modeling.softmax(pooled @ weight.T + bias)
        return out

    return score


def build_peer(name: str, model_dir: Path, work: Path, tokenizer, calibration: list[str], max_length: int):
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    options = dict(model_dir=model_dir, work=folder, tokenizer=tokenizer, max_length=max_length)
    return {
        "pipeline-bf16": lambda: pipeline_peer(**options),
        "openvino": lambda: openvino_peer(**options),
        "openvino-f32": lambda: openvino_peer(**options, hint="f32"),
        "openvino-int8": lambda: openvino_peer(**options, calibration=calibration),
        "onnxruntime-fused": lambda: onnxruntime_peer(**options),
        "onnxruntime-fused-int8": lambda: onnxruntime_peer(**options, int8=True),
        "ctranslate2-int8": lambda: ctranslate2_peer(**options),
    }[name]()


def main() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")  # the exporters' and converters' notes on tracing: the figures are the output
    logging.getLogger().setLevel(logging.ERROR)
    modeling.quiet_transformers()
    args = parse_args()
    model_dir = Path(args.model)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    meta = json.loads((model_dir / modeling.META_FILE).read_text())
    max_length = meta["truncation"]["max_length"]
    test = data.load_dataset("imdb", split="test", size=args.reviews, seed=0)
    texts, labels = test["text"].tolist(), test["label"].to_numpy()
    clean = data.cleaner(meta["cleaning"])
    calibration = [
        clean(t) for t in data.load_dataset("imdb", split="validation", size=args.calibration, seed=1)["text"]
    ]
    machine = {
        "cpu": backends.cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "bf16": modeling.cpu_has_bf16(),
        "torch": torch.__version__,
        "date": str(date.today()),
    }
    print(
        f"{len(texts):,} IMDB test reviews, window {max_length}; {machine['cpu']}, {machine['cores']} cores, "
        f"bf16 {'yes' if machine['bf16'] else 'no'}; {machine['date']}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as work:
        engines = build_peers(args, model_dir, Path(work), tokenizer, calibration, max_length)
        engines.update(build_ours(args, model_dir, machine["cpu"]))
        results = measure_interleaved(
            engines, {"peer": [clean(t) for t in texts], "critic": texts}, labels, args.rounds
        )
    ratios = print_ratios(results)
    if args.out:
        figures = {"machine": machine, "reviews": len(texts), "max_length": max_length, "results": results}
        Path(args.out).write_text(json.dumps({**figures, "ratios": ratios}, indent=2))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a fine-tuned critic model folder")
    parser.add_argument("--reviews", type=int, default=1000, help="IMDB test reviews (default 1,000)")
    parser.add_argument("--calibration", type=int, default=300, help="validation reviews for the static int8 models")
    parser.add_argument("--batch-size", type=int, default=32, help="the peers' batch size (default 32)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds in which every engine scores the reviews once, in turn (the machine's load changes minute to "
        "minute: each engine meets it alike); each engine's median counts (default 3)",
    )
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=PEERS)
    parser.add_argument(
        "--ours",
        nargs="*",
        default=["auto", "torch", *backends.ENGINES],
        choices=["auto", "torch", *backends.ENGINES],
        help="critic's backends to run (default: all)",
    )
    parser.add_argument(
        "--export",
        action="store_true",
        help="run `critic export` again even where the model has a measurement for this CPU",
    )
    parser.add_argument("--out", help="write the figures as JSON here too")
    return parser.parse_args()


@dataclass(frozen=True)
class Engine:
    """One way of scoring the reviews: a function from texts to probabilities, and which texts it reads (the peers
    the cleaned ones, critic the raw ones, which it cleans itself)."""

    score: Callable[[list[str]], np.ndarray]
    reads: str  # peer or critic
    cheap_share: Callable[[list[str]], float] | None = (
        None  # critic with its cascade: the share its cheap stage answers
    )


def build_peers(args, model_dir: Path, work: Path, tokenizer, calibration: list[str], max_length: int) -> dict:
    engines = {}
    for name in args.peers:
        try:
            score = build_peer(name, model_dir, work, tokenizer, calibration, max_length)
        except (ImportError, NotImplementedError) as error:
            print(f"{name}: skipped ({error})", flush=True)
            continue
        engines[name] = Engine(lambda batch, score=score: score(batch, args.batch_size, max_length, tokenizer), "peer")
    return engines


def build_ours(args, model_dir: Path, cpu: str) -> dict:
    """critic's backends, after `critic export` has measured them on this CPU (unless it already has); where the
    model has a cascade, each with it (critic's default) and alone."""
    measured = json.loads((model_dir / modeling.META_FILE).read_text()).get("backends") or {}
    if args.export or measured.get("cpu") != cpu:
        export(model_dir, log=lambda line: print(f"  critic export: {line}", flush=True))
    else:
        print(f"  critic export: measured on this CPU on {measured['date']}: {', '.join(measured['ranking'])}")
    engines = {}
    for backend in args.ours:
        classifier = Classifier.load(model_dir, device="cpu", backend=backend, long_reviews="truncate")
        name = f"critic {backend}" + (f" ({classifier.backend})" if backend == "auto" else "")
        if classifier.cheap_stage is not None:
            share = lambda texts, classifier=classifier: float(classifier.cheap_answers(texts)[1].mean())  # noqa: E731
            engines[name + " + cascade"] = Engine(classifier.predict_proba, "critic", share)
            classifier = Classifier.load(
                model_dir, device="cpu", backend=backend, long_reviews="truncate", cascade=False
            )
            name += " alone"
        engines[name] = Engine(classifier.predict_proba, "critic")
    return engines


def measure_interleaved(engines: dict, texts: dict, labels: np.ndarray, rounds: int) -> dict:
    """Each engine's median rate over `rounds` in which every engine scores its texts once, in turn (after a first
    call that pays its one-off costs), its passes, and its accuracy."""
    for engine in engines.values():
        engine.score(texts[engine.reads][:16])
    rates = {name: [] for name in engines}
    probs = {}
    for round_ in range(rounds):
        for name, engine in engines.items():
            started = time.perf_counter()
            probs[name] = engine.score(texts[engine.reads])
            rates[name].append(len(labels) / (time.perf_counter() - started))
        print(f"round {round_ + 1} of {rounds}: " + ", ".join(f"{n} {r[-1]:.1f}" for n, r in rates.items()), flush=True)
    results = {}
    for name, engine in engines.items():
        accuracy = float((probs[name].argmax(1) == labels).mean())
        results[name] = {"reviews_per_s": float(np.median(rates[name])), "passes": rates[name], "accuracy": accuracy}
        line = f"{name:>32}: {results[name]['reviews_per_s']:7.1f} reviews/s (median), accuracy {accuracy:.4f}"
        if engine.cheap_share is not None:
            results[name]["cheap_share"] = engine.cheap_share(texts[engine.reads])
            line += f"; the cheap stage answered {results[name]['cheap_share']:.1%}"
        print(line, flush=True)
    return results


def print_ratios(results: dict) -> dict:
    """critic's automatic choice against the fastest peer and against the pipeline in bf16."""
    ours = next((name for name in results if name.startswith("critic auto")), None)
    fastest = max(
        (n for n in results if not n.startswith("critic")), key=lambda n: results[n]["reviews_per_s"], default=None
    )
    ratios = {}
    for peer in dict.fromkeys(p for p in (fastest, "pipeline-bf16") if p in results and ours):
        ratios[peer] = results[ours]["reviews_per_s"] / results[peer]["reviews_per_s"]
        delta = (results[ours]["accuracy"] - results[peer]["accuracy"]) * 100
        print(
            f"ratio {ours} / {peer}{' (the fastest peer)' if peer == fastest else ''}: {ratios[peer]:.2f}x "
            f"(accuracy {delta:+.2f} points)"
        )
    alone = ours.replace(" + cascade", " alone") if ours else None
    if alone in results:
        ratios["cascade"] = results[ours]["reviews_per_s"] / results[alone]["reviews_per_s"]
        delta = (results[ours]["accuracy"] - results[alone]["accuracy"]) * 100
        print(f"ratio {ours} / {alone}: {ratios['cascade']:.2f}x (accuracy {delta:+.2f} points)")
    return ratios


if __name__ == "__main__":
    main()
