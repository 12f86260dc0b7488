"""Batch scoring on a Ray cluster (Ray Data): the files of a folder, a glob or a URI read with `ray.data.read_*`,
scored by actors that each load the Classifier once (`map_batches` with a callable class), written as Parquet (or
CSV) with the input's columns plus `label` and `p_<label>`. Every input row is accounted for: a row whose text
cannot be scored (empty, not UTF-8) goes to `rejected/` with the reason. Files are scored in groups, each by one
pool of actors, and each finished group is recorded in `_done/`, so a run that is stopped and started again does
not score a finished file twice. Ray owns placement, retries (a lost actor is restarted and its batches run
again) and progress. Imported only for `critic predict --engine ray`; Ray is the optional extra `critic[ray]`."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from critic import data, messages, modeling
from critic.inference.predict import score_columns, stage_names
from critic.safe_csv import safe_frame

READABLE = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
REJECTED_COLUMN = "rejected_reason"
OUTPUT_FORMATS = ("parquet", "csv")
GROUP_FILES = 64
GROUP_BYTES = 1 << 30
SUPERSEDED = "_superseded"  # a group's output moved out of the way when scored again (another model, a changed file)
RUN_FOLDERS = ("scored", "rejected", "_done", SUPERSEDED)


def input_files(inputs: list[str]) -> list[str]:
    """Every file to score, in a stable order: files as given, a folder's readable files, a glob's matches, a URI's
    file or the readable files under it. Local paths are made absolute: a rerun from another folder skips the same
    finished files."""
    files: list[str] = []
    for spec in inputs:
        if "://" in spec:
            files += _uri_files(spec)
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
    return [path if "://" in path else os.path.abspath(path) for path in files]


def _uri_files(uri: str) -> list[str]:
    """A URI naming a readable file, or the readable files under a URI (s3://, gs://, file://, …), listed with
    pyarrow's filesystem for its scheme."""
    if Path(uri.split("?")[0]).suffix.lower() in READABLE:
        return [uri]
    import pyarrow.fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(uri)
    scheme = uri.split("://", 1)[0]
    listed = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(
        f"{scheme}://{info.path}"
        for info in listed
        if info.type == pafs.FileType.File and Path(info.path).suffix.lower() in READABLE
    )


def read(paths: list[str]):
    """The Ray dataset of files of one format, read by one operator (its read tasks run in parallel); text is read
    as bytes where it can be, so that bad bytes reject a row, not the whole file."""
    import pyarrow.csv as pacsv
    import ray.data

    suffix = Path(paths[0].split("?")[0]).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return ray.data.read_csv(
            paths,
            parse_options=pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",", newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(check_utf8=False),
        )
    if suffix in (".jsonl", ".json"):
        return ray.data.read_json(paths, lines=suffix == ".jsonl")
    if suffix == ".parquet":
        return ray.data.read_parquet(paths)
    raise ValueError(f"{paths[0]}: cannot read {suffix or 'a file without a suffix'} (readable: {', '.join(READABLE)})")


class Scorer:
    """One per Ray actor: the Classifier is loaded once, then scores pyarrow batches."""

    def __init__(self, model: str, text_column: str | None, device: str, backend: str, cascade: bool = True):
        from critic.inference.predict import Classifier

        self.classifier = Classifier.load(model, device=device, backend=backend, cascade=cascade)
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
        cheap = np.zeros(len(frame), dtype=bool)
        if good.any():
            probs[good], cheap[good] = self.classifier.answer([t for t, ok in zip(texts, good) if ok])
        # The input's columns, the reason (empty when scored), then the scores, named apart from the input's own
        frame[REJECTED_COLUMN] = [p or "" for p in problems]
        staged = self.classifier.cheap_stage is not None
        taken = [*batch.column_names, REJECTED_COLUMN]
        label_column, *probability_columns = score_columns(labels, taken=taken, stage=staged)
        frame[label_column] = [labels[int(p.argmax())] if ok else None for p, ok in zip(probs, good)]
        for column, values in zip(probability_columns, probs.T):  # zip stops before the stage column
            frame[column] = values
        if staged:
            frame[probability_columns[-1]] = [stage if ok else None for stage, ok in zip(stage_names(cheap), good)]
        frame[key] = [t.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for t in texts]
        return frame


def _accepted(batch: pd.DataFrame) -> pd.DataFrame:
    return batch[batch[REJECTED_COLUMN] == ""].drop(columns=[REJECTED_COLUMN])


def _rejected(batch: pd.DataFrame) -> pd.DataFrame:
    """The rows that could not be scored: the input's columns and the reason (the scores come after it)."""
    return batch[batch[REJECTED_COLUMN] != ""].iloc[:, : list(batch.columns).index(REJECTED_COLUMN) + 1]


def predict_ray(  # noqa: PLR0913 (public: each option a keyword of critic's API and a flag of its verbs)
    model: str | Path,
    inputs: list[str],
    output: str | Path,
    text_column: str | None = None,
    workers: int = 2,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 0,
    batch_size: int = 256,
    address: str | None = None,
    backend: str = "auto",
    output_format: str = "parquet",
    log: Callable[[str], None] | None = None,
    cascade: bool = True,
) -> dict:
    """Score every row of `inputs` on a Ray cluster into OUTPUT/scored/GROUP/ (and OUTPUT/rejected/GROUP/), as
    Parquet or CSV files (`output_format`), and return the counts. Files are scored in groups of the same format
    (up to GROUP_FILES files and GROUP_BYTES of input), each group by one pool of actors, each finished group
    recorded in OUTPUT/_done/. `cascade`: the model's cascade answers where it is sure (where the model has one);
    False: the model alone. `address`: an existing cluster ("auto", "ray://host:10001"); none starts a local
    one."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output format '{output_format}': choose one of {', '.join(OUTPUT_FORMATS)}")
    import ray

    say = log or messages.to_stderr
    output = Path(output)
    _refuse_links(output)
    files = _outside(input_files(inputs), output, say)
    run = _run_record(model, text_column, backend, output_format, cascade)
    finished = _finished_files(output, files, run, say)
    groups = list(_groups([path for path in files if path not in finished]))
    _clear_unfinished(output, [_group_name(group) for group in groups])
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    cpus_per_worker = _cpus_per_worker(ray.cluster_resources().get("CPU", 1), workers, cpus_per_worker, say)
    skipped = [path for path in files if path in finished]
    if skipped:
        say(
            f"{len(skipped)} file(s) scored in an earlier run, skipped: {', '.join(skipped[:3])}"
            + (" …" if len(skipped) > 3 else "")
        )
    summary = {"rows": 0, "rejected": 0, "skipped_files": len(skipped), "groups": 0}
    started = time.perf_counter()
    actors = Actors(
        str(model),
        text_column,
        "cuda" if gpus_per_worker else "cpu",
        backend,
        workers,
        cpus_per_worker,
        gpus_per_worker,
        cascade,
    )
    for group in groups:
        name = _group_name(group)
        counts = _score_group(group, output, name, actors, batch_size, output_format)
        _record_done(output, name, group, run, counts)
        where = group[0] if len(group) == 1 else f"{len(group)} {Path(group[0]).suffix} files from {group[0]}"
        if counts["rejected"]:
            say(f"{where}: {counts['rejected']:,} row(s) rejected (reasons in {output / 'rejected' / name})")
        say(f"{where}: {counts['rows']:,} rows scored into {output / 'scored' / name}")
        summary["rows"] += counts["rows"]
        summary["rejected"] += counts["rejected"]
        summary["groups"] += 1
    summary["seconds"] = time.perf_counter() - started
    return summary


def _refuse_links(output: Path) -> None:
    links = [str(path) for path in (output, *(output / part for part in RUN_FOLDERS)) if path.is_symlink()]
    if links:
        raise ValueError(
            f"{', '.join(links)}: a link; name a plain folder as the output (critic clears what an "
            f"interrupted run left in it)"
        )


def _cpus_per_worker(cpus: float, workers: int, asked: float, say: Callable[[str], None]) -> float:
    if workers * asked <= cpus - 1:
        return asked
    # actors holding every CPU would leave none to read the files
    share = max((cpus - 1) / workers, 0.01)
    say(
        f"{workers} worker(s) on a cluster of {cpus:g} CPUs: {share:.2f} CPU each, so that reading the input "
        f"keeps a share"
    )
    return share


@dataclass(frozen=True)
class Actors:
    """The scoring actors of a run: what each loads, and what each reserves."""

    model: str
    text_column: str | None
    device: str
    backend: str
    workers: int
    cpus: float
    gpus: float
    cascade: bool = True  # the model's cascade, where it has one


def _score_group(
    group: list[str], output: Path, name: str, actors: Actors, batch_size: int, output_format: str
) -> dict:
    """One pool of actors scores the group's files; the output is written, then the group recorded as done."""
    import ray.data

    # One read for the group: its files are read in parallel (a union of one dataset per file reads them one
    # after another: 58 s against 33 s for 10 files of 256 reviews on 2 CPUs). Blocks of a batch let every actor
    # work even on one big file; each block is scored as one batch and keeps its file's columns.
    blocks = read(group).repartition(target_num_rows_per_block=batch_size)
    # A lost actor is restarted and its batches run again (Ray Data's default for actors: max_restarts=-1).
    scored = blocks.map_batches(
        Scorer,
        fn_constructor_args=(actors.model, actors.text_column, actors.device, actors.backend, actors.cascade),
        batch_size=None,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors.workers),
        num_cpus=actors.cpus,
        num_gpus=actors.gpus,
    ).materialize()
    accepted = scored.map_batches(_accepted, batch_format="pandas")
    rejected = scored.map_batches(_rejected, batch_format="pandas")
    counts = {"rows": accepted.count(), "rejected": rejected.count()}
    write(accepted, output / "scored" / name, output_format)
    if counts["rejected"]:
        write(rejected, output / "rejected" / name, output_format)
    return counts


