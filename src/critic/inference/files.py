"""Streaming, resumable scoring of files: CSV/TSV, JSONL, Parquet or plain text in, the same rows with `label` and
`p_<label>` columns out (never over the input, never over a column of its own), chunk by chunk, the next chunk
tokenized while the model scores this one."""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from critic import data
from critic.inference.predict import Classifier, Prepared, add_scores, score_columns
from critic.safe_csv import SafeDictWriter

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
    """Appends scored rows to a CSV, TSV or JSONL file, or writes Parquet parts; `position()` is what a resume needs.
    It writes `path` (the run's partial file); `finish(target)` moves the whole output into place."""

    def __init__(self, path: Path, suffix: str, resume_bytes: int | None = None, fields: list[str] | None = None):
        self.path = path
        self.suffix = suffix
        if self.suffix not in (".csv", ".tsv", ".jsonl", ".parquet"):
            raise ValueError(f"{path}: unknown output format; use .csv, .tsv, .jsonl or .parquet")
        self.parts = parts_folder(path)
        self.handle = None
        self.fields = fields  # the CSV's columns, as the rows name them (the header may show them neutralised)
        if self.suffix == ".parquet":
            self.parts.mkdir(exist_ok=True)
        elif resume_bytes is not None:
            with open(path, "r+b") as f:  # drop whatever was written after the last recorded chunk
                f.truncate(resume_bytes)
            self.handle = open(path, "a", encoding="utf-8", newline="")
            if self.suffix != ".jsonl" and self.fields is None:  # a record from before fields were kept in it
                with open(path, encoding="utf-8", newline="") as f:
                    self.fields = next(csv.reader(f, delimiter=self._delimiter))

    @property
    def _delimiter(self) -> str:
        return "\t" if self.suffix == ".tsv" else ","

    def write(self, rows: list[dict], part: int) -> None:
        if self.suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(arrow_table(rows), self.parts / f"part-{part:06d}.parquet")
            return
        if self.handle is None:
            self.handle = open(self.path, "w", encoding="utf-8", newline="")
        if self.suffix == ".jsonl":
            self.handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        else:
            header = self.fields is None
            writer = SafeDictWriter(self.handle, self.fields or list(rows[0]), delimiter=self._delimiter)
            self.fields = writer.fieldnames
            if header:
                writer.writeheader()
            writer.writedicts(rows)
        self.handle.flush()

    def position(self) -> int:
        return self.handle.tell() if self.handle is not None else 0

    def finish(self, target: Path) -> None:
        """The output, whole, at `target` (renamed into place: a crash before leaves the previous file as it was)."""
        if self.handle is not None:
            self.handle.close()
        if self.suffix == ".parquet":
            parts = written_parts(self.parts)
            if parts:
                join_parquet(parts, self.path)
            clear_parts(self.parts)
        if self.path.exists():
            os.replace(self.path, target)


PART_NAME = re.compile(r"part-\d{6}\.parquet")  # only what Writer.write names: nothing else there is joined or deleted


def parts_folder(path: Path) -> Path:
    return path.with_name(path.name + ".parts")


def written_parts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("part-*.parquet") if PART_NAME.fullmatch(p.name)) if folder.is_dir() else []


def clear_parts(folder: Path) -> None:
    """The parts Writer wrote, and their folder once it is empty; anything else in it stays."""
    for part in written_parts(folder):
        part.unlink()
    try:
        folder.rmdir()
    except OSError:
        pass  # not there, or it holds files critic did not write


def arrow_table(rows: list[dict]):
    """The rows as an Arrow table; a column whose values Arrow cannot hold as one type (JSONL's `id` an int in one row
    and a string in the next) is written as text (JSON for lists and objects)."""
    import pyarrow as pa

    names = list(dict.fromkeys(name for row in rows for name in row))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[name] = pa.array([as_text(value) for value in values], pa.string())
    return pa.table(columns)


def as_text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)


