"""The front of the data stage: a dataset read (named, a file or an aclImdb folder), validated, deduplicated and
split, as a Dataset whose `split` gives a split's rows; `load_dataset` for one split as a DataFrame."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from critic.data import sources
from critic.data.reading import (
    LABEL_NAMES,
    NAMED_COLUMNS,
    Columns,
    DataError,
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

    A file that already has a column `split` with train/validation/test values keeps its own split.
    """
    if str(data) in sources.DATASETS:
        fetched = sources.fetch(sources.DATASETS[str(data)], log=log)
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


def load_dataset(
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