def _record_done(output: Path, name: str, group: list[str], run: dict, counts: dict) -> None:
    """The group recorded as done, with what makes the record valid for a rerun: the run's model and options, and
    each file's size and time (a URI's are not looked up)."""
    done = output / "_done" / f"{name}.json"
    done.parent.mkdir(parents=True, exist_ok=True)
    partial = done.with_suffix(".partial")
    partial.write_text(json.dumps({"files": group, "stats": {p: _file_stat(p) for p in group}, "run": run, **counts}))
    partial.replace(done)  # a record is whole or absent


def _groups(files: list[str]) -> Iterator[list[str]]:
    """Consecutive files of one format, up to GROUP_FILES of them and GROUP_BYTES of input (a URI's size is not
    looked up): a pool of actors starts once per group, not once per file (10 files of 256 reviews on 2 CPUs:
    129 s with a pool per file, 33 s with one)."""
    group: list[str] = []
    size = 0
    for path in files:
        bytes_ = 0 if "://" in path else Path(path).stat().st_size
        if group and (
            Path(path).suffix.lower() != Path(group[0]).suffix.lower()
            or len(group) == GROUP_FILES
            or size + bytes_ > GROUP_BYTES
        ):
            yield group
            group, size = [], 0
        group.append(path)
        size += bytes_
    if group:
        yield group


