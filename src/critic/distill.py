"""Distillation: a student (MiniLM by default) learns from a fine-tuned teacher's probabilities as well as from the
labels. The teacher scores the training reviews once (cached), whole through windows if asked, and the training
loop mixes its softened probabilities into the loss (train.Objective). The result is an ordinary critic model."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from critic import model as modelling, sources
from critic.config import TrainConfig
from critic.train import Teacher, train


def distill(config: TrainConfig, log: Callable[[str], None] | None = None, progress: bool = True) -> Path:
    """Train `config.model` with `config.teacher` as teacher; returns the student's folder."""
    if not config.teacher:
        raise ValueError("distill: name a teacher (a fine-tuned critic model folder)")
    return train(config, log, progress, teacher=teacher_for(config, log or (lambda line: None), progress))


def teacher_for(config: TrainConfig, say: Callable[[str], None], progress: bool = True) -> Teacher:
    return lambda texts, labels: teacher_probabilities(config.teacher, texts, config.teacher_windows, say, progress,
                                                       labels)


def teacher_probabilities(teacher: str, texts: list[str], windows: bool, say: Callable[[str], None],
                          progress: bool = True, labels: list[str] | None = None) -> np.ndarray:
    """The teacher's probabilities for `texts`, computed once and cached (a resumed or repeated run reads them).
    With `windows` the teacher reads every review whole, through overlapping windows."""
    from critic.predict import Classifier

    folder = Path(teacher)
    meta_file = folder / modelling.META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"teacher {teacher}: not a critic model folder (train one with `critic train`)")
    with open(folder / "model.safetensors", "rb") as weights:
        head = weights.read(1 << 20)  # the header and first tensors: with critic.json, enough to tell models apart
    key = hashlib.sha256(meta_file.read_bytes() + head + f"{windows}".encode()
                         + "\0".join(texts).encode("utf-8", "surrogateescape")).hexdigest()
    cached = sources.cache_root() / "teachers" / f"{key[:32]}.npy"
    if cached.is_file():
        say(f"teacher probabilities from {cached}")
        return np.load(cached)
    classifier = Classifier.load(folder, long_reviews="windows" if windows else None)
    if labels is not None and classifier.labels != list(labels):
        raise ValueError(f"teacher {teacher} predicts {', '.join(classifier.labels)}; the student learns "
                         f"{', '.join(labels)}")
    say(f"scoring {len(texts):,} training reviews with the teacher {teacher}"
        + (" (whole reviews, through windows)" if windows else ""))
    from tqdm.auto import tqdm

    with tqdm(total=len(texts), unit="review", desc="teacher", file=sys.stderr, mininterval=1.0,
              disable=not progress) as bar:
        probs = classifier.predict_proba(texts, progress=bar).astype(np.float32)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial.npy")
    np.save(partial, probs)
    partial.replace(cached)
    return probs
