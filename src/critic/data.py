"""Read review datasets, validate them, map labels, clean texts, dedupe and split.

Every dataset comes out as a pandas DataFrame with columns `text` (str) and `label` (0 = negative,
1 = positive). A row with a missing text or an unknown label is reported with its file and line; the load
stops unless the caller asks to drop such rows, and then the dropped count is reported and recorded.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import re
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from critic import sources

LABEL_NAMES = ("negative", "positive")
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
TEXT_COLUMNS = ("text", "review", "sentence", "content", "body")
LABEL_COLUMNS = ("label", "sentiment", "labels", "target", "polarity", "class")
KNOWN_LABELS = {
    "negative": 0, "positive": 1, "neg": 0, "pos": 1, "0": 0, "1": 1,
    "false": 0, "true": 1, "bad": 0, "good": 1,
}


class DataError(ValueError):
    """A dataset could not be read as asked; the message names the file, the line and the value."""


# ------------------------------------------------------------------------------------------- cleaning

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
_URL = re.compile(r"https?://\S+|www\.\S+")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_NOTEBOOK_DROP = re.compile(r"[\\\"'*]")


def clean_none(text: str) -> str:
    return text


def clean_default(text: str) -> str:
    """Unescape HTML entities and turn <br /> into spaces; keep case, accents and punctuation."""
    return _SPACES.sub(" ", _BR.sub(" ", html.unescape(text))).strip()


def clean_notebook(text: str) -> str:
    """The starting notebook's rules: lowercase, drop non-ASCII, URLs, <br /> tags, backslashes, quotes, asterisks."""
    text = text.lower()
    text = _NON_ASCII.sub("", text)
    text = _URL.sub("", text)
    text = _BR.sub(" ", text)
    text = _NOTEBOOK_DROP.sub("", text)
    return _SPACES.sub(" ", text).strip()


CLEANERS: dict[str, Callable[[str], str]] = {"none": clean_none, "default": clean_default, "notebook": clean_notebook}


def cleaner(name: str) -> Callable[[str], str]:
    try:
        return CLEANERS[name]
    except KeyError:
        raise DataError(f"unknown cleaning recipe '{name}'; choose one of: {', '.join(CLEANERS)}") from None


# -------------------------------------------------------------------------------------------- reading


@dataclass
class Report:
    """What a load did: rows read, rows dropped and why, where the data came from."""

    source: str
    rows_read: int = 0
    dropped: list[str] = field(default_factory=list)
    duplicates_removed: int = 0

    def as_dict(self) -> dict:
        return {"source": self.source, "rows_read": self.rows_read, "rows_dropped": len(self.dropped),
                "dropped_examples": self.dropped[:20], "duplicates_removed": self.duplicates_removed}


@dataclass(frozen=True)
class Columns:
    """How to find text and label in a file. `label_map` maps raw label values (as strings) to 0/1."""

    text: str | None = None
    label: str | None = None
    label_map: dict[str, int] | None = None


def parse_label_map(spec: str) -> dict[str, int]:
    """'good=positive,bad=negative' or 'good=1,bad=0' -> {'good': 1, 'bad': 0}."""
    mapping = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        raw, _, value = item.partition("=")
        value = value.strip().lower()
        if value not in ("0", "1", *LABEL_NAMES):
            raise DataError(f"label map '{item}': the target must be positive/negative or 1/0")
        mapping[raw.strip()] = 1 if value in ("1", "positive") else 0
    if set(mapping.values()) != {0, 1}:
        raise DataError(f"label map '{spec}' must map at least one value to each of positive and negative")
    return mapping