def _group_name(group: list[str]) -> str:
    """The output folder of a group: its first file's stem, made unique by a hash of all its paths."""
    stem = Path(group[0].split("?")[0]).name.split(".")[0] or "input"
    more = f"-and-{len(group) - 1}-more" if len(group) > 1 else ""
    digest = hashlib.sha256("\n".join(group).encode()).hexdigest()[:8]
    return f"{stem}{more}-{digest}"


def _file_stat(path: str) -> list[int] | None:
    if "://" in path:
        return None
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def _run_record(
    model: str | Path, text_column: str | None, backend: str, output_format: str, cascade_on: bool = True
) -> dict:
    """What must be the same for a file scored by an earlier run to count as finished: the model (its folder and
    its weights' size and time, its cascade's threshold where it is used), the backend, the text column and the
    output format."""
    from critic.inference import cascade

    folder = Path(model)
    where, weights, cheap = str(model), None, None
    if folder.is_dir():  # a hub id is known by its name alone
        stat = modeling.weights_file(folder).stat()
        where, weights = str(folder.resolve()), [stat.st_size, stat.st_mtime_ns]
        cheap = cascade.load_for(folder) if cascade_on else None
    return {
        "model": where,
        "weights": weights,
        **({"cascade": cheap.threshold} if cheap is not None else {}),
        "backend": backend,
        "text_column": text_column,
        "format": output_format,
    }