def join_parquet(parts: list[Path], target: Path) -> None:
    """One Parquet file from parts written chunk by chunk, one part in memory at a time. Their schemas are unified
    first: a column that was empty (null) in one chunk and text in another is text throughout, and one whose types
    do not unify (an int in one chunk, a string in the next) is text throughout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = unified_schema([pq.read_schema(p) for p in parts])
    with pq.ParquetWriter(target, schema) as writer:
        for part in parts:
            table = pq.read_table(part)
            writer.write_table(
                pa.table(
                    [
                        cast(table.column(f.name), f.type)
                        if f.name in table.column_names
                        else pa.nulls(len(table), f.type)
                        for f in schema
                    ],
                    schema=schema,
                )
            )


def unified_schema(schemas: list):
    """The parts' schema: Arrow's permissive unification, column by column, with text where it finds none."""
    import pyarrow as pa

    types: dict[str, list] = {}
    for schema in schemas:
        for f in schema:
            types.setdefault(f.name, []).append(f.type)
    fields = []
    for name, found in types.items():
        try:
            one = pa.unify_schemas([pa.schema([(name, t)]) for t in found], promote_options="permissive")
            fields.append(one.field(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            fields.append(pa.field(name, pa.string()))
    return pa.schema(fields)


def cast(column, to):
    """`column` as type `to`; to text through `as_text` where Arrow has no cast (lists, structs)."""
    import pyarrow as pa

    try:
        return column.cast(to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return pa.array([as_text(value) for value in column.to_pylist()], to)


def predict_file(
    classifier: Classifier,
    source: Path,
    target: Path,
    text_column: str | None = None,
    chunk: int = 1024,
    progress: bool = True,
    overwrite: bool = False,
    min_accuracy: float | None = None,
) -> int:
    """Score every row of `source` into `target`: the input's columns plus the label, one probability per class and,
    for a model with a cascade, the stage that answered (`label`, `p_<label>`, `stage`; prefixed with `critic_` where
    the input has such columns already).

    Streams chunk by chunk, preparing the next chunk (the cascade's cheap stage, where the model has one, and the
    tokenizer) while the model scores this one, into TARGET.partial, renamed to `target` at the end (never the
    input itself). After each chunk the position is recorded in TARGET.progress.json with what makes a resume valid
    (the input's size and time, the model, the options), so an interrupted run continues where it stopped when
    started again with the same; the record is removed when the run completes. Returns the number of rows in
    `target`. With `min_accuracy`, the label is "unsure" below the confidence that shows it on the validation split
    (`Classifier.unsure_below`).
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    source, target = Path(source), Path(target)
    sidecar = target.with_name(target.name + ".progress.json")
    partial = target.with_name(target.name + ".partial")
    _check_target(source, [target, partial, parts_folder(partial), sidecar])
    unsure_below = classifier.unsure_below(min_accuracy)
    run = _run_record(classifier, source, text_column, min_accuracy)
    done, resume_bytes, fields = _resume_point(run, target, partial, sidecar, overwrite)
    writer = Writer(partial, target.suffix.lower(), resume_bytes if done else None, fields)
    bar = tqdm(
        total=_count_rows(source),
        initial=done,
        unit="review",
        desc="scoring",
        disable=not progress,
        file=sys.stderr,
        mininterval=1.0,
    )
    scored = _Scored(writer, sidecar, run, bar, done)
    key = columns = None
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            for first, rows in _rows_after(read_rows(source, chunk), done):
                if key is None:
                    key = data.pick_column(list(rows[0]), text_column, data.TEXT_COLUMNS, "text", source)
                    stage = classifier.cheap_stage is not None
                    columns = score_columns(classifier.labels, taken=list(rows[0]), stage=stage)
                job = (rows, pool.submit(_checked_texts, classifier, rows, key, source, first))
                if pending is not None:
                    _score_chunk(classifier, *pending, columns, unsure_below, scored)
                pending = job
            if pending is not None:
                _score_chunk(classifier, *pending, columns, unsure_below, scored)
        writer.finish(target)
        sidecar.unlink(missing_ok=True)
    finally:
        bar.close()
        if writer.handle is not None:
            writer.handle.close()
    return scored.rows


def _check_target(source: Path, written: list[Path]) -> None:
    """The output and the names critic writes beside it (TARGET.partial, its .parts folder, TARGET.progress.json)
    are no links, and none of them is the input: critic deletes and renames them."""
    for path in written:
        if path.is_symlink():
            raise ValueError(f"{path} is a link; critic writes there: remove it, or name another output")
        if path.exists() and source.exists() and os.path.samefile(source, path):
            raise ValueError(f"{path} is the input file itself; name another output (scoring writes a new file)")


def _run_record(classifier: Classifier, source: Path, text_column: str | None, min_accuracy: float | None) -> dict:
    """What must be the same for a resumed run to continue an interrupted one."""
    stat = source.stat()
    return {
        "input": {"path": str(source.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "model": classifier.identity(),
        "options": {"text_column": text_column, **({"min_accuracy": min_accuracy} if min_accuracy else {})},
    }


RESUME_PARTS = {
    "input": "the input file (another file, or changed since)",
    "model": "the model (another one, or retrained, or another backend, precision or long-review setting)",
    "options": "the options",
}


def _resume_point(
    run: dict, target: Path, partial: Path, sidecar: Path, overwrite: bool
) -> tuple[int, int | None, list[str] | None]:
    """Rows already scored, the partial output's byte length then and its columns, from an interrupted run's record
    that matches this run; (0, None, None) fresh, with what an earlier run left cleared."""
    if sidecar.is_file() and not overwrite:
        state = json.loads(sidecar.read_text())
        changed = [RESUME_PARTS[part] for part in RESUME_PARTS if state.get("run", {}).get(part) != run[part]]
        if changed:
            raise ValueError(
                f"{sidecar} records an interrupted run with another {'; '.join(changed)}: it cannot "
                f"be continued; pass --overwrite to start over"
            )
        return state["rows"], state["bytes"], state.get("fields")
    if target.exists() and not overwrite:
        raise ValueError(f"{target} already exists and is complete; pass --overwrite to score again")
    partial.unlink(missing_ok=True)
    clear_parts(parts_folder(partial))
    sidecar.unlink(missing_ok=True)
    return 0, None, None


def _rows_after(chunks: Iterator[tuple[int, list[dict]]], skip: int) -> Iterator[tuple[int, list[dict]]]:
    """The chunks of `read_rows` without their first `skip` rows (already in the output of a resumed run)."""
    for first, rows in chunks:
        take = min(len(rows), skip)
        skip -= take
        if take < len(rows):
            yield first + take, rows[take:]


def _checked_texts(classifier: Classifier, rows: list[dict], key: str, source: Path, first: int) -> Prepared:
    texts = []
    for offset, row in enumerate(rows):
        problem = data.text_problem(row.get(key))
        if problem is not None:
            where = f"{source}, {'row' if source.suffix == '.parquet' else 'line'} {first + offset}"
            column = "" if source.suffix.lower() in PLAIN_TEXT else f" (column {key!r})"  # a line is the text
            raise ValueError(f"{where}: {problem}{column}")
        texts.append(row[key])
    return classifier.prepare(texts)


@dataclass
class _Scored:
    """The output of a run so far: its writer, the rows in it, and the record a resume starts from."""

    writer: Writer
    sidecar: Path
    run: dict
    bar: Any
    rows: int

    def add(self, rows: list[dict]) -> None:
        """Rows written, then the record of where the output stands."""
        self.writer.write(rows, part=self.rows)
        self.rows += len(rows)
        state = {"run": self.run, "rows": self.rows, "bytes": self.writer.position(), "fields": self.writer.fields}
        partial = self.sidecar.with_suffix(".tmp")
        partial.write_text(json.dumps(state))
        partial.replace(self.sidecar)
        self.bar.update(len(rows))


def _score_chunk(
    classifier: Classifier, rows: list[dict], prepared, columns: list[str], unsure_below: float | None, scored: _Scored
) -> None:
    probs, cheap = classifier.finish(prepared.result())
    add_scores(rows, probs, classifier.labels, columns, unsure_below, cheap)
    scored.add(rows)


def _count_rows(path: Path) -> int | None:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix.lower() in (".jsonl", ".txt"):
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    return None  # CSV records may span lines: no cheap count
