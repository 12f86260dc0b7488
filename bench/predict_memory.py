"""Memory while scoring a big file: `critic predict --file` on all 50,000 IMDB reviews, RSS sampled from /proc
while it runs. Streaming keeps it flat: the peak after the first 5,000 reviews should be close to the final peak.

    python bench/predict_memory.py runs/minilm-imdb [--backend onnx-int8] [--rows 50000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from critic import data  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rows_done(sidecar: Path) -> int:
    import json

    try:
        return json.loads(sidecar.read_text())["rows"]
    except (OSError, ValueError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    source, target = folder / "reviews.csv", folder / "scored.csv"
    reviews = data.read_table(data.sources.fetch(data.catalogue.IMDB).path / data.catalogue.IMDB_CSV)[0]
    reviews = reviews.head(args.rows)  # every review of the file, duplicates included, as a user would have it
    reviews.to_csv(source, index=False)
    sidecar = target.with_name(target.name + ".progress.json")
    command = [
        sys.executable,
        "-m",
        "critic.cli",
        "predict",
        args.model,
        "--file",
        str(source),
        "--output",
        str(target),
        "--backend",
        args.backend,
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []  # (rows done, rss MiB)
    while process.poll() is None:
        samples.append((rows_done(sidecar), rss_mib(process.pid)))
        time.sleep(0.5)
    seconds = time.perf_counter() - started
    assert process.returncode == 0, f"critic predict failed with {process.returncode}"
    import pandas as pd

    written = len(pd.read_csv(target))
    early = max((rss for done, rss in samples if done <= 5000), default=0.0)
    peak = max(rss for _, rss in samples)
    print(f"scored {len(reviews):,} reviews from {source.name} in {seconds:.0f} s ({len(reviews) / seconds:.1f}/s)")
    print(
        f"peak RSS up to 5,000 reviews: {early:.0f} MiB; peak over all {len(reviews):,}: {peak:.0f} MiB "
        f"(growth {peak - early:+.0f} MiB)"
    )
    for fraction in (0.1, 0.25, 0.5, 0.75, 1.0):
        done, rss = min(samples, key=lambda s: abs(s[0] - fraction * len(reviews)))
        print(f"  after {done:>6,} reviews: {rss:6.0f} MiB")
    print(f"rows in {target.name}: {written:,}")


if __name__ == "__main__":
    main()
