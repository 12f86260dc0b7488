"""Read review files (CSV, TSV, JSONL, Parquet, an aclImdb folder or tarball), validate them and map labels.

Every dataset comes out as a pandas DataFrame with columns `text` (str) and `label` (the index of the row's class
in the dataset's `labels`). Binary sentiment (negative, positive) is recognised in its usual spellings (a value
beside them that many rows hold is a class of its own: good/bad/mixed); any other
label column gives its own classes (stars 1-5 in numeric order, names in alphabetical order, or the order given
with --labels), and --label-map maps raw values to classes. A row with a missing text or an unknown label is
reported with its file and line; the load stops unless the caller asks to drop such rows, and then the dropped
count is reported and recorded.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

LABEL_NAMES = ("negative", "positive")
# A column of this name with these values keeps the file's own split (a few labelled reviews kept for training)
SPLIT_COLUMN, SPLITS = "split", ("train", "validation", "test")
# A value beside binary sentiment's spellings held by this share of the rows and this many rows is a class
CLASS_SHARE, CLASS_ROWS = 0.05, 10
TEXT_COLUMNS = ("text", "review", "sentence", "content", "body")
LABEL_COLUMNS = ("label", "sentiment", "labels", "target", "polarity", "class", "stars", "rating", "overall")
KNOWN_LABELS = {
    "negative": 0,
    "positive": 1,
    "neg": 0,
    "pos": 1,
    "0": 0,
    "1": 1,
    "false": 0,
    "true": 1,
    "bad": 0,
    "good": 1,
}


class DataError(ValueError):
    """A dataset could not be read as asked; the message names the file, the line and the value."""


# -------------------------------------------------------------------------------------------- reading


@dataclass
class Report:
    """What a load did: rows read, rows dropped and why, where the data came from."""

    source: str
    rows_read: int = 0
    dropped: list[str] = field(default_factory=list)
    duplicates_removed: int = 0
    labels: list[str] = field(default_factory=lambda: list(LABEL_NAMES))

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_dropped": len(self.dropped),
            "dropped_examples": self.dropped[:20],
            "duplicates_removed": self.duplicates_removed,
            "labels": self.labels,
        }


@dataclass(frozen=True)
class Columns:
    """How to find text and label in a file: `label_map` maps raw label values (as strings) to class names,
    `labels` fixes the classes and their order (default: from the data)."""

    text: str | None = None
    label: str | None = None
    label_map: dict[str, str] | None = None
    labels: tuple[str, ...] | None = None


MAX_CLASSES = 100
# How each named dataset's file reads (IMDB: the defaults).
NAMED_COLUMNS = {"drugs": Columns(text="review", label="rating", labels=("negative", "neutral", "positive"))}


def columns_of(settings) -> Columns:
    """The Columns of a job's settings (a TrainConfig, or a model's saved config as a dict)."""
    get = settings.get if isinstance(settings, dict) else lambda name, default=None: getattr(settings, name, default)
    label_map, labels = get("label_map"), get("labels")
    return Columns(
        get("text_column"),
        get("label_column"),
        parse_label_map(label_map) if label_map else None,
        parse_labels(labels) if isinstance(labels, str) else labels,
    )


def parse_label_map(spec: str) -> dict[str, str]:
    """'good=positive,bad=negative' -> {'good': 'positive', 'bad': 'negative'}; '1=neg,2=neg,3=neutral,…' for any
    classes. The old binary form 'good=1,bad=0' still means positive/negative."""
    mapping = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        raw, equals, value = item.partition("=")
        if not equals or not raw.strip() or not value.strip():
            raise DataError(f"label map '{item}': write VALUE=CLASS, e.g. 'good=positive'")
        mapping[raw.strip()] = value.strip()
    if not mapping:
        raise DataError(f"label map '{spec}' is empty")
    if set(mapping.values()) <= {"0", "1"}:
        mapping = {raw: LABEL_NAMES[int(value)] for raw, value in mapping.items()}
    if len(set(mapping.values())) < 2:
        raise DataError(f"label map '{spec}' must map at least one value to each of two classes or more")
    return mapping


def parse_labels(spec: str | None) -> tuple[str, ...] | None:
    """'1,2,3,4,5' -> ('1', '2', '3', '4', '5')."""
    if not spec:
        return None
    labels = tuple(part.strip() for part in spec.split(",") if part.strip())
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise DataError(f"labels '{spec}': name at least two different classes, comma-separated")
    return labels


def _raw_label(value: object) -> str:
    """A label as text: 4.0 (a float column) reads as '4', like the 4 of a CSV."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip() if value is not None and not (isinstance(value, float) and value != value) else ""


def natural_order(values) -> tuple[str, ...]:
    """Numbers by value (stars 1..5), then names alphabetically (negative, neutral, positive)."""

    def key(value: str):
        try:
            return (0, float(value), "")
        except ValueError:
            return (1, 0.0, value.lower())

    return tuple(sorted(values, key=key))


