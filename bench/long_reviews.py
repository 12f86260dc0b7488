"""Reviews longer than the window: which strategy scores them best? On the IMDB test split, with one fine-tuned
model: truncation (head, tail, head+tail) and sliding windows pooled three ways (mean of probabilities, mean of
logits, most confident window). Accuracy overall, for reviews longer than the window, and longer than 512 tokens.

    python bench/long_reviews.py runs/minilm-imdb [--size N] [--backend onnx-int8]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from critic import data, modeling  # noqa: E402
from critic.inference.predict import Classifier, pool_windows  # noqa: E402
from critic.text import POOLS, frame_windows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--size", type=int, help="a seeded subset of the test split (default: all of it)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--stride", type=int, help="window stride (default: half a window)")
    args = parser.parse_args()

    frame = data.load_dataset("imdb", split="test", size=args.size, seed=0)
    labels = frame["label"].to_numpy()
    clf = Classifier.load(args.model, backend=args.backend)
    tokens = clf.encode(frame["text"].tolist())
    lengths = tokens.lengths + clf.encoder.specials
    window = clf.truncation.max_length
    groups = {"all": np.ones(len(labels), bool), f"> {window} tokens": lengths > window, "> 512 tokens": lengths > 512}
    print(
        f"{len(labels)} IMDB test reviews; model window {window} tokens ({clf.truncation.strategy}, head "
        f"{clf.truncation.head}); backend {clf.backend}; "
        + ", ".join(f"{name}: {mask.sum()}" for name, mask in groups.items() if name != "all"),
        flush=True,
    )

    results = {}
    for strategy, head in (("head", 0), ("tail", 0), ("head+tail", window // 4)):
        clf.truncation = dataclasses.replace(clf.truncation, strategy=strategy, head=head)
        started = time.perf_counter()
        probs = clf.proba_from_tokens(tokens)
        results[f"truncate {strategy}" + (f" ({head}+{window - head - clf.encoder.specials})" if head else "")] = (
            probs,
            time.perf_counter() - started,
        )
    budget = window - clf.encoder.specials
    stride = args.stride or budget // 2
    started = time.perf_counter()
    inputs, owners = frame_windows(clf.encoder, tokens, window, stride)
    window_logits = modeling.logits(
        clf.forward, inputs, clf.encoder.pad_id, len(clf.labels), clf.max_tokens, pad_multiple=clf.pad_multiple
    )
    seconds = time.perf_counter() - started
    for pool in POOLS:
        results[f"windows {pool} (stride {stride})"] = (pool_windows(window_logits, owners, len(labels), pool), seconds)

    header = "".join(f"{name:>18}" for name in groups)
    print(f"\n{'strategy':38}{header}{'seconds':>10}")
    for name, (probs, seconds) in results.items():
        correct = probs.argmax(1) == labels
        print(f"{name:38}" + "".join(f"{correct[mask].mean():18.4f}" for mask in groups.values()) + f"{seconds:10.1f}")


if __name__ == "__main__":
    main()