def records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line or row number, record) for each record of a CSV, TSV, JSONL or Parquet file."""
    suffix = "".join(path.suffixes[-2:]) if path.suffix in (".gz", ".bz2", ".xz") else path.suffix
    suffix = suffix.lower()
    if suffix in (".csv", ".tsv", ".txt") or suffix.startswith((".csv.", ".tsv.")):
        delimiter = "\t" if suffix.startswith(".tsv") else ","
        with _open_text(path) as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            if not reader.fieldnames:
                raise DataError(f"{path}: empty file, expected a header line")
            line = reader.line_num + 1
            try:
                for record in reader:
                    yield line, record
                    line = reader.line_num + 1
            except csv.Error as error:
                raise DataError(f"{path}, line {line}: malformed CSV ({error})") from None
    elif suffix in (".jsonl", ".ndjson", ".json"):
        with _open_text(path) as handle:
            for line, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}, line {line}: not valid JSON ({error.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}, line {line}: expected a JSON object, got {type(record).__name__}")
                yield line, record
    elif suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
        for row, record in enumerate(frame.to_dict("records"), start=1):
            yield row, record
    else:
        raise DataError(f"{path}: unknown format '{suffix}'; use .csv, .tsv, .jsonl or .parquet, or an aclImdb folder")


def _open_text(path: Path) -> io.TextIOBase:
    """Undecodable bytes come through as lone surrogates, so that the row holding them can be named."""
    if path.suffix == ".gz":
        import gzip
        return gzip.open(path, "rt", encoding="utf-8", newline="", errors="surrogateescape")
    return open(path, encoding="utf-8", newline="", errors="surrogateescape")


_UNDECODABLE = re.compile("[\udc80-\udcff]")


def not_utf8(text: str) -> bool:
    return _UNDECODABLE.search(text) is not None


def text_problem(value: object) -> str | None:
    """Why `value` cannot be scored as a review, or None: the one rule for files, uploads, calls and Ray."""
    if value is None or (isinstance(value, float) and value != value):
        return "empty or missing text"
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not value.strip():
        return "empty text"
    if not_utf8(value):
        return "not UTF-8 text; re-save the file as UTF-8"
    return None


def pick_column(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str:
    # A CSV row with more values than the header has names files the extras under None: not a column.
    columns = [c for c in columns if isinstance(c, str)]
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{path}: no {what} column '{wanted}'; the columns are: {', '.join(columns)}")
        return wanted
    lowered = {c.lower(): c for c in columns}
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    raise DataError(f"{path}: cannot tell which column holds the {what}; columns are {', '.join(columns)}. "
                    f"Name it with --{what}-column")


def read_table(path: str | Path, columns: Columns = Columns(), drop_invalid: bool = False,
               unlabeled: bool = False) -> tuple[pd.DataFrame, Report]:
    """Read a file or an aclImdb folder into (DataFrame[text, label], Report)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir() or path.name.endswith(".tar.gz"):
        return read_aclimdb(path)
    report = Report(source=str(path))
    label_map = columns.label_map or KNOWN_LABELS
    texts, labels, errors = [], [], []
    text_key = label_key = None
    for where, record in records(path):
        if text_key is None:
            keys = list(record)
            text_key = pick_column(keys, columns.text, TEXT_COLUMNS, "text", path)
            if not unlabeled:
                label_key = pick_column(keys, columns.label, LABEL_COLUMNS, "label", path)
        report.rows_read += 1
        text = record.get(text_key)
        problem = None
        if not isinstance(text, str) or not text.strip():
            problem = f"missing text ({text_key!r} is {_show(text)})"
        elif not_utf8(text):
            problem = "not UTF-8 text; re-save the file as UTF-8"
        label = None
        if not unlabeled and problem is None:
            raw = record.get(label_key)
            key = str(raw).strip() if raw is not None else ""
            label = label_map.get(key, label_map.get(key.lower()))
            if label is None:
                expected = ", ".join(sorted(label_map))
                problem = (f"unknown label {_show(raw)} in column {label_key!r} (expected one of: {expected}; "
                           f"map other values with --label-map 'VALUE=positive,VALUE=negative')")
        if problem:
            errors.append(f"{path}, line {where}: {problem}")
            continue
        texts.append(text)
        labels.append(label)
    if errors and not drop_invalid:
        shown = "\n  ".join(errors[:10])
        more = f"\n  … and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise DataError(f"{len(errors)} invalid row(s):\n  {shown}{more}\n"
                        f"Fix them, or pass --drop-invalid to skip them (the count is reported and recorded).")
    if errors:
        print(f"critic: dropped {len(errors)} invalid row(s) from {path}; first: {errors[0]}", file=sys.stderr)
    report.dropped = errors
    frame = pd.DataFrame({"text": texts})
    if not unlabeled:
        frame["label"] = pd.Series(labels, dtype="int64")
    return frame, report


