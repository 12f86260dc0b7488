"""The front of the data stage: a dataset read (named, a file or an aclImdb folder), validated, deduplicated and
split, as a Dataset whose `split` gives a split's rows; `load_dataset` for one split as a DataFrame."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from critic.data import catalogue, sources
from critic.data.reading import (
    LABEL_NAMES,
    NAMED_COLUMNS,
    Columns,
    DataError,
    Report,
    parse_label_map,
    parse_labels,
    read_table,
)
from critic.data.splits import SPLITS, assign_splits, assign_stratified_splits, dedupe, manifest


@dataclass
class Dataset:
    """A loaded dataset with every row's split, and the manifest that identifies it."""

    frame: pd.DataFrame  # text, label, split (and official_split for aclImdb)
    manifest: dict

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("labels", LABEL_NAMES))

    def split(self, name: str, size: int | None = None, seed: int = 42) -> pd.DataFrame:
        column = "official_split" if name.startswith("official-") else "split"
        key = name.removeprefix("official-")
        if name == "all":
            part = self.frame
        elif column not in self.frame or key not in set(self.frame[column]):
            raise DataError(self.missing(name))
        else:
            part = self.frame[self.frame[column] == key]
        if size is not None and size < len(part):
            part = part.sample(n=size, random_state=seed)
        return part[["text", "label"]].reset_index(drop=True)

    def missing(self, name: str) -> str:
        """Why a split has no rows, and what to do, for the error."""
        available = sorted(set(self.frame["split"]) | {f"official-{s}" for s in self.frame.get("official_split", [])})
        where = f"{self.manifest.get('source', 'the data')}: no review in the split '{name}'"
        if name not in SPLITS:
            return f"{where}; available: {', '.join(available)}, all"
        if self.manifest.get("split_from") == "store hash":
            return (
                f"{where}: a labels store holds no {name} split (its labels go 90% to training, 10% to validation); "
                f"evaluate on a labelled file (`critic evaluate MODEL FILE`) or on --split validation"
                if name == "test"
                else f"{where}: too few labelled reviews for a {name} split ({len(self.frame)}); label more"
            )
        if self.manifest.get("split_from") == "file":
            return (
                f"{where}: the file's split column names only {', '.join(available)}; mark some labelled rows "
                f"'{name}' (critic trains on train, validates on validation, tests on test)"
            )
        return (
            f"{where}: its {len(self.frame):,} reviews were split 80/10/10 by a hash of their text and none fell "
            f"there; add reviews, or give the file a split column (train, validation, test)"
        )


def load(
    data: str | Path = "imdb",
    columns: Columns = Columns(),
    drop_invalid: bool = False,
    log: Callable[[str], None] | None = None,
) -> Dataset:
    """Load a named dataset ('imdb') or a path, dedupe it and assign the deterministic 80/10/10 split.

    A file that already has a column `split` with train/validation/test values keeps its own split. A labels
    store (FILE.db or a database URL, data/store.py) gives its labelled reviews (`from_store`).
    """
    if is_store(data):
        return from_store(data, columns)
    if str(data) in catalogue.DATASETS:
        fetched = sources.fetch(catalogue.DATASETS[str(data)], log=log)
        (pinned,) = fetched.files
        named = NAMED_COLUMNS.get(str(data), Columns())
        frame, report = read_table(
            fetched.path / pinned,
            dataclasses.replace(named, labels=columns.labels or named.labels),
            drop_invalid=drop_invalid,
        )
        report.source = f"{data} ({fetched.source}; {pinned} sha256 {fetched.files[pinned]})"
    else:
        frame, report = read_table(data, columns, drop_invalid=drop_invalid)
    frame = dedupe(frame, report)
    split_from = "file"
    if "split" not in frame:  # a file with its own split column keeps it
        # More than two classes: stratified, so that a rare class reaches validation and test. Binary files keep
        # the plain hash split (balanced enough at their sizes) so that existing models' splits do not move.
        stratified = len(report.labels) > 2
        frame["split"] = assign_stratified_splits(frame) if stratified else assign_splits(frame["text"])
        split_from = "stratified hash" if stratified else "hash"
    return Dataset(frame, {**manifest(frame, report), "split_from": split_from})