def is_ordered(labels: tuple[str, ...]) -> bool:
    """Numeric class names (stars) are ordered: an error of one star is smaller than one of four."""
    return len(labels) > 2 and all(is_number(label) for label in labels)


def is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def resolve_labels(raw: list[str], columns: Columns) -> tuple[tuple[str, ...], Callable[[str], int | None]]:
    """The classes of a label column and the function from a raw value to a class index (None: unknown)."""
    distinct = {value for value in raw if value}
    if columns.label_map:
        targets = tuple(dict.fromkeys(columns.label_map.values()))
        labels = columns.labels or (LABEL_NAMES if set(targets) == set(LABEL_NAMES) else natural_order(targets))
        unknown = sorted(set(targets) - set(labels))
        if unknown:
            raise DataError(f"label map targets {', '.join(unknown)} are not among --labels {', '.join(labels)}")
        lookup = {**{label: label for label in labels}, **columns.label_map}
    elif columns.labels and set(columns.labels) != set(LABEL_NAMES):
        labels, lookup = columns.labels, {label: label for label in columns.labels}
    elif {KNOWN_LABELS.get(value.lower()) for value in distinct} >= {0, 1} or any(
        value.lower() in KNOWN_LABELS and not value.isdigit() for value in distinct
    ):
        labels, lookup = sentiment_classes(raw)
    else:
        labels = natural_order(distinct)
        lookup = {label: label for label in labels}
    if len(labels) > MAX_CLASSES:
        raise DataError(
            f"the label column has {len(labels):,} different values ({', '.join(labels[:5])}, …); is it "
            f"the right column? Name it with --label-column"
        )
    index = {label: i for i, label in enumerate(labels)}

    def to_index(value: str) -> int | None:
        name = lookup.get(value, lookup.get(value.lower()))
        return index.get(name) if name is not None else None

    return tuple(labels), to_index


def sentiment_classes(raw: list[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    """Classes of a column that spells binary sentiment (both 0 and 1, or a word such as positive). A value
    beside those spellings held by at least CLASS_SHARE of the rows and CLASS_ROWS rows is a class the user means
    (good/bad/mixed: negative, mixed, positive; 0/1/2: three classes); a rarer one is a bad row (a typo, a stray
    header) and stays an error naming its line."""
    counts = Counter(value for value in raw if value)
    frequent = sorted(
        value
        for value, count in counts.items()
        if value.lower() not in KNOWN_LABELS and count >= max(CLASS_ROWS, CLASS_SHARE * len(raw))
    )
    if not frequent:
        return LABEL_NAMES, {k: LABEL_NAMES[v] for k, v in KNOWN_LABELS.items()}
    everything = [value for value in counts if value.lower() in KNOWN_LABELS] + frequent
    if all(is_number(value) for value in everything):
        labels = natural_order(everything)  # 0, 1, 2: numbered classes, not sentiment with an extra
        return labels, {label: label for label in labels}
    labels = (LABEL_NAMES[0], *natural_order(frequent), LABEL_NAMES[1])
    return labels, {**{k: LABEL_NAMES[v] for k, v in KNOWN_LABELS.items()}, **{value: value for value in frequent}}


def records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line or row number, record) for each record of a CSV, TSV, JSONL or Parquet file."""
    suffix = "".join(path.suffixes[-2:]) if path.suffix in (".gz", ".bz2", ".xz") else path.suffix
    suffix = suffix.lower()
    if suffix in (".csv", ".tsv", ".txt") or suffix.startswith((".csv.", ".tsv.")):
        yield from _csv_records(path, "\t" if suffix.startswith(".tsv") else ",")
    elif suffix in (".jsonl", ".ndjson", ".json"):
        yield from _json_records(path)
    elif suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
        yield from enumerate(frame.to_dict("records"), start=1)
    else:
        raise DataError(f"{path}: unknown format '{suffix}'; use .csv, .tsv, .jsonl or .parquet, or an aclImdb folder")


def _csv_records(path: Path, delimiter: str) -> Iterator[tuple[int, dict]]:
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


def _json_records(path: Path) -> Iterator[tuple[int, dict]]:
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
    raise DataError(
        f"{path}: cannot tell which column holds the {what}; columns are {', '.join(columns)}. "
        f"Name it with --{what}-column"
    )


def read_table(
    path: str | Path, columns: Columns = Columns(), drop_invalid: bool = False, unlabeled: bool = False
) -> tuple[pd.DataFrame, Report]:
    """Read a file or an aclImdb folder into (DataFrame[text, label], Report)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir() or path.name.endswith(".tar.gz"):
        return read_aclimdb(path)
    report = Report(source=str(path))
    rows = _read_rows(path, columns, unlabeled, report)
    labels, indices = (LABEL_NAMES, []) if unlabeled else _index_labels(rows, columns)
    report.dropped = _invalid_rows(path, rows.errors, drop_invalid)
    report.labels = list(labels)
    frame = pd.DataFrame({"text": rows.texts})
    if not unlabeled:
        frame["label"] = pd.Series(indices, dtype="int64")
        if rows.splits:
            frame["split"] = rows.splits
        if len(set(indices)) < 2:
            raise DataError(
                f"{path}: every row has the label {labels[indices[0]] if indices else '(none)'}; a "
                f"classifier needs at least two classes"
            )
    return frame, report


def values_by_text(path: str | Path, columns: Columns, column: str) -> dict[str, object]:
    """Each review's value in another column of its file (the first row's, for a text written twice): what
    `critic evaluate --slice-by COLUMN` groups by."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: --slice-by reads a column of a review file; this is not one")
    found: dict[str, object] = {}
    text_key = None
    for _, record in records(path):
        if text_key is None:
            text_key = pick_column(list(record), columns.text, TEXT_COLUMNS, "text", path)
            if column not in record:
                names = ", ".join(c for c in record if isinstance(c, str))
                raise DataError(f"{path}: no column '{column}' to slice by; the columns are: {names}")
        text = record.get(text_key)
        if isinstance(text, str):
            found.setdefault(text, record.get(column))
    return found


@dataclass
class _Rows:
    """A file's rows as read, before their labels are mapped, and the lines that could not be read."""

    texts: list[str] = field(default_factory=list)
    raw_labels: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)  # empty unless the file has a split column
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, problem)
    label_key: str | None = None


