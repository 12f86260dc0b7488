"""Streaming, resumable scoring of files: CSV/TSV, JSONL, Parquet or plain text in, the same rows with `label` and
`p_<label>` columns out, chunk by chunk, the next chunk tokenized while the model scores this one."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Iterator

from critic import data
from critic.predict import Classifier, add_scores
from critic.text import Ragged


PLAIN_TEXT = (".txt", ".text")  # one review per line, no columns


def read_rows(path: Path, chunk: int = 1024) -> Iterator[tuple[int, list[dict]]]:
    """(first line or row number, rows) chunks of a CSV/TSV, JSONL, Parquet or plain-text file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        first = 1
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk):
            rows = batch.to_pylist()
            yield first, rows
            first += len(rows)
        return
    if suffix in PLAIN_TEXT:
        records = _review_lines(path)
    else:
        records = data.records(path)
    rows, first = [], None
    for line, record in records:
        first = first or line
        rows.append(record)
        if len(rows) == chunk:
            yield first, rows
            rows, first = [], None
    if rows:
        yield first, rows


def _review_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """A plain-text file: one review per non-blank line."""
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, {"text": line.rstrip("\n")}


class Writer:
    """Appends scored rows to CSV, TSV or JSONL files, or writes Parquet parts; `position()` is what a resume needs."""

    def __init__(self, path: Path, resume_bytes: int | None = None):
        self.path = path
        self.suffix = path.suffix.lower()
        if self.suffix not in (".csv", ".tsv", ".jsonl", ".parquet"):
            raise ValueError(f"{path}: unknown output format; use .csv, .tsv, .jsonl or .parquet")
        self.parts = path.with_name(path.name + ".parts")
        self.handle = None
        self.fields = None
        if self.suffix == ".parquet":
            self.parts.mkdir(exist_ok=True)
        elif resume_bytes is not None:
            with open(path, "r+b") as f:  # drop whatever was written after the last recorded chunk
                f.truncate(resume_bytes)
            self.handle = open(path, "a", encoding="utf-8", newline="")
            if self.suffix != ".jsonl":
                with open(path, encoding="utf-8", newline="") as f:
                    self.fields = next(csv.reader(f, delimiter=self._delimiter))

    @property
    def _delimiter(self) -> str:
        return "\t" if self.suffix == ".tsv" else ","

    def write(self, rows: list[dict], part: int) -> None:
        if self.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), self.parts / f"part-{part:06d}.parquet")
            return
        if self.handle is None:
            self.handle = open(self.path, "w", encoding="utf-8", newline="")
        if self.suffix == ".jsonl":
            self.handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        else:
            if self.fields is None:
                self.fields = list(rows[0])
                csv.writer(self.handle, delimiter=self._delimiter).writerow(self.fields)
            csv.DictWriter(self.handle, fieldnames=self.fields, delimiter=self._delimiter,
                           extrasaction="ignore").writerows(rows)
        self.handle.flush()

    def position(self) -> int:
        return self.handle.tell() if self.handle is not None else 0

    def finish(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.suffix == ".parquet":
            import pyarrow.parquet as pq

            parts = sorted(self.parts.glob("part-*.parquet"))
            if parts:
                tables = [pq.read_table(p) for p in parts]
                with pq.ParquetWriter(self.path, tables[0].schema) as writer:
                    for table in tables:
                        writer.write_table(table)
            for p in parts:
                p.unlink()
            self.parts.rmdir()


def predict_file(classifier: Classifier, source: Path, target: Path, text_column: str | None = None,
                 chunk: int = 1024, progress: bool = True, overwrite: bool = False) -> int:
    """Score every row of `source` into `target`: the input's columns plus `label` and `p_<label>` columns.

    Streams chunk by chunk, tokenizing the next chunk while the model scores this one. After each chunk the
    position is recorded in TARGET.progress.json, so an interrupted run continues where it stopped when started
    again; the file is removed when the run completes. Returns the number of rows in `target`.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    source, target = Path(source), Path(target)
    sidecar = target.with_name(target.name + ".progress.json")
    done, resume_bytes = _resume_point(source, target, sidecar, overwrite)
    writer = Writer(target, resume_bytes if done else None)
    bar = tqdm(total=_count_rows(source), initial=done, unit="review", desc="scoring", disable=not progress,
               file=sys.stderr, mininterval=1.0)
    key = None
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            for first, rows in _rows_after(read_rows(source, chunk), done):
                key = key or data.pick_column(list(rows[0]), text_column, data.TEXT_COLUMNS, "text", source)
                job = (rows, pool.submit(_checked_tokens, classifier, rows, key, source, first))
                if pending is not None:
                    done = _score_chunk(classifier, *pending, writer, done, bar, sidecar, source)
                pending = job
            if pending is not None:
                done = _score_chunk(classifier, *pending, writer, done, bar, sidecar, source)
        writer.finish()
        sidecar.unlink(missing_ok=True)
    finally:
        bar.close()
        if writer.handle is not None:
            writer.handle.close()
    return done


def _resume_point(source: Path, target: Path, sidecar: Path, overwrite: bool) -> tuple[int, int | None]:
    """Rows already scored and the output's byte length then, from an interrupted run's sidecar; (0, None) fresh."""
    if sidecar.is_file() and not overwrite:
        state = json.loads(sidecar.read_text())
        if state["source"] != str(source.resolve()):
            raise ValueError(f"{sidecar} belongs to another input ({state['source']}); pass --overwrite to start over")
        return state["rows"], state["bytes"]
    if target.exists() and not overwrite:
        raise ValueError(f"{target} already exists and is complete; pass --overwrite to score again")
    return 0, None


def _rows_after(chunks: Iterator[tuple[int, list[dict]]], skip: int) -> Iterator[tuple[int, list[dict]]]:
    """The chunks of `read_rows` without their first `skip` rows (already in the output of a resumed run)."""
    for first, rows in chunks:
        take = min(len(rows), skip)
        skip -= take
        if take < len(rows):
            yield first + take, rows[take:]


def _checked_tokens(classifier: Classifier, rows: list[dict], key: str, source: Path, first: int) -> Ragged:
    texts = []
    for offset, row in enumerate(rows):
        problem = data.text_problem(row.get(key))
        if problem is not None:
            where = f"{source}, {'row' if source.suffix == '.parquet' else 'line'} {first + offset}"
            column = "" if source.suffix.lower() in PLAIN_TEXT else f" (column {key!r})"  # a line is the text
            raise ValueError(f"{where}: {problem}{column}")
        texts.append(row[key])
    return classifier.encode(texts)


def _score_chunk(classifier: Classifier, rows: list[dict], tokens, writer: Writer, done: int, bar, sidecar: Path,
                 source: Path) -> int:
    add_scores(rows, classifier.proba_from_tokens(tokens.result()), classifier.labels)
    writer.write(rows, part=done)
    done += len(rows)
    partial = sidecar.with_suffix(".tmp")
    partial.write_text(json.dumps({"source": str(source.resolve()), "rows": done, "bytes": writer.position()}))
    partial.replace(sidecar)
    bar.update(len(rows))
    return done


def _count_rows(path: Path) -> int | None:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix.lower() in (".jsonl", ".txt"):
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    return None  # CSV records may span lines: no cheap count