STORE_SPLIT_DIGITS = slice(16, 24)  # of the sha256; fold_of takes 8-16, a file's split 0-8
# Labels are dear: 90% train, 10% validation (calibration, "not sure"), none held out for a test; the labelling
# page measures the model on its random picks instead, and `critic evaluate MODEL FILE` on any labelled file.
STORE_SPLIT_FRACTIONS = (0.9, 0.1, 0.0)
# A few dozen labels may put none in validation by hash (30 drugs labels did): the training reviews nearest the
# validation range make up this many, and go back to training as the hash's own validation reviews arrive.
STORE_MIN_VALIDATION = 3


def is_store(data: str | Path) -> bool:
    """Whether `data` names a labels store: a database URL, or a file ending .db, .sqlite or .sqlite3."""
    return "://" in str(data) or Path(str(data)).suffix.lower() in (".db", ".sqlite", ".sqlite3")


def from_store(where: str | Path, columns: Columns = Columns()) -> Dataset:
    """The labelled reviews of a labels store (each review's label by majority, then the latest), split 90/10 by a
    hash of their text alone: a review never changes split as labels arrive."""
    from critic.data import store  # SQLAlchemy, imported by the runs that read a store

    with store.opened(where) as labels_store:
        frame = labels_store.labelled()
        labels = labels_store.labels
    if columns.labels and tuple(columns.labels) != labels:
        raise DataError(f"{where} labels reviews as {', '.join(labels)}, not {', '.join(columns.labels)}")
    if frame["label"].nunique() < 2:
        raise DataError(
            f"{where}: {len(frame):,} labelled reviews, of {frame['label'].nunique()} class(es); a classifier needs "
            f"labels of at least two classes (`critic label` asks for them)"
        )
    report = Report(source=f"labels store {where}", rows_read=len(frame), labels=list(labels))
    frame = frame[["text", "label"]].reset_index(drop=True)
    frame["split"] = assign_splits(frame["text"], STORE_SPLIT_FRACTIONS, STORE_SPLIT_DIGITS)
    frame["split"] = with_validation(frame, STORE_MIN_VALIDATION)
    return Dataset(frame, {**manifest(frame, report), "split_from": "store hash"})


def with_validation(frame: pd.DataFrame, least: int) -> pd.Series:
    """The frame's splits with at least `least` validation reviews (a tenth of them, below 10 x `least`): where the
    hash gives fewer, the training reviews whose hash lies nearest the validation range are moved there."""
    from critic.data.splits import text_hash

    splits = frame["split"].copy()
    short = min(least, max(1, len(frame) // 10)) - int((splits == "validation").sum())
    if short <= 0:
        return splits
    nearest = frame["text"][splits == "train"].map(lambda t: int(text_hash(t)[STORE_SPLIT_DIGITS], 16) % 10_000)
    splits[nearest.sort_values(ascending=False, kind="stable").index[:short]] = "validation"
    return splits


def load_dataset(  # noqa: PLR0913 (public: each option a keyword of critic's API and a flag of its verbs)
    data: str | Path = "imdb",
    split: str = "train",
    size: int | None = None,
    seed: int = 42,
    text_column: str | None = None,
    label_column: str | None = None,
    label_map: dict[str, str] | str | None = None,
    drop_invalid: bool = False,
    labels: str | tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """`critic.load_dataset("imdb", split="train")` -> DataFrame with `text` and `label` (the class's index: 0
    negative, 1 positive for binary sentiment; `critic.data.load(...).labels` names the classes of other data).

    `split` is train, validation, test or all (official-train / official-test with the Stanford tarball);
    `size` takes a seeded random subset.
    """
    if isinstance(label_map, str):
        label_map = parse_label_map(label_map)
    if isinstance(labels, str):
        labels = parse_labels(labels)
    columns = Columns(text_column, label_column, label_map, labels)
    return load(data, columns, drop_invalid).split(split, size, seed)