def _read_rows(path: Path, columns: Columns, unlabeled: bool, report: Report) -> _Rows:
    rows = _Rows()
    text_key = split_key = None
    for where, record in records(path):
        if text_key is None:
            keys = list(record)
            text_key = pick_column(keys, columns.text, TEXT_COLUMNS, "text", path)
            if not unlabeled:
                rows.label_key = pick_column(keys, columns.label, LABEL_COLUMNS, "label", path)
                split_key = SPLIT_COLUMN if SPLIT_COLUMN in keys else None
        report.rows_read += 1
        text = record.get(text_key)
        problem = text_problem(text)
        if problem is not None:
            rows.errors.append((where, f"{problem} (column {text_key!r})"))
            continue
        if split_key is not None:
            split = _raw_label(record.get(split_key)).lower()
            if split not in SPLITS:
                rows.errors.append((where, f"split {_show(record.get(split_key))} is not one of {', '.join(SPLITS)}"))
                continue
            rows.splits.append(split)
        rows.texts.append(text)
        rows.raw_labels.append("" if unlabeled else _raw_label(record.get(rows.label_key)))
        rows.lines.append(where)
    return rows


def _index_labels(rows: _Rows, columns: Columns) -> tuple[tuple[str, ...], list[int]]:
    """The dataset's classes and each kept row's class; a row with an unknown label leaves `rows` for its errors."""
    labels, to_index = resolve_labels(rows.raw_labels, columns)
    expected = sorted(KNOWN_LABELS) if labels == LABEL_NAMES else labels
    kept, indices = [], []
    for row, (raw, where) in enumerate(zip(rows.raw_labels, rows.lines)):
        label = to_index(raw)
        if label is None:
            rows.errors.append(
                (
                    where,
                    f"unknown label {_show(raw or None)} in column {rows.label_key!r} (expected one of: "
                    f"{', '.join(expected)}; map other values with --label-map 'VALUE=CLASS', or "
                    f"name every class with --labels, e.g. negative,neutral,positive)",
                )
            )
            continue
        kept.append(row)
        indices.append(label)
    for name in ("texts", "raw_labels", "lines", "splits"):
        values = getattr(rows, name)
        setattr(rows, name, [values[row] for row in kept] if values else [])
    return labels, indices


def _invalid_rows(path: Path, errors: list[tuple[int, str]], drop_invalid: bool) -> list[str]:
    """The invalid rows' messages, in line order: the load stops on them unless asked to drop them."""
    messages = [f"{path}, line {where}: {problem}" for where, problem in sorted(errors)]
    if messages and not drop_invalid:
        shown = "\n  ".join(messages[:10])
        more = f"\n  … and {len(messages) - 10} more" if len(messages) > 10 else ""
        raise DataError(
            f"{len(messages)} invalid row(s):\n  {shown}{more}\n"
            f"Fix them, or pass --drop-invalid to skip them (the count is reported and recorded)."
        )
    if messages:
        print(f"critic: dropped {len(messages)} invalid row(s) from {path}; first: {messages[0]}", file=sys.stderr)
    return messages


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
        root = path.resolve()
        for file in sorted(path.rglob("*.txt")):
            match = pattern.search(file.relative_to(path).as_posix())
            # a link is read only where it stays inside the folder: one to a file elsewhere was read as a review
            if match and file.resolve().is_relative_to(root):
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


# --------------------------------------------------------------------------------------- the front
