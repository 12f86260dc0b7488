"""Cleaning and tokenization in worker processes, so that the host keeps up with a GPU.

Per review the host cleans (Python regexes), tokenizes (the fast tokenizer, in Rust) and turns the ids into an array
(Python). In one process the first and last hold the GIL, so threads do not help them: 15,700 reviews/s for the
cleaning and 69,000/s for the arrays, about 80 µs a review, beside 3,100/s for the tokenizer on its 2 threads
(MiniLM, 256 tokens, 2 AMD EPYC cores, 2026-12-02; bench/scoring_stages.py). A worker process does all three at
1,760/s, and 2 did 3,000/s: 20,000 reviews/s, what an H200 should score MiniLM at, take about 12 of them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from critic.text import Encoder, Ragged, token_ids

MIN_PIECE = 64  # texts per task: fewer, and sending them costs more than encoding them


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_workers(device_type: str) -> int:
    """Worker processes for a device: on a GPU every core but the model's own and the one that feeds the workers;
    none on a CPU, whose cores the model needs (there the next chunk is tokenized in a thread while this one is
    scored: MiniLM at 256 tokens scores 45 reviews/s on 2 AMD EPYC cores, while the host's part runs at 3,000/s)."""
    if device_type == "cpu":
        return 0
    cores = usable_cores()
    return cores - 2 if cores >= 4 else 0


def resolve_workers(workers: int | str, device_type: str) -> int:
    """A number of encoder workers as given (`auto`: `auto_workers`), checked."""
    if workers == "auto":
        return auto_workers(device_type)
    try:
        count = int(workers)
    except ValueError:
        count = -1
    if count < 0:
        raise ValueError(f"encoder workers {workers!r}: give a number of processes (0: none) or 'auto'")
    return count


class EncoderPool:
    """`encode(texts, cleaning)` as `Encoder.encode` over the cleaned texts gives it, computed by `workers`
    processes (spawned, so safe beside CUDA); started at the first call, stopped by `close()` or at exit."""

    def __init__(self, encoder: Encoder, workers: int):
        if workers < 1:
            raise ValueError(f"an encoder pool needs at least one worker, not {workers}")
        self.tokenizer_json = encoder.backend.to_str()
        self.workers = workers
        self._pool = None

    def encode(self, texts: Sequence[str], cleaning: str) -> Ragged:
        """Every token of every text cleaned by the recipe `cleaning`, in order."""
        texts = list(texts)
        piece = max(MIN_PIECE, math.ceil(len(texts) / self.workers))
        tasks = [(texts[start : start + piece], cleaning) for start in range(0, len(texts), piece)]
        return join(list(self.pool().map(encode_in_worker, tasks)))

    def pool(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=start_worker,
                initargs=(self.tokenizer_json,),
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def join(parts: list[Ragged]) -> Ragged:
    """One Ragged from the workers' parts, in order."""
    if not parts:
        return Ragged.from_pieces([])
    lengths = np.concatenate([part.lengths for part in parts])
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Ragged(np.concatenate([part.ids for part in parts]), offsets)


_tokenizer = None  # this worker process's


def start_worker(tokenizer_json: str) -> None:
    # One tokenizer thread per worker: the workers are the parallelism (set before the tokenizer first runs).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    global _tokenizer
    _tokenizer = Tokenizer.from_str(tokenizer_json)


def encode_in_worker(task: tuple[list[str], str]) -> Ragged:
    from critic.data import cleaner

    texts, cleaning = task
    clean = cleaner(cleaning)
    return token_ids(_tokenizer, [clean(t) for t in texts])
