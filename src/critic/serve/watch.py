"""`critic serve --watch`: what the server sees, in /metrics and at GET /v1/watch — the share of its recent answers
that are unsure, their class mix against the validation split's, and a drift score of recent reviews against the
model's training reviews (inference/monitoring.py), with the warnings `critic monitor` gives for a file.

The shares cost nothing; the drift score is computed in a thread of its own every `drift_every` answers, on the
latest DRIFT_REVIEWS reviews (embedding 500 IMDB reviews takes some 10 s of a CPU core), and never delays an answer.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from critic.inference import monitoring

WINDOW = 1000  # the answers the shares are computed on
DRIFT_REVIEWS = 500


class TrafficWatch:
    def __init__(self, classifier, min_accuracy: float = 0.95, drift_every: int = 500, reference=None):
        self.classifier = classifier
        self.labels = list(classifier.labels)
        self.min_accuracy = min_accuracy
        self.unsure_below = classifier.unsure_below(min_accuracy)
        self.expected = monitoring.validation_mix(classifier.record)
        self.drift_every = drift_every if reference is not None else 0
        self.reference = reference
        self.answers: deque = deque(maxlen=WINDOW)  # (confidence, class index)
        self.recent: deque = deque(maxlen=DRIFT_REVIEWS)
        self.since_drift = 0
        self.drift: float | None = None
        self.drift_error: str | None = None
        self._computing = threading.Lock()
        self._thread: threading.Thread | None = None

    def answered(self, texts: list[str], probs: np.ndarray) -> None:
        for text, p in zip(texts, probs):
            self.answers.append((float(p.max()), int(p.argmax())))
            if self.drift_every:
                self.recent.append(text)
        self.since_drift += len(texts)
        if self.drift_every and self.since_drift >= self.drift_every and not self._computing.locked():
            self.since_drift = 0
            self._thread = threading.Thread(target=self._score_drift, args=(list(self.recent),), daemon=True)
            self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Until the drift score being computed (if any) is in."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _score_drift(self, texts: list[str]) -> None:
        if not self._computing.acquire(blocking=False):
            return
        try:
            self.drift = monitoring.drift_score(self.reference, monitoring.embed(self.classifier, texts))
            self.drift_error = None
        except Exception as error:  # said in /v1/watch; the server goes on
            self.drift_error = f"{type(error).__name__}: {error}"
        finally:
            self._computing.release()

    def unsure_share(self) -> float | None:
        if not self.answers or self.unsure_below is None:
            return None
        return float(np.mean([confidence < self.unsure_below for confidence, _ in self.answers]))

    def mix(self) -> dict[str, float]:
        counts = np.bincount([label for _, label in self.answers], minlength=len(self.labels))
        return {name: float(count / max(len(self.answers), 1)) for name, count in zip(self.labels, counts)}

    def state(self) -> dict:
        unsure, mix = self.unsure_share(), self.mix()
        return {
            "answers": len(self.answers),
            "min_accuracy": self.min_accuracy,
            "unsure_share": unsure,
            "class_mix": mix,
            "validation_mix": self.expected,
            "drift_auc": self.drift,
            "drift_every": self.drift_every,
            "drift_error": self.drift_error,
            "warnings": monitoring.warnings(unsure, mix if self.answers else {}, self.expected, self.drift),
        }

    def export(self, registry) -> None:
        """The watch's figures as Prometheus gauges in `registry`."""
        from prometheus_client import Gauge

        unsure = Gauge(
            "critic_unsure_share", "Share of the recent answers below the unsure threshold", registry=registry
        )
        unsure.set_function(lambda: self.unsure_share() or 0.0)
        answered = Gauge("critic_answer_share", "Share of the recent answers per class", ["label"], registry=registry)
        expected = Gauge(
            "critic_validation_share", "Share of the validation split per class", ["label"], registry=registry
        )
        for name in self.labels:
            answered.labels(name).set_function(lambda name=name: self.mix()[name])
            expected.labels(name).set((self.expected or {}).get(name, float("nan")))
        drift = Gauge(
            "critic_drift_auc", "Drift of recent reviews from the training reviews (0.5: none)", registry=registry
        )
        drift.set_function(lambda: self.drift if self.drift is not None else float("nan"))
