"""Exact duplicates dropped, then splits by a hash of the text (the same review always lands in the same split,
whatever the file's order), stratified for rare classes; folds inside the training split; the data's manifest."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from critic.data.reading import Report

SPLITS = ("train", "validation", "test")


SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


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


def assign_splits(
    texts: pd.Series, fractions: tuple[float, float, float] = SPLIT_FRACTIONS, digits: slice = slice(0, 8)
) -> pd.Series:
    """Split by the sha256 of each text: independent of the source, its row order and the machine. `digits`: the
    part of the hash that decides (a labels store uses other digits than a file, so that reviews drawn from one
    split of a file spread over every split of the store)."""
    buckets = texts.map(lambda t: int(text_hash(t)[digits], 16) % 10_000)
    edges = (round(fractions[0] * 10_000), round((fractions[0] + fractions[1]) * 10_000))
    return pd.Series(
        pd.cut(buckets, [-1, edges[0] - 1, edges[1] - 1, 10_000], labels=SPLITS).astype(str), index=texts.index
    )


def assign_stratified_splits(frame: pd.DataFrame, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> pd.Series:
    """80/10/10 within each class, rows ordered by the sha256 of their text: every split keeps the class balance
    (a rare class is not left out of validation by chance), and the split is as reproducible as `assign_splits`."""
    splits = pd.Series("train", index=frame.index, dtype=object)
    for _, part in frame.groupby("label", sort=True):
        ordered = part["text"].map(text_hash).sort_values().index
        first = round(fractions[0] * len(ordered))
        second = first + max(round(fractions[1] * len(ordered)), 1 if len(ordered) >= 3 else 0)
        splits[ordered[first:second]] = "validation"
        splits[ordered[second : second + max(round(fractions[2] * len(ordered)), 1 if len(ordered) >= 3 else 0)]] = (
            "test"
        )
    return splits


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
        counts = part["label"].value_counts()
        splits[name] = {
            "rows": len(part),
            "classes": {label: int(counts.get(i, 0)) for i, label in enumerate(report.labels)},
            "texts_sha256": digest_texts(part["text"]),
        }
    return {**report.as_dict(), "splits": dict(sorted(splits.items()))}
