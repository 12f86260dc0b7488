"""Batch scoring on a Ray cluster (Ray Data): the files of a folder, a glob or a URI read with `ray.data.read_*`,
scored by actors that each load the Classifier once (`map_batches` with a callable class), written as Parquet
with the input's columns plus `label` and `p_<label>`. Every input row is accounted for: a row whose text cannot
be scored (empty, not UTF-8) goes to `rejected/` with the reason. Files are done one after another, each finished
file recorded in `_done/`, so a run that is stopped and started again does not score a finished file twice. Ray
owns placement, retries (a lost actor is restarted and its batches run again) and progress. Imported only for
`critic predict --engine ray`; Ray is the optional extra `critic[ray]`."""

from __future__ import annotations

import glob
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from critic import data
from critic.predict import score_columns

READABLE = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
REJECTED_COLUMN = "rejected_reason"


def input_files(inputs: list[str]) -> list[str]:
    """Every file to score, in a stable order: files as given, a folder's readable files, a glob's matches; a URI
    (s3://, gs://, …) is passed to Ray as it is."""
    files: list[str] = []
    for spec in inputs:
        if "://" in spec:
            files.append(spec)
        elif Path(spec).is_dir():
            files += sorted(str(p) for p in Path(spec).rglob("*") if p.suffix.lower() in READABLE)
        elif any(ch in spec for ch in "*?["):
            files += sorted(p for p in glob.glob(spec, recursive=True) if Path(p).suffix.lower() in READABLE)
        elif Path(spec).is_file():
            files.append(spec)
        else:
            raise FileNotFoundError(f"{spec}: no such file, folder or glob match")
    if not files:
        raise FileNotFoundError(f"nothing to score in {', '.join(inputs)} (readable: {', '.join(READABLE)})")
    return files


def read(path: str):
    """The Ray dataset of one file; text is read as bytes where it can be, so that bad bytes reject a row, not the
    whole file."""
    import pyarrow.csv as pacsv
    import ray.data

    suffix = Path(path.split("?")[0]).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return ray.data.read_csv(path, parse_options=pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",",
                                                                        newlines_in_values=True),
                                 convert_options=pacsv.ConvertOptions(check_utf8=False))
    if suffix in (".jsonl", ".json"):
        return ray.data.read_json(path, lines=suffix == ".jsonl")
    if suffix == ".parquet":
        return ray.data.read_parquet(path)
    raise ValueError(f"{path}: cannot read {suffix or 'a file without a suffix'} (readable: {', '.join(READABLE)})")


class Scorer:
    """One per Ray actor: the Classifier is loaded once, then scores pyarrow batches."""

    def __init__(self, model: str, text_column: str | None, device: str, backend: str):
        from critic.predict import Classifier

        self.classifier = Classifier.load(model, device=device, backend=backend)
        self.text_column = text_column

    def __call__(self, batch) -> pd.DataFrame:
        import pyarrow as pa

        key = data.pick_column(batch.column_names, self.text_column, data.TEXT_COLUMNS, "text", "input")
        raw = batch.column(key)
        if pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type):
            raw = raw.cast(pa.large_binary())  # bytes as they are: a bad byte rejects its row, not the file
        texts = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for v in raw.to_pylist()]
        frame = batch.drop_columns([key]).to_pandas()
        frame.insert(batch.column_names.index(key), key, pd.Series(texts, dtype=object))  # may hold bad bytes
        problems = [data.text_problem(text) for text in texts]
        good = np.array([p is None for p in problems])
        labels = self.classifier.labels
        probs = np.full((len(frame), len(labels)), np.nan)
        if good.any():
            probs[good] = self.classifier.predict_proba([t for t, ok in zip(texts, good) if ok])
        frame["label"] = [labels[int(p.argmax())] if ok else None for p, ok in zip(probs, good)]
        for column, values in zip(score_columns(labels)[1:], probs.T):  # [0] is "label"
            frame[column] = values
        frame[REJECTED_COLUMN] = [p or "" for p in problems]
        frame[key] = [t.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for t in texts]
        return frame


def _accepted(batch: pd.DataFrame) -> pd.DataFrame:
    return batch[batch[REJECTED_COLUMN] == ""].drop(columns=[REJECTED_COLUMN])


def _rejected(batch: pd.DataFrame) -> pd.DataFrame:
    return batch[batch[REJECTED_COLUMN] != ""].drop(columns=["label", *[c for c in batch.columns
                                                                        if c.startswith("p_")]])


def predict_ray(model: str | Path, inputs: list[str], output: str | Path, text_column: str | None = None,
                workers: int = 2, cpus_per_worker: float = 1, gpus_per_worker: float = 0, batch_size: int = 256,
                address: str | None = None, backend: str = "auto",
                log: Callable[[str], None] | None = None) -> dict:
    """Score every row of `inputs` on a Ray cluster into OUTPUT/scored/NAME/ (and OUTPUT/rejected/NAME/); returns
    the counts per file. `address`: an existing cluster ("auto", "ray://host:10001"); none starts a local one."""
    import ray
    import ray.data

    say = log or (lambda line: print(f"critic: {line}", file=sys.stderr))
    output = Path(output)
    files = input_files(inputs)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    device = "cuda" if gpus_per_worker else "cpu"
    cpus = ray.cluster_resources().get("CPU", 1)
    if workers * cpus_per_worker > cpus - 1:  # actors holding every CPU would leave none to read the files
        cpus_per_worker = max((cpus - 1) / workers, 0.01)
        say(f"{workers} worker(s) on a cluster of {cpus:g} CPUs: {cpus_per_worker:.2f} CPU each, so that reading "
            f"the input keeps a share")
    summary = {"files": {}, "rows": 0, "rejected": 0, "skipped_files": 0}
    started = time.perf_counter()
    for path in files:
        name = _output_name(path)
        done = output / "_done" / f"{name}.json"
        if done.is_file():
            record = json.loads(done.read_text())
            summary["skipped_files"] += 1
            say(f"{path}: scored in an earlier run ({record['rows']:,} rows), skipped")
            summary["files"][path] = record
            continue
        for part in ("scored", "rejected"):  # what an interrupted run left of this file
            shutil.rmtree(output / part / name, ignore_errors=True)
        scored = read(path).map_batches(
            Scorer, fn_constructor_args=(str(model), text_column, device, backend), batch_size=batch_size,
            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker, max_restarts=-1, max_task_retries=-1).materialize()
        accepted = scored.map_batches(_accepted, batch_format="pandas")
        rejected = scored.map_batches(_rejected, batch_format="pandas")
        counts = {"rows": accepted.count(), "rejected": rejected.count()}
        accepted.write_parquet(str(output / "scored" / name))
        if counts["rejected"]:
            rejected.write_parquet(str(output / "rejected" / name))
            say(f"{path}: {counts['rejected']:,} row(s) rejected (reasons in {output / 'rejected' / name})")
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps({"source": path, **counts}))
        summary["files"][path] = counts
        summary["rows"] += counts["rows"]
        summary["rejected"] += counts["rejected"]
        say(f"{path}: {counts['rows']:,} rows scored into {output / 'scored' / name}")
    summary["seconds"] = time.perf_counter() - started
    return summary


def _output_name(path: str) -> str:
    """A folder name per input file: its stem, made unique by a hash of the whole path."""
    stem = Path(path.split("?")[0]).name.split(".")[0] or "input"
    return f"{stem}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"
