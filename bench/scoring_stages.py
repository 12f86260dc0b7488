"""Where scoring's time goes: each stage's rate on the same IMDB test reviews, the slowest named (cleaning,
tokenization and the ids' arrays, in the model's process and in 1, 2, ... encoder worker processes; framing and
padding; the copy to a GPU; the model), then scoring whole with and without the workers. The GPU suite's scoring
step prints the same on a card.

    python bench/scoring_stages.py runs/minilm-imdb                        # 4,000 reviews at 256 tokens, the CPU
    python bench/scoring_stages.py runs/minilm-imdb --device cuda --reviews 50000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchlib import stages  # noqa: E402

from critic import data  # noqa: E402
from critic.inference import encoding  # noqa: E402
from critic.inference.backends import cpu_name  # noqa: E402
from critic.inference.predict import Classifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a critic model folder")
    parser.add_argument("--reviews", type=int, default=4000)
    parser.add_argument("--max-length", type=int, default=256, help="the window (the first tokens kept)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None, help="most encoder worker processes (default: cores)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    texts = data.load_dataset("imdb", split="test", size=args.reviews, seed=0)["text"].tolist()
    clf = Classifier.load(args.model, device=args.device, backend="torch", long_reviews="truncate", encoder_workers=0)
    clf.truncation = dataclasses.replace(clf.truncation, max_length=args.max_length, strategy="head")
    workers = encoding.usable_cores() if args.workers is None else args.workers
    figures = stages.measure(clf, texts, workers)
    machine = {
        "cpu": cpu_name(),
        "cores": encoding.usable_cores(),
        "device": str(clf.device),
        "date": str(date.today()),
    }
    print(f"{len(texts):,} IMDB reviews, {args.max_length} tokens, {clf.precision}; {machine}")
    print("\n".join(stages.lines(figures)))
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine, "reviews": len(texts), **figures}, indent=2))


if __name__ == "__main__":
    main()
