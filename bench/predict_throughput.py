"""Inference throughput: critic's backends vs `transformers.pipeline("text-classification")`, in one run, on the
same fine-tuned model, the same IMDB test reviews and the same truncation (the first MAX_LENGTH tokens, as the
pipeline cuts). The pipeline runs in fp32 and, where the chip has bf16, in bf16; ratios are taken against the
faster of the two (the peer at its best). Reports reviews/s (tokenization included) and accuracy for each.

    python bench/predict_throughput.py runs/minilm-imdb                 # 2,000 reviews, every CPU backend
    python bench/predict_throughput.py runs/minilm-imdb --reviews 20000 --device cuda   # a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from critic import data  # noqa: E402
from critic.inference.backends import engine_path  # noqa: E402
from critic.inference.export import export  # noqa: E402
from critic.inference.predict import Classifier  # noqa: E402


def run_pipeline(
    model_dir: Path, texts: list[str], max_length: int, batch_size: int, device: str, dtype: torch.dtype = torch.float32
) -> np.ndarray:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(model_dir), device=device, top_k=None, dtype=dtype)
    out = classify(texts, batch_size=batch_size, truncation=True, max_length=max_length)
    return np.array(
        [
            [next(s["score"] for s in scores if s["label"] == label) for label in ("negative", "positive")]
            for scores in out
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a fine-tuned critic model folder")
    parser.add_argument("--reviews", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pipeline-batch-size", type=int, default=32)
    parser.add_argument("--backends", nargs="*", default=None, help="default: torch onnx onnx-int8 on the CPU")
    args = parser.parse_args()
    model_dir = Path(args.model)
    backends = args.backends or (["torch", "onnx", "onnx-int8"] if args.device == "cpu" else ["torch"])
    if any(b.startswith("onnx") for b in backends) and not engine_path(model_dir, "onnx-int8").is_file():
        export(model_dir, ["onnx", "onnx-int8"], log=print)

    frame = data.load_dataset("imdb", split="test", size=args.reviews, seed=0)
    texts, labels = frame["text"].tolist(), frame["label"].to_numpy()
    # The pipeline applies no cleaning: give both the same cleaned texts, so they read the same tokens.
    probe = Classifier.load(model_dir, backend="torch", device=args.device)
    cleaned = [data.cleaner(probe.cleaning)(t) for t in texts]
    max_length = probe.truncation.max_length
    print(
        f"{len(texts)} IMDB test reviews, window {max_length} tokens (head), device {args.device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )

    from critic.modeling import cpu_has_bf16

    bf16 = args.device != "cpu" or cpu_has_bf16()
    results = {}
    # The peer at each precision it offers here; ratios are taken against the fastest (its best setting).
    for name, dtype in [("fp32", torch.float32)] + ([("bf16", torch.bfloat16)] if bf16 else []):
        start = time.perf_counter()
        probs = run_pipeline(model_dir, cleaned, max_length, args.pipeline_batch_size, args.device, dtype)
        results[f"transformers.pipeline {name}"] = (len(texts) / (time.perf_counter() - start), probs)
    peer = max((n for n in results), key=lambda n: results[n][0])
    variants = [(b, "fp32", False) for b in backends]
    if "torch" in backends and bf16:
        variants += [("torch", "bf16", False), ("torch", "bf16", True)]
    for backend, precision, compiled in variants:
        clf = Classifier.load(
            model_dir,
            device=args.device,
            backend=backend,
            precision=precision,
            long_reviews="truncate",
            compile=compiled,
        )
        clf.truncation = dataclasses.replace(clf.truncation, strategy="head")
        clf.cleaning = "none"  # already cleaned above
        warm = time.perf_counter()
        clf.predict_proba(cleaned[:64])  # warm-up (compilation, for the compiled model)
        warm = time.perf_counter() - warm
        start = time.perf_counter()
        probs = clf.predict_proba(cleaned)
        name = (
            f"critic {backend}"
            + (f" {precision}" if backend == "torch" else "")
            + (f" compiled ({warm:.0f} s once)" if compiled else "")
        )
        results[name] = (len(texts) / (time.perf_counter() - start), probs)

    reference = results["transformers.pipeline fp32"]
    print(f"\n{'':32}{'reviews/s':>10}{'accuracy':>10}{'max |dp| vs pipeline fp32':>27}")
    for name, (speed, probs) in results.items():
        accuracy = (probs.argmax(1) == labels).mean()
        print(f"{name:32}{speed:10.1f}{accuracy:10.4f}{np.abs(probs - reference[1]).max():27.2e}")
    print(f"\nthe peer at its best here: {peer}")
    for name, (speed, probs) in results.items():
        if not name.startswith("transformers.pipeline"):
            delta = ((probs.argmax(1) == labels).mean() - (results[peer][1].argmax(1) == labels).mean()) * 100
            print(f"ratio {name} / {peer}: {speed / results[peer][0]:.2f}x (accuracy {delta:+.2f} points)")


if __name__ == "__main__":
    main()
