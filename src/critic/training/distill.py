"""Distillation: a student (MiniLM by default) learns from a fine-tuned teacher's probabilities as well as from the
labels. The teacher scores the training reviews once (cached), whole through windows if asked, and the training
loop mixes its softened probabilities into the loss (fine_tuning.ClassificationLoss). The result is an ordinary
critic model.

Several teachers, trained with `--fold 1/N` … `--fold N/N`, teach out of fold: each scores the training reviews it
did not train on. A teacher scoring its own training reviews mostly repeats their labels (on one H200, 2026-11-27,
a fine-tuned MPNet agreed with 98.8% of them against 95.9% of the test reviews, and its student gained 0.2 points),
while out of fold it shows the student the reviews it finds hard."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from critic import data, modeling
from critic.config import TrainConfig, parse_fold
from critic.data import sources
from critic.training.fine_tuning import fine_tune
from critic.training.inputs import Teacher


def distill(
    config: TrainConfig,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    on_validation: Callable[[dict], None] | None = None,
) -> Path:
    """Fine-tune `config.model` with `config.teacher` as teacher; returns the student's folder."""
    if not config.teacher:
        raise ValueError("distill: name a teacher (a fine-tuned critic model folder)")
    teacher = teacher_for(config, log or (lambda line: None), progress)
    return fine_tune(config, log, progress, teacher=teacher, on_validation=on_validation)


def teacher_for(config: TrainConfig, say: Callable[[str], None], progress: bool = True) -> Teacher:
    folders = teacher_folders(config.teacher)
    if len(folders) == 1:
        return lambda texts, labels: teacher_probabilities(
            folders[0], texts, config.teacher_windows, say, progress, labels
        )
    by_fold = fold_teachers(folders)
    say(f"{len(by_fold)} teachers, out of fold: each scores the training reviews it did not train on")
    return lambda texts, labels: out_of_fold_probabilities(
        by_fold, texts, labels, config.teacher_windows, say, progress
    )


def teacher_folders(teacher: str) -> list[str]:
    """The folders that `--teacher` names: one, or several separated by commas."""
    return [folder.strip() for folder in teacher.split(",") if folder.strip()]


def teacher_meta_file(teacher: str) -> Path:
    """The teacher's critic.json; an error when the folder is not a critic model."""
    meta_file = Path(teacher) / modeling.META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{teacher}: not a critic model folder (train one with `critic train`)")
    return meta_file


def fold_teachers(folders: list[str]) -> list[str]:
    """Teachers trained with --fold 1/N … N/N, ordered by fold; an error names what is missing or extra."""
    folds = {}
    for folder in folders:
        teacher_meta_file(folder)  # an error for a folder that is not a critic model
        fold = (modeling.ModelRecord.read(folder).config or {}).get("fold")
        if not fold:
            raise ValueError(
                f"{folder} was not trained on a fold: out-of-fold probabilities need one model trained with "
                f"--fold K/N for each K = 1 … N"
            )
        folds[folder] = parse_fold(fold)
    counts = {n for _, n in folds.values()}
    n = max(counts)
    if len(counts) > 1 or sorted(k for k, _ in folds.values()) != list(range(1, n + 1)):
        found = ", ".join(f"{folder}: {k}/{m}" for folder, (k, m) in folds.items())
        raise ValueError(f"models' folds: {found}; out of fold needs one model for each of 1/{n} … {n}/{n}")
    return [folder for folder, _ in sorted(folds.items(), key=lambda item: item[1][0])]


class FoldModels:
    """Critic models trained with --fold 1/N … N/N as one scorer of the training reviews, each text scored by the
    model that held its fold out: the out-of-fold probabilities critic.data.label_issues reads (`OutOfFold`)."""

    def __init__(self, folders: str, say: Callable[[str], None], progress: bool = True):
        self.by_fold = fold_teachers(teacher_folders(folders))
        self.say, self.progress = say, progress
        n = len(self.by_fold)
        self.description = f"{n} critic models trained with --fold 1/{n} … {n}/{n}"

    def __call__(self, texts: list[str], labels: tuple[str, ...]) -> np.ndarray:
        return out_of_fold_probabilities(self.by_fold, texts, list(labels), False, self.say, self.progress)


def out_of_fold_probabilities(
    by_fold: list[str],
    texts: list[str],
    labels: list[str],
    windows: bool,
    say: Callable[[str], None],
    progress: bool = True,
) -> np.ndarray:
    """Each text's probabilities from the teacher that held its fold out (folds by text hash, as --fold makes
    them)."""
    fold = data.fold_of(pd.Series(texts, dtype=object), len(by_fold))
    probs = np.zeros((len(texts), len(labels)), np.float32)
    for index, folder in enumerate(by_fold):
        rows = np.flatnonzero(fold == index)
        if len(rows):
            probs[rows] = teacher_probabilities(folder, [texts[i] for i in rows], windows, say, progress, labels)
    return probs


def teacher_probabilities(
    teacher: str,
    texts: list[str],
    windows: bool,
    say: Callable[[str], None],
    progress: bool = True,
    labels: list[str] | None = None,
) -> np.ndarray:
    """The teacher's probabilities for `texts`, computed once and cached (a resumed or repeated run reads them).
    With `windows` the teacher reads every review whole, through overlapping windows."""
    from critic.inference.predict import Classifier

    folder = Path(teacher)
    meta_file = teacher_meta_file(teacher)
    with open(folder / "model.safetensors", "rb") as weights:
        head = weights.read(1 << 20)  # the header and first tensors: with critic.json, enough to tell models apart
    key = hashlib.sha256(
        meta_file.read_bytes() + head + f"{windows}".encode() + "\0".join(texts).encode("utf-8", "surrogateescape")
    ).hexdigest()
    cached = sources.cache_root() / "teachers" / f"{key[:32]}.npy"
    if cached.is_file():
        say(f"teacher probabilities from {cached}")
        return np.load(cached)
    # the teacher's own probabilities: through its cascade, the cheap stage would teach the reviews it is sure of
    classifier = Classifier.load(folder, long_reviews="windows" if windows else None, cascade=False)
    if labels is not None and classifier.labels != list(labels):
        raise ValueError(
            f"teacher {teacher} predicts {', '.join(classifier.labels)}; the student learns {', '.join(labels)}"
        )
    say(
        f"scoring {len(texts):,} training reviews with the teacher {teacher}"
        + (" (whole reviews, through windows)" if windows else "")
    )
    from tqdm.auto import tqdm

    with tqdm(
        total=len(texts), unit="review", desc="teacher", file=sys.stderr, mininterval=1.0, disable=not progress
    ) as bar:
        probs = classifier.predict_proba(texts, progress=bar).astype(np.float32)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial.npy")
    np.save(partial, probs)
    partial.replace(cached)
    return probs
