"""Where critic's CPU inference speed comes from: the same model, reviews and batches, scored three ways in one run.

1. fp32 weights under bf16 autocast, PyTorch's fused attention (scaled_dot_product_attention): critic before
2. bf16 weights (cast once), PyTorch's fused attention
3. bf16 weights, critic's row-wise attention (each review over its own tokens): what critic does now

  python bench/cpu_attention.py runs/minilm-imdb [--reviews 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from critic import data, modeling  # noqa: E402
from critic.inference.predict import Classifier  # noqa: E402
from critic.text import frame_all  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a fine-tuned critic model folder")
    parser.add_argument("--reviews", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="each variant scores the reviews this often, in turn")
    args = parser.parse_args()

    clf = Classifier.load(args.model, device="cpu", backend="torch", precision="fp32", long_reviews="truncate")
    texts = data.load_dataset("imdb", split="test", size=args.reviews, seed=0)["text"].tolist()
    truncation = dataclasses.replace(clf.truncation, strategy="head")
    inputs = frame_all(clf.encoder, clf.encode(texts), truncation)
    print(
        f"{len(texts)} IMDB test reviews, first {truncation.max_length} tokens (mean {inputs.lengths.mean():.0f}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )

    fused = copy.deepcopy(clf.model).to(torch.bfloat16)
    rowwise, _ = modeling.inference_model(clf.model, "bf16", clf.device)
    variants = {
        "fp32 weights, bf16 autocast, fused attention": modeling.torch_forward(clf.model, clf.device, "bf16"),
        "bf16 weights, fused attention": modeling.torch_forward(fused, clf.device, "fp32"),
        "bf16 weights, row-wise attention (critic)": modeling.torch_forward(rowwise, clf.device, "fp32"),
    }
    seconds = {name: [] for name in variants}
    logits = {}
    warm_up = frame_all(clf.encoder, clf.encode(texts[:32]), truncation)
    for forward in variants.values():
        modeling.logits(forward, warm_up, clf.encoder.pad_id, len(clf.labels), clf.max_tokens)
    for _ in range(args.repeats):
        for name, forward in variants.items():
            start = time.perf_counter()
            logits[name] = modeling.logits(forward, inputs, clf.encoder.pad_id, len(clf.labels), clf.max_tokens)
            seconds[name].append(time.perf_counter() - start)

    first = next(iter(variants))
    print(f"\n{'':48}{'reviews/s (best, median)':>26}{'max |dp| vs first':>19}")
    for name in variants:
        best, median = len(texts) / min(seconds[name]), len(texts) / float(np.median(seconds[name]))
        difference = np.abs(modeling.softmax(logits[name]) - modeling.softmax(logits[first])).max()
        print(f"{name:48}{best:14.1f}{median:12.1f}{difference:19.2e}")
    print(f"\nratio critic / first: {min(seconds[first]) / min(seconds[name]):.2f}x (best of {args.repeats})")


if __name__ == "__main__":
    main()
