"""Scoring's stages, each timed alone on the same reviews, so that the slowest is named: cleaning, tokenization and
the ids' arrays in the model's process; the same three in the encoder's worker processes (1, 2, ... of them);
framing and padding the batches; the copy to the device; the model with its copies. Then scoring whole, as
`Classifier.predict_proba` does it, with and without the workers. Rates are reviews per second."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from benchlib.harness import sync
from critic import data
from critic.inference import encoding
from critic.modeling.runtime import device_batch
from critic.text import frame_all, pad, sorted_batches


def rate(count: int, work: Callable[[], object], device: torch.device | None = None) -> float:
    started = time.perf_counter()
    work()
    if device is not None:
        sync(device)
    return count / (time.perf_counter() - started)


def worker_counts(most: int) -> list[int]:
    """1, 2, 4, ... up to `most`, and `most` itself."""
    counts, n = [], 1
    while n < most:
        counts.append(n)
        n *= 2
    return counts + [most]


def in_process(clf, texts: list[str]) -> dict:
    clean = data.cleaner(clf.cleaning)
    cleaned: list[str] = []
    encodings: list = []
    figures = {"clean": rate(len(texts), lambda: cleaned.extend(clean(t) for t in texts))}
    backend = clf.encoder.backend
    figures["tokenize"] = rate(
        len(texts), lambda: encodings.extend(backend.encode_batch_fast(cleaned, add_special_tokens=False))
    )
    figures["ids"] = rate(len(texts), lambda: [np.asarray(e.ids, dtype=np.int32) for e in encodings])
    return figures


def in_workers(clf, texts: list[str], most: int) -> dict:
    """The encoder's worker processes at 1, 2, ... `most` workers (each started and warmed before it is timed)."""
    figures = {}
    for count in worker_counts(most):
        pool = encoding.EncoderPool(clf.encoder, count)
        try:
            pool.encode(texts[: encoding.MIN_PIECE * count], clf.cleaning)  # start every worker
            figures[str(count)] = rate(len(texts), lambda pool=pool: pool.encode(texts, clf.cleaning))
        finally:
            pool.close()
    return figures


def batches_and_device(clf, texts: list[str]) -> dict:
    """Framing and padding the token-budget batches on the host; their copy to the device; the model (its copies
    included, as scoring runs it)."""
    tokens = clf.encode(texts)
    padded: list[dict] = []

    def frame_and_pad() -> None:
        framed = frame_all(clf.encoder, tokens, clf.truncation)
        for rows in sorted_batches(framed.lengths, clf.max_tokens):
            padded.append(pad(framed, rows, clf.encoder.pad_id, clf.pad_multiple))

    figures = {"frame_and_pad": rate(len(texts), frame_and_pad)}
    if clf.device.type != "cpu":
        figures["copy"] = rate(len(texts), lambda: [device_batch(clf.model, b, clf.device) for b in padded], clf.device)
    clf.forward(padded[0])  # warm-up
    figures["model"] = rate(len(texts), lambda: [clf.forward(b) for b in padded], clf.device)
    return figures


def whole(clf, texts: list[str], workers: int) -> dict:
    """`predict_proba` as a user calls it: in one process, and with `workers` encoder processes."""
    kept, clf.encoder_pool = clf.encoder_pool, None
    try:
        clf.predict_proba(texts[:256])  # warm-up
        figures = {"one_process": rate(len(texts), lambda: clf.predict_proba(texts), clf.device)}
        if workers:
            clf.encoder_pool = encoding.EncoderPool(clf.encoder, workers)
            clf.predict_proba(texts[: encoding.MIN_PIECE * workers * 2])  # start every worker
            figures[f"{workers}_workers"] = rate(len(texts), lambda: clf.predict_proba(texts), clf.device)
    finally:
        if clf.encoder_pool is not None and clf.encoder_pool is not kept:
            clf.encoder_pool.close()
        clf.encoder_pool = kept
    return figures


def measure(clf, texts: list[str], workers: int) -> dict:
    """Every stage's rate, the slowest named (with the encoder's `workers` processes where there are any), and
    scoring whole."""
    host = in_process(clf, texts)
    figures = {"in_process": host, "workers": in_workers(clf, texts, workers) if workers else {}}
    figures.update(batches_and_device(clf, texts))
    one_process = 1.0 / sum(1.0 / host[k] for k in ("clean", "tokenize", "ids"))
    stages = {
        "encode": max([one_process, *figures["workers"].values()]),
        **{k: figures[k] for k in ("frame_and_pad", "copy", "model") if k in figures},
    }
    figures["stages"] = stages
    figures["slowest"] = min(stages, key=stages.get)
    figures["whole"] = whole(clf, texts, workers)
    return figures


def lines(figures: dict) -> list[str]:
    """The figures as a reader wants them: one line per stage, the slowest marked."""
    host = figures["in_process"]
    out = [
        "in the model's process: "
        + ", ".join(f"{k} {host[k]:,.0f}/s" for k in ("clean", "tokenize", "ids"))
        + " (tokenize: the fast tokenizer's own threads)"
    ]
    if figures["workers"]:
        out.append(
            "clean + tokenize + ids in worker processes: "
            + ", ".join(f"{n} {'worker' if n == '1' else 'workers'} {r:,.0f}/s" for n, r in figures["workers"].items())
        )
    for stage, value in figures["stages"].items():
        out.append(
            f"{stage:>14}: {value:>10,.0f} reviews/s" + ("   <- the slowest" if stage == figures["slowest"] else "")
        )
    out.append("scoring whole: " + ", ".join(f"{k.replace('_', ' ')} {v:,.0f}/s" for k, v in figures["whole"].items()))
    return out