def _finished_files(output: Path, files: list[str], run: dict, say: Callable[[str], None]) -> set[str]:
    """The files an earlier run scored with this run's model and options, unchanged since. A record of some of
    `files` that no longer holds (one changed, another model or options) is moved with its output to
    OUTPUT/_superseded/, out of the way of the new one; records of other files stay as they are."""
    finished, superseded, wanted = set(), [], set(files)
    for record_path in sorted((output / "_done").glob("*.json")):
        record = json.loads(record_path.read_text())
        if not wanted.intersection(record["files"]):
            continue
        unchanged = all(
            "://" in path or not Path(path).is_file() or record.get("stats", {}).get(path) == _file_stat(path)
            for path in record["files"]
        )
        if record.get("run") == run and unchanged:
            finished.update(record["files"])
        else:
            superseded.append(_supersede(output, record_path))
    if superseded:
        say(
            f"{len(superseded)} group(s) of files scored in an earlier run with another model or options, or "
            f"changed since: scored again; the earlier output is in {output / SUPERSEDED}"
        )
    return finished


def _supersede(output: Path, record_path: Path) -> str:
    """A group's record and output moved to OUTPUT/_superseded/ under a name of their own."""
    name = f"{record_path.stem}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    for part in ("scored", "rejected"):
        folder = output / part / record_path.stem
        if folder.is_dir() and not folder.is_symlink():
            (output / SUPERSEDED / part).mkdir(parents=True, exist_ok=True)
            folder.rename(output / SUPERSEDED / part / name)
    (output / SUPERSEDED / "_done").mkdir(parents=True, exist_ok=True)
    record_path.rename(output / SUPERSEDED / "_done" / f"{name}.json")
    return name


def _outside(files: list[str], output: Path, say: Callable[[str], None]) -> list[str]:
    """The inputs, less any file under the output folder (an output inside an input folder was read as input on
    the next run)."""
    inside = output.resolve()
    kept = [path for path in files if "://" in path or not Path(path).resolve().is_relative_to(inside)]
    if len(kept) < len(files):
        say(f"{len(files) - len(kept)} file(s) under the output folder {output} left out of the input")
    return kept


def _clear_unfinished(output: Path, names: list[str]) -> None:
    """What an interrupted run of the same groups left: their output folders, never recorded as done. Nothing
    else in OUTPUT is touched."""
    for part in ("scored", "rejected"):
        for name in names:
            folder = output / part / name
            if folder.is_dir() and not folder.is_symlink() and not (output / "_done" / f"{name}.json").is_file():
                shutil.rmtree(folder)


def write(dataset, folder: Path, output_format: str) -> None:
    """Ray writes one file per block into `folder`: Parquet, or CSV with a header in each file."""
    if output_format == "csv":
        dataset.map_batches(safe_frame, batch_format="pandas").write_csv(str(folder))
    else:
        dataset.write_parquet(str(folder))
