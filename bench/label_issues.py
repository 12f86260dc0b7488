"""Labels that look wrong: how many of the labels flipped on purpose does `critic profile --label-issues` find?

IMDB's training split (critic's split), a seeded share of its labels flipped; the flags of critic.data.label_issues
(TF-IDF + logistic regression out of fold, cleanlab's confident learning) against the flips: precision, recall and
seconds, beside the plain rule a user would try first (flag every row the out-of-fold prediction disagrees with).

    python bench/label_issues.py [--size N] [--share 0.05] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from critic import data  # noqa: E402
from critic.data import label_issues  # noqa: E402
from critic.inference.backends import cpu_name  # noqa: E402


def scored(flagged: set[int], flipped: set[int]) -> dict:
    caught = len(flagged & flipped)
    return {"flagged": len(flagged), "precision": caught / max(len(flagged), 1), "recall": caught / len(flipped)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, help="a seeded subset of the training split (default: all of it)")
    parser.add_argument("--share", type=float, default=0.05, help="share of labels flipped (default 5%%)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    frame = data.load_dataset("imdb", split="train", size=args.size, seed=0)
    labels = frame["label"].to_numpy().copy()
    rng = np.random.default_rng(args.seed)
    flipped = rng.choice(len(labels), size=max(1, int(len(labels) * args.share)), replace=False)
    labels[flipped] = 1 - labels[flipped]
    texts = frame["text"].tolist()

    started = time.perf_counter()  # what label_issues.find does, its probabilities kept for the plain rule
    probs = label_issues.out_of_fold_probabilities(texts, labels)
    found = label_issues.flag(labels, probs, ("negative", "positive"))
    seconds = time.perf_counter() - started
    disagreeing = set(np.flatnonzero(probs.argmax(1) != labels).tolist())
    results = {
        "cpu": cpu_name(),
        "date": str(date.today()),
        "reviews": len(labels),
        "flipped": len(flipped),
        "critic (cleanlab)": {**scored(set(found["row"].tolist()), set(flipped.tolist())), "seconds": seconds},
        "out-of-fold prediction disagrees": scored(disagreeing, set(flipped.tolist())),
    }
    for name in ("critic (cleanlab)", "out-of-fold prediction disagrees"):
        r = results[name]
        print(f"{name:>34}: {r['flagged']:6,} flagged, precision {r['precision']:.3f}, recall {r['recall']:.3f}")
    print(f"{len(labels):,} reviews, {len(flipped):,} labels flipped; critic took {seconds:.1f} s on {cpu_name()}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
