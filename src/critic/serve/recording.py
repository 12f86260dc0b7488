"""`critic serve MODEL --store FILE`: the reviews the server answers "unsure", and a random share of the others,
sent to a labels store's queue, where the labelling page shows them to a person.

The server never waits for the store: answers go into a bounded queue that one thread writes in batches; when the
store falls behind, the newest are dropped and counted (critic_store_dropped_total), never the server's answers.
"""

from __future__ import annotations

import queue
import random
import threading

import numpy as np

MAX_WAITING = 10_000  # answers waiting for the store
WRITE_EVERY_S = 1.0


class StoreRecorder:
    def __init__(
        self, store, model: str, labels: list[str], unsure_below: float | None, sample: float = 0.02, seed=None
    ):
        """`unsure_below`: the confidence under which an answer counts as unsure, whatever the client asked
        (the threshold of `--store-min-accuracy`)."""
        self.store = store
        self.model = model
        self.labels = labels
        self.unsure_below = unsure_below
        self.sample = sample
        self.random = random.Random(seed)
        self.waiting: queue.Queue = queue.Queue(MAX_WAITING)
        self.recorded = self.dropped = 0
        self.failure: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, name="critic-store-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what waits, then stop."""
        self._stop.set()
        self._thread.join()

    def answered(self, texts: list[str], answers: list[str], probs: np.ndarray) -> None:
        """After each answer: the unsure ones (by the client's target or the recorder's), and a `sample` share of
        the others, to the queue."""
        for text, answer, p in zip(texts, answers, probs):
            best = int(np.argmax(p))
            if answer == "unsure" or (self.unsure_below is not None and p[best] < self.unsure_below):
                reason = "unsure"
            elif self.random.random() < self.sample:
                reason = "sample"
            else:
                continue
            try:
                self.waiting.put_nowait((text, reason, self.labels[best], float(p[best])))
            except queue.Full:
                self.dropped += 1

    def _write(self) -> None:
        while not (self._stop.is_set() and self.waiting.empty()):
            self._stop.wait(WRITE_EVERY_S)
            batch = []
            while not self.waiting.empty() and len(batch) < 1000:
                batch.append(self.waiting.get_nowait())
            if not batch:
                continue
            texts, reasons, suggestions, confidences = zip(*batch)
            try:
                self.recorded += self.store.enqueue(texts, reasons, self.model, suggestions, confidences)
                self.failure = None
            except Exception as error:  # the store is away (a locked file, a database restart): counted, said
                self.dropped += len(batch)
                self.failure = f"{type(error).__name__}: {error}"