def _show(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "empty"
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "…'"


def read_aclimdb(path: Path) -> tuple[pd.DataFrame, Report]:
    """The Stanford layout (aclImdb/{train,test}/{pos,neg}/*.txt), as a folder or as the original tarball.

    The result has an extra column `official_split` (train/test): the dataset's own 25k/25k split.
    """
    rows: list[tuple[str, int, str]] = []
    pattern = re.compile(r"(?:^|/)(train|test)/(pos|neg)/[^/]+\.txt$")
    if path.is_dir():
        for file in sorted(path.rglob("*.txt")):
            match = pattern.search(file.relative_to(path).as_posix())
            if match:
                rows.append((file.read_text(encoding="utf-8"), int(match[2] == "pos"), match[1]))
    else:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                match = pattern.search(member.name) if member.isfile() else None
                if match:
                    text = archive.extractfile(member).read().decode("utf-8")
                    rows.append((text, int(match[2] == "pos"), match[1]))
    if not rows:
        raise DataError(f"{path}: no reviews found; expected aclImdb/{{train,test}}/{{pos,neg}}/*.txt")
    frame = pd.DataFrame(rows, columns=["text", "label", "official_split"])
    return frame, Report(source=str(path), rows_read=len(frame))


# -------------------------------------------------------------------------------------- dedupe, split


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dedupe(frame: pd.DataFrame, report: Report | None = None) -> pd.DataFrame:
    """Keep one row per exact text; a text seen with both labels is dropped entirely (it cannot be right)."""
    label_counts = frame.groupby("text", sort=False)["label"].nunique()
    conflicting = set(label_counts.index[label_counts > 1])
    kept = frame[~frame["text"].isin(conflicting)].drop_duplicates("text", keep="first")
    if report is not None:
        report.duplicates_removed = len(frame) - len(kept)
    return kept.reset_index(drop=True)


def assign_splits(texts: pd.Series, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> pd.Series:
    """Split by the sha256 of each text: independent of the source, its row order and the machine."""
    buckets = texts.map(lambda t: int(text_hash(t)[:8], 16) % 10_000)
    edges = (round(fractions[0] * 10_000), round((fractions[0] + fractions[1]) * 10_000))
    return pd.Series(pd.cut(buckets, [-1, edges[0] - 1, edges[1] - 1, 10_000], labels=SPLITS).astype(str),
                     index=texts.index)


def fold_of(texts: pd.Series, folds: int) -> np.ndarray:
    """Each text's cross-validation fold (0 … folds-1), by its sha256: stable across runs and machines."""
    return texts.map(lambda t: int(text_hash(t)[8:16], 16) % folds).to_numpy()


def digest_texts(texts: pd.Series) -> str:
    """One sha256 over a set of texts, independent of their order."""
    digest = hashlib.sha256()
    for h in sorted(texts.map(text_hash)):
        digest.update(h.encode())
    return digest.hexdigest()


def manifest(frame: pd.DataFrame, report: Report, split_column: str = "split") -> dict:
    """Counts and a sha256 over each split's texts, so that results are comparable across machines."""
    splits = {}
    for name, part in frame.groupby(split_column, sort=False):
        splits[name] = {"rows": len(part), "positive": int(part["label"].sum()), "texts_sha256": digest_texts(part["text"])}
    return {**report.as_dict(), "splits": dict(sorted(splits.items()))}


# --------------------------------------------------------------------------------------- the front


@dataclass
class Dataset:
    """A loaded dataset with every row's split, and the manifest that identifies it."""

    frame: pd.DataFrame  # text, label, split (and official_split for aclImdb)
    manifest: dict

    def split(self, name: str, size: int | None = None, seed: int = 42) -> pd.DataFrame:
        column = "official_split" if name.startswith("official-") else "split"
        key = name.removeprefix("official-")
        if name == "all":
            part = self.frame
        elif column not in self.frame or key not in set(self.frame[column]):
            available = sorted(set(self.frame["split"]) | {f"official-{s}" for s in self.frame.get("official_split", [])})
            raise DataError(f"no split '{name}'; available: {', '.join(available)}, all")
        else:
            part = self.frame[self.frame[column] == key]
        if size is not None and size < len(part):
            part = part.sample(n=size, random_state=seed)
        return part[["text", "label"]].reset_index(drop=True)


def load(data: str | Path = "imdb", columns: Columns = Columns(), drop_invalid: bool = False,
         log: Callable[[str], None] | None = None) -> Dataset:
    """Load a named dataset ('imdb') or a path, dedupe it and assign the deterministic 80/10/10 split.

    A file that already has a column `split` with train/validation/test values keeps its own split.
    """
    if str(data) in sources.DATASETS:
        fetched = sources.fetch(sources.DATASETS[str(data)], log=log)
        (pinned,) = fetched.files
        frame, report = read_table(fetched.path / pinned, drop_invalid=drop_invalid)
        report.source = f"{data} ({fetched.source}; {pinned} sha256 {fetched.files[pinned]})"
    else:
        frame, report = read_table(data, columns, drop_invalid=drop_invalid)
    frame = dedupe(frame, report)
    frame["split"] = assign_splits(frame["text"])
    return Dataset(frame, manifest(frame, report))


def load_dataset(data: str | Path = "imdb", split: str = "train", size: int | None = None, seed: int = 42,
                 text_column: str | None = None, label_column: str | None = None,
                 label_map: dict[str, int] | str | None = None, drop_invalid: bool = False) -> pd.DataFrame:
    """`critic.load_dataset("imdb", split="train")` -> DataFrame with `text` and `label` (0 negative, 1 positive).

    `split` is train, validation, test or all (official-train / official-test with the Stanford tarball);
    `size` takes a seeded random subset.
    """
    if isinstance(label_map, str):
        label_map = parse_label_map(label_map)
    columns = Columns(text_column, label_column, label_map)
    return load(data, columns, drop_invalid).split(split, size, seed)
