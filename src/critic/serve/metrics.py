"""The Prometheus series a server exports (/metrics)."""

from __future__ import annotations


class Metrics:
    """The Prometheus series the server exports, in a registry of its own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("critic_requests_total", "HTTP requests", ["path", "status"], registry=self.registry)
        self.latency = Histogram(
            "critic_request_seconds",
            "Request latency",
            ["path"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.batch_texts = Histogram(
            "critic_batch_texts",
            "Texts per scored batch",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.texts = Counter("critic_texts_total", "Texts scored", registry=self.registry)
        self.stages = Counter(
            "critic_answers_total",
            "Answers, by the stage that gave them (cheap: the cascade's)",
            ["stage"],
            registry=self.registry,
        )
        self.in_flight = Gauge("critic_requests_in_flight", "Requests being answered", ["path"], registry=self.registry)
        self.body_bytes = Gauge(
            "critic_request_body_bytes_held", "Bytes of request bodies held in memory", registry=self.registry
        )
        self.paths: set[str] = set()  # the app's routes; any other path is counted as "other"

    def record_store(self, recorder) -> None:
        """The labels store's share of the traffic: answers sent back, and those dropped."""
        from prometheus_client import Gauge

        sent = Gauge("critic_store_recorded_total", "Answers sent to the labels store", registry=self.registry)
        sent.set_function(lambda: recorder.recorded)
        dropped = Gauge("critic_store_dropped_total", "Answers the store could not take", registry=self.registry)
        dropped.set_function(lambda: recorder.dropped)

    def refused(self, path: str, status: int) -> None:
        """A request a guard answered before the app saw it."""
        self.requests.labels(path if path in self.paths else "other", str(status)).inc()

    def scored_batch(self, texts: int) -> None:
        self.batch_texts.observe(texts)
        self.texts.inc(texts)

    def answered(self, cheap) -> None:
        """Answers counted by the stage that gave them (`cheap`: a flag per text), and the cheap stage's among the
        texts scored (the model's are counted with their batch)."""
        answered_cheaply = int(cheap.sum())
        self.stages.labels("cheap").inc(answered_cheaply)
        self.stages.labels("model").inc(len(cheap) - answered_cheaply)
        self.texts.inc(answered_cheaply)
