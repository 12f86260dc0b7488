"""The plan of a run's batches (grouped by length, of a fixed number of reviews or filled to a token budget, the
same on every process) and the batches made from it, padded and pinned in a background thread while the device
works."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from critic.config import LoopConfig
from critic.text import Ragged, length_grouped_batches, pad

ROWS_PER_TOKEN_BATCH = 4  # with token budgets, a batch of short reviews holds at most 4 x --batch-size of them


@dataclass
class Plan:
    """Every step of the run, decided up front: each epoch's global batches (rows of the training split). Under
    DDP every process walks the same plan and takes its share of each batch."""

    epochs: list[list[np.ndarray]]

    @property
    def steps(self) -> list[np.ndarray]:
        return [batch for epoch in self.epochs for batch in epoch]

    @property
    def total(self) -> int:
        return sum(len(epoch) for epoch in self.epochs)

    @property
    def epoch_ends(self) -> list[int]:
        return np.cumsum([len(epoch) for epoch in self.epochs]).tolist()

    def epoch_at(self, step: int) -> float:
        """Epochs done after `step` steps, with a fraction for a step inside an epoch."""
        start = 0
        for epoch, batches in enumerate(self.epochs):
            if step <= start + len(batches):
                return epoch + (step - start) / max(1, len(batches))
            start += len(batches)
        return float(len(self.epochs))


def plan_batches(lengths: np.ndarray, config: LoopConfig, world: int, by_tokens: bool, multiple: int) -> Plan:
    """Length-grouped global batches for every epoch: `batch_size` reviews per process, or, by tokens, as many
    reviews as fit in `batch_tokens` padded tokens per process (default: batch_size x max_length, the memory of
    a full batch of the longest reviews)."""
    epochs = []
    for epoch in range(config.epochs):
        if by_tokens:
            budget = (config.batch_tokens or config.batch_size * config.max_length) * world
            batches = length_grouped_batches(
                lengths,
                ROWS_PER_TOKEN_BATCH * config.batch_size * world,
                seed=config.seed + epoch,
                max_tokens=budget,
                multiple=multiple,
            )
        else:
            batches = length_grouped_batches(lengths, config.batch_size * world, seed=config.seed + epoch)
        epochs.append([b for b in batches if len(b) >= world])  # every process needs a share
    return Plan(epochs)


def prepared_batches(
    steps: Iterable[np.ndarray],
    inputs: Ragged,
    targets: dict[str, torch.Tensor],
    pad_id: int,
    multiple: int,
    rank: int,
    world: int,
    pin: bool,
) -> Iterator[tuple[dict, int, int]]:
    """(this process's padded share of each global batch, with the rows of each of `targets` (labels, a teacher's
    probabilities); the global batch's size, twice: its loss is a mean over its rows). With `pin` (a GPU) the
    batches are prepared in a background thread into pinned memory, so the copy to the GPU does not block."""

    def prepare_one(rows_global: np.ndarray) -> tuple[dict, int, int]:
        rows = np.array_split(rows_global, world)[rank]
        batch = pad(inputs, rows, pad_id, multiple)
        batch.update({name: values[torch.from_numpy(rows)] for name, values in targets.items()})
        return batch, len(rows_global), len(rows_global)

    return pinned_ahead(map(prepare_one, steps), pin)


def pinned_ahead(batches: Iterator[tuple[dict, int, int]], pin: bool) -> Iterator[tuple[dict, int, int]]:
    """With `pin` (a GPU): each (batch, count, rows) with its tensors in pinned memory, prepared up to 4 ahead in a
    background thread, so that the copy to the GPU does not block; without, `batches` as they are."""
    if not pin:
        return batches
    pinned = (({k: v.pin_memory() for k, v in batch.items()}, count, rows) for batch, count, rows in batches)
    return read_ahead(pinned, depth=4)


def read_ahead(items: Iterator, depth: int) -> Iterator:
    """Iterate `items` in a background thread, up to `depth` items ahead of the consumer."""
    producer = _Producer(items, depth)
    threading.Thread(target=producer.run, daemon=True, name="critic-batches").start()
    try:
        while True:
            kind, value = producer.ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        producer.stop.set()


class _Producer:
    """Puts ("item", x) for each of `items`, then ("end", None), or ("error", e); gives up once `stop` is set (the
    consumer left)."""

    def __init__(self, items: Iterator, depth: int):
        self.items = items
        self.ready: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            for item in self.items:
                if not self.put(("item", item)):
                    return
            self.put(("end", None))
        except BaseException as error:  # handed to the consumer, raised there
            self.put(("error", error))

    def put(self, message) -> bool:
        while not self.stop.is_set():
            try:
                self.ready.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
