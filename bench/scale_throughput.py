"""Rows per second of `critic predict --file` against `critic predict --engine ray` with 1 and 2 workers, on the
same real IMDB reviews in one Parquet file, each command timed from start to end as a user runs it (a fresh local
Ray cluster per Ray run). The fixed cost of a Ray run (cluster start, actors, the model loaded in each) is
measured on one batch of reviews; the rest is the scoring rate.

    python bench/scale_throughput.py runs/minilm-imdb [--rows 20000] [--workers 1 2] [--files 20]

With --files N the same reviews are also cut into N Parquet files and scored with the most workers: a folder of
many files is scored by one pool of actors per group of files, not one per file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from critic import data  # noqa: E402
from critic.inference.backends import cpu_name as cpu_model  # noqa: E402

BATCH = 256  # rows per batch handed to a Ray actor (critic's default)


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def critic_predict(model: str, source: Path, output: Path, backend: str) -> float:
    return timed(
        [
            sys.executable,
            "-m",
            "critic.cli",
            "predict",
            model,
            "--file",
            str(source),
            "--output",
            str(output),
            "--backend",
            backend,
            "--overwrite",
        ]
    )


def critic_predict_ray(model: str, source: Path, output: Path, backend: str, workers: int) -> float:
    shutil.rmtree(output, ignore_errors=True)  # a fresh run, not one that skips a finished file
    return timed(
        [
            sys.executable,
            "-m",
            "critic.cli",
            "predict",
            model,
            "--engine",
            "ray",
            "--file",
            str(source),
            "--output",
            str(output),
            "--backend",
            backend,
            "--workers",
            str(workers),
            "--ray-batch-size",
            str(BATCH),
        ]
    )


def parity(source: Path, local: Path, ray_output: Path) -> str:
    """How Ray's scores compare with critic predict's on the same rows (every id present once, or it fails)."""
    import pandas as pd
    import pyarrow.parquet as pq

    expected = pd.read_parquet(local).set_index("id")
    got = pd.concat([pd.read_parquet(p) for p in sorted((ray_output / "scored").rglob("*.parquet"))])
    if sorted(got["id"]) != sorted(expected.index):
        raise SystemExit(f"Ray scored {len(got):,} rows with {got['id'].nunique():,} ids; expected {len(expected):,}")
    got = got.set_index("id").loc[expected.index]
    # What critic added to the input's columns: the predicted label, then one probability per class (named apart
    # from the input's own `label`, the truth)
    predicted, *columns = [c for c in expected.columns if c not in pq.read_schema(source).names]
    gap = (got[columns] - expected[columns]).abs().to_numpy().max()
    agree = (got[predicted].to_numpy() == expected[predicted].to_numpy()).mean()
    return f"every row once, labels agree on {agree:.2%}, largest probability difference {gap:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--files", type=int, default=0, help="also score the reviews cut into this many files")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    reviews = data.read_table(data.sources.fetch(data.catalogue.IMDB).path / data.catalogue.IMDB_CSV)[0]
    reviews.insert(0, "id", range(len(reviews)))
    source, small = folder / "reviews.parquet", folder / "one-batch.parquet"
    reviews.head(args.rows).to_parquet(source)
    reviews.head(BATCH).to_parquet(small)
    print(f"{args.rows:,} IMDB reviews, {os.cpu_count()} CPUs: {cpu_model()}, {date.today()}", flush=True)

    local_fixed = critic_predict(args.model, small, folder / "local-small.parquet", args.backend)
    local = critic_predict(args.model, source, folder / "local.parquet", args.backend)
    print(
        f"critic predict --file: {local:.1f} s, {args.rows / local:.1f} rows/s; one batch ({BATCH} rows) takes "
        f"{local_fixed:.1f} s end to end",
        flush=True,
    )
    results = {}
    for workers in args.workers:
        fixed = critic_predict_ray(args.model, small, folder / "ray-small", args.backend, workers)
        total = critic_predict_ray(args.model, source, folder / "ray", args.backend, workers)
        results[workers] = (total, fixed)
        print(
            f"--engine ray, {workers} worker(s): {total:.1f} s, {args.rows / total:.1f} rows/s; one batch "
            f"({BATCH} rows) takes {fixed:.1f} s end to end; "
            f"{parity(source, folder / 'local.parquet', folder / 'ray')}",
            flush=True,
        )

    if args.files:
        many = folder / "many"
        many.mkdir()
        size = -(-args.rows // args.files)
        for k in range(args.files):
            reviews.iloc[k * size : min((k + 1) * size, args.rows)].to_parquet(many / f"part-{k:03d}.parquet")
        workers = max(args.workers)
        total = critic_predict_ray(args.model, many, folder / "ray-many", args.backend, workers)
        print(
            f"--engine ray, {workers} worker(s), the same reviews in {args.files} files: {total:.1f} s, "
            f"{args.rows / total:.1f} rows/s",
            flush=True,
        )

    print("\nratio to critic predict --file (whole command; > 1 is faster):")
    print(
        f"  local: without the fixed cost ({local_fixed:.1f} s): "
        f"{(args.rows - BATCH) / max(local - local_fixed, 1e-9):.1f} rows/s"
    )
    for workers, (total, fixed) in results.items():
        scoring = max(total - fixed, 1e-9)
        print(
            f"  ray x{workers}: {local / total:.2f}x; without the fixed cost ({fixed:.1f} s): "
            f"{(args.rows - BATCH) / scoring:.1f} rows/s"
        )
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
