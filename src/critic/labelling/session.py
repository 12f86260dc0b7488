"""A labelling session: the store, the current model, what to ask next, and the next model trained in the
background. The HTTP routes (serve/labelling.py) and scripts drive it through `next`, `label`, `undo`, `retrain`
and `status`; none of them waits on a model: the pool is scored when a model arrives, and `next` hands out what
that scoring planned.

Order of what `next` hands out: the reviews a server sent back (unsure first, then its random sample), then the
active-learning batch (selection.py). A review handed to one annotator is not handed to another for LEASE_S unless
the pool has nothing else.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from critic.data.store import Store, StoreError
from critic.evaluation.metrics import clopper_pearson
from critic.labelling import selection

LEASE_S = 600.0
# The pool is scored with long reviews cut: ranking the pool needs no windows, and scoring 1,000 IMDB reviews takes
# half the time (MiniLM, bf16, 2 AMD EPYC Zen 4 cores: 43 reviews/s cut, 22 through windows, 2026-12-06).
POOL_LONG_REVIEWS = "truncate"
# Of each batch, the labelled reviews whose label the current model contradicts (cleanlab), asked again: a second
# opinion, kept beside the first (training takes the majority, then the latest). Among the latest SECOND_LOOK_POOL
# (each of them scored with every plan: 200 is about 5 s on 2 CPU cores).
SECOND_LOOK_SHARE, SECOND_LOOK_POOL = 0.05, 200
SECOND_LOOK = "second look: the model doubts its label"


# The loop's own `critic train` flag for every retrain: no cascade (the loop's models score the pool and second looks
# with the model itself).
RETRAIN_ARGS = ("--no-cascade",)
# Below 200 labels a class (the few-label path) the encoder is tuned on the labels' pairs in a 128-token window, two
# passes over them, one past PAIR_PASSES // 2 training reviews (half that on a CPU computing in fp32) so that a
# retrain stays near a minute. 380 random IMDB labels, 1,000 test reviews, 2 AMD EPYC Zen 4 cores, 2026-12-07: 85.1%
# in 54 s (the whole `critic train`, bf16) against 75.7% in 25 s with the encoder kept (--pair-epochs 0), and 85.4%
# in 97 s at 256 tokens; in fp32 two passes took 80.5 s, one 47.5 s for 83.2%.
PAIR_PASSES = 800


@dataclass
class LoopSettings:
    """How the loop runs: the encoder a retrain starts from, when it retrains, what it scores."""

    base_model: str = "minilm"
    retrain_every: int = 50  # new labels; 0: only when asked
    min_per_class: int = 4  # labels of each class before the first retrain
    batch: int = 20  # reviews planned at a time
    plan_ahead: bool = True  # plan again in the background when a plan runs low (off: only with each new model)
    pool_sample: int = 1000  # unlabelled reviews scored per round (a seeded sample of a larger pool)
    models: Path | None = None  # where retrained models go (default: beside the store)
    # More `critic train` flags for a retrain (`critic label --train-arg`): after the loop's own, which they override.
    train_args: list[str] = field(default_factory=list)
    # When `critic train` will fine-tune (enough labels in every class): a window of 128 tokens. 1,000 IMDB
    # labels, 2 AMD EPYC Zen 4 cores, 2026-12-06: 68 s against 102 s at 256 tokens, and 82.6% against 82.5% on
    # 1,000 test reviews (MiniLM's sentence training used 128 too). And batches of 8: the same reviews in twice the
    # steps. At 600 random labels (1 epoch, 1,000 test reviews, the same machine and day) batches of 16 gave 56.1,
    # 67.6 and 59.7% over three training seeds, and a loop's model at 800 labels answered one class (49.0%); batches
    # of 8 gave 78.2 and 81.5% in the same time. And a third of the layers kept as pretrained (`frozen_args`).
    # A model for keeps: `critic train --data STORE`.
    fine_tune_args: list[str] = field(default_factory=lambda: ["--max-length", "128", "--batch-size", "8"])
    seed: int = 0

    def retrain_args(self, store: str) -> list[str]:
        """The `critic train` flags of a retrain from this store now."""
        from critic import data
        from critic.config import TrainConfig
        from critic.training import few_labels

        config, dataset = TrainConfig(data=store, model=self.base_model), data.load(store)
        if self.fine_tune_args and not few_labels.wanted(config, dataset):
            return [*self.fine_tune_args, *self.frozen_args(), *RETRAIN_ARGS, *self.train_args]  # the last flag stands
        return [*self.pair_args(len(dataset.split("train"))), *RETRAIN_ARGS, *self.train_args]

    def pair_args(self, training_reviews: int) -> list[str]:
        """A few-label retrain's pair stage: two passes over the labelled training reviews, one past the budget."""
        from critic import modeling

        computes_in = modeling.resolve_precision("auto", modeling.resolve_device())  # as `critic train` will
        budget = PAIR_PASSES if computes_in != "fp32" else PAIR_PASSES // 2
        passes = 2 if 2 * training_reviews <= budget else 1
        return ["--max-length", "128", "--pair-epochs", str(passes)]

    def frozen_args(self) -> list[str]:
        """A fine-tuning retrain keeps the embeddings and the lowest third of the encoder's layers as pretrained (2
        of MiniLM's 6), their dropout off. 1,000 IMDB labels, 2 AMD EPYC Zen 3 cores in fp32, 2026-12-07: 84.2%
        against 82.7% with everything learning on 1,000 test reviews (6 and 3 seeds), the new model in use 86-91 s
        after the retrain began against 144 s (3 kept: 83.5%, 84 s; docs/benchmarks.md)."""
        from transformers import AutoConfig

        from critic.data import catalogue
        from critic.presets import lowest_third

        kept = lowest_third(AutoConfig.from_pretrained(catalogue.resolve_model(self.base_model)).num_hidden_layers)
        return ["--frozen-layers", str(kept)] if kept else []


@dataclass
class Planned:
    review_id: int
    reason: str
    suggestion: str | None = None
    confidence: float | None = None
    probabilities: dict | None = None
    model: str | None = None  # whose suggestion; None: the session's current model


@dataclass
class RetrainState:
    running: bool = False
    round: int = 0
    started: float | None = None
    last_error: str | None = None
    last_seconds: float | None = None  # from the start to the new model's first plan
    model_seconds: float | None = None  # from the start to the new model in use (suggestions, `why`)
    labels_at_last: int = 0


class LabelSession:
    def __init__(self, store: Store, classifier=None, settings: LoopSettings | None = None):
        self.store = store
        self.settings = settings or LoopSettings()
        self.classifier = classifier
        self.model_name = _model_id(classifier)
        self.lock = threading.RLock()
        self.plan: list[Planned] = []
        self.leases: dict[int, float] = {}  # review id -> when handed out
        self.handed: dict[int, Planned] = {}  # review id -> what was shown with it, for the label's record
        self.retraining = RetrainState(labels_at_last=self.labels_given())
        self.models = Path(self.settings.models or _beside(store))
        self.features: dict[int, np.ndarray] = {}
        self._thread: threading.Thread | None = None
        self._planning = False
        self._plans = 0
        self._explaining = threading.Lock()

    # --------------------------------------------------------------------------------------------- planning

    def start(self) -> None:
        """The text features of the pool, and the first plan (scored by the model, if there is one)."""
        reviews = self.store.reviews()
        if len(reviews):
            vectors = selection.text_features(list(reviews["text"]), self.settings.seed)
            self.features = dict(zip(reviews["id"], vectors))
        self.replan()

    def replan(self) -> None:
        """A new batch: the unlabelled pool (a seeded sample of it) scored by the current model, then picked."""
        pool = [i for i in self.store.unlabelled_ids() if i in self.features]
        self._plans += 1  # each plan its own sample of a large pool
        rng = np.random.default_rng([self.settings.seed, self.retraining.round, self._plans])
        if len(pool) > self.settings.pool_sample:
            pool = sorted(rng.choice(pool, self.settings.pool_sample, replace=False).tolist())
        if not pool:
            with self.lock:
                self.plan = []
            return
        texts = self.store.texts(pool)
        probs = self.classifier.predict_proba(texts) if self.classifier is not None else None
        labels = list(self.store.labels)
        counts = list(self.store.counts().values()) if labels else None
        picks = selection.pick(
            self.settings.batch,
            np.stack([self.features[i] for i in pool]),
            probs,
            counts,
            labels,
            seed=int(rng.integers(2**31)),
            embeddings=None if probs is None or selection.uncertain_pays(counts) else self._embeddings(texts),
        )
        plan = [self._planned(pool[p.position], p.reason, None if probs is None else probs[p.position]) for p in picks]
        plan += self.second_looks(int(round(self.settings.batch * SECOND_LOOK_SHARE)))
        with self.lock:
            self.plan = plan

    def _embeddings(self, texts: list[str]) -> np.ndarray:
        """The current model's embeddings of the pool sample, for the typicality of its picks (below
        selection.UNCERTAIN_FROM labels a class): a second pass of the encoder over it, 17.5 s for 1,000 IMDB reviews
        against 18.4 s to score them (2 AMD EPYC Zen 3 cores, fp32, 2026-12-07)."""
        from critic.inference import monitoring

        return monitoring.embed(self.classifier, texts)

    def second_looks(self, count: int) -> list[Planned]:
        """Up to `count` reviews labelled once whose label the current model contradicts, the most suspicious
        first (cleanlab's confident learning on the model's probabilities)."""
        if count <= 0 or self.classifier is None:
            return []
        from critic.data import label_issues

        labelled = self.store.labelled()
        once = labelled[labelled["votes"] == 1].tail(SECOND_LOOK_POOL).reset_index(drop=True)
        if len(once) < 20 or list(self.classifier.labels) != list(self.store.labels):
            return []
        probs = self.classifier.predict_proba(once["text"].tolist())
        try:
            found = label_issues.flag(once["label"].to_numpy(), probs, tuple(self.store.labels)).head(count)
        except ValueError:  # a class too rare for cleanlab's thresholds yet
            return []
        return [self._planned(int(once["id"][row]), SECOND_LOOK, probs[row]) for row in found["row"]]

    def _planned(self, review_id: int, reason: str, probs) -> Planned:
        if probs is None:
            return Planned(review_id, reason)
        names = self.classifier.labels
        best = int(np.argmax(probs))
        return Planned(
            review_id, reason, names[best], float(probs[best]), {n: round(float(p), 4) for n, p in zip(names, probs)}
        )

    # ---------------------------------------------------------------------------------------------- asking

    def next(self, count: int = 1) -> list[dict]:
        """Up to `count` reviews to label: the server's queue first, then the plan (while the next plan is made,
        random reviews); each with its text, the model's suggestion and confidence, and why it was picked."""
        queued = self.store.queued()
        with self.lock:
            planned_ids = [p.review_id for p in self.plan]
            second_looks = [p.review_id for p in self.plan if p.reason == SECOND_LOOK]
        waiting = set(self.store.unlabelled_ids(among=planned_ids)) | set(queued["review_id"].tolist())
        votes = self.store.votes(second_looks)  # a second look is asked while its review has one label
        now = time.monotonic()
        with self.lock:
            planned = [
                p
                for p in self.plan
                if p.review_id in waiting or (p.reason == SECOND_LOOK and votes.get(p.review_id, 0) == 1)
            ]
            candidates = [
                Planned(
                    int(row.review_id),
                    f"{row.reason} in serving ({row.model})",
                    row.suggestion,
                    row.confidence,
                    model=row.model,
                )
                for row in queued.itertuples()
            ] + planned
            free = [p for p in candidates if now - self.leases.get(p.review_id, -LEASE_S) >= LEASE_S]
            chosen = (free or candidates)[:count]
            if len(chosen) < count:  # the plan and the queue ran out: any unlabelled review
                left = set(self.store.unlabelled_ids()) - {p.review_id for p in candidates}
                chosen += self._stopgap(count - len(chosen), left, now)
            for item in chosen:
                self.leases[item.review_id] = now
                self.handed[item.review_id] = item
            self._plan_ahead(len(planned) - len(chosen) <= max(count, self.settings.batch // 2))
        texts = self.store.texts([p.review_id for p in chosen])
        return [
            {
                "id": p.review_id,
                "text": text,
                "suggestion": p.suggestion,
                "confidence": p.confidence,
                "probabilities": p.probabilities,
                "reason": p.reason,
            }
            for p, text in zip(chosen, texts)
        ]

    def _stopgap(self, count: int, left: set[int], now: float) -> list[Planned]:
        """Random reviews not handed out, scored now (a handful: milliseconds), while the next plan is made."""
        free = sorted(i for i in left if now - self.leases.get(i, -LEASE_S) >= LEASE_S)
        if not free:
            return []
        rng = np.random.default_rng(int(now * 1000) % 2**31)
        ids = [int(i) for i in rng.choice(free, size=min(count, len(free)), replace=False)]
        probs = (
            self.classifier.predict_proba(self.store.texts(ids)) if self.classifier is not None else [None] * len(ids)
        )
        return [self._planned(i, "random", p) for i, p in zip(ids, probs)]

    def _plan_ahead(self, running_low: bool) -> None:
        """The next plan, made in the background when this one runs low (one at a time; not during a retrain,
        which plans when its model is ready)."""
        if running_low and self.settings.plan_ahead and not self._planning and not self.retraining.running:
            self._planning = True
            threading.Thread(target=self._replan_quietly, daemon=True).start()

    def _replan_quietly(self) -> None:
        try:
            self.replan()
        except Exception as error:  # the plan stays as it was; status says why
            self.retraining.last_error = f"planning: {type(error).__name__}: {error}"
        finally:
            self._planning = False

    def why(self, review_id: int) -> dict | None:
        """The words that pushed the current model's suggestion for a review (integrated gradients; about a second
        on a CPU, one at a time), or None without a model."""
        from critic.inference.explain import explain

        with self.lock:
            classifier = self.classifier
        if classifier is None:
            return None
        (text,) = self.store.texts([review_id])
        with self._explaining:
            return explain(classifier, text).as_dict()

    # ------------------------------------------------------------------------------------------- labelling

    def label(self, review_id: int, label: str, annotator: str) -> int:
        """Record a label (committed before this returns); a retrain starts every `retrain_every` new labels."""
        shown = self._shown(review_id)
        label_id = self.store.add_label(review_id, label, annotator, origin=self._origin(review_id), shown=shown)
        with self.lock:
            self.leases.pop(review_id, None)
            self.handed.pop(review_id, None)
        every = self.settings.retrain_every
        if every and self.labels_given() - self.retraining.labels_at_last >= every and self._enough_per_class():
            self.retrain()
        return label_id

    def undo(self, label_id: int, annotator: str) -> int:
        return self.store.undo(label_id, annotator)

    def _shown(self, review_id: int) -> dict:
        """What was shown with a review when it was handed out (or is planned): the model, its suggestion and
        confidence, and why it was picked."""
        with self.lock:
            shown = self.handed.get(review_id) or next((p for p in self.plan if p.review_id == review_id), None)
        if shown is None:
            return {"model": self.model_name}
        return {
            "model": shown.model or self.model_name,
            "suggestion": shown.suggestion,
            "confidence": shown.confidence,
            "picked_for": shown.reason.split(" in serving")[0],
        }

    def _origin(self, review_id: int) -> str:
        queued = self.store.queued()
        return "correction" if (queued["review_id"] == review_id).any() else "person"

    def labels_given(self) -> int:
        return self.store.label_count()

    def _enough_per_class(self) -> bool:
        counts = self.store.counts()
        return len(counts) >= 2 and min(counts.values()) >= self.settings.min_per_class

    # ------------------------------------------------------------------------------------------ retraining

    def retrain(self) -> bool:
        """Start training the next model from the store's labels in the background; False if one is running."""
        with self.lock:
            if self.retraining.running:
                return False
            self.retraining.running = True
            self.retraining.round += 1
            self.retraining.started = time.time()
            self.retraining.labels_at_last = self.labels_given()
        self._thread = threading.Thread(target=self._retrain, daemon=True)
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Until the running retrain (if any) has finished and its model is in use."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _retrain(self) -> None:
        output = self.models / f"round-{self.retraining.round:03d}"
        started = time.monotonic()
        try:
            trained = train_in_process(self.store.name, self.settings, output)
            from critic.inference.predict import Classifier

            classifier = Classifier.load(trained, long_reviews=POOL_LONG_REVIEWS)
            with self.lock:
                self.classifier, self.model_name = classifier, _model_id(classifier)
            self.retraining.model_seconds = time.monotonic() - started
            self.replan()
            self.retraining.last_error = None
        except Exception as error:  # the last model stays; status says why
            self.retraining.last_error = f"round {self.retraining.round}: {error}"
        finally:
            self.retraining.last_seconds = time.monotonic() - started
            self.retraining.running = False

    # ---------------------------------------------------------------------------------------------- status

    def status(self) -> dict:
        """Labels per class, disagreements, the current model and its accuracy estimate, the retrain."""
        history = self.store.history()
        labelled = self.store.labelled(texts=False)
        counted = Counter(labelled["label"])
        return {
            "labels": list(self.store.labels),
            "per_class": {name: counted.get(i, 0) for i, name in enumerate(self.store.labels)},
            "labels_given": len(history),
            "reviews": self.store.review_count(),
            "unlabelled": len(self.store.unlabelled_ids()),
            "queued": len(self.store.queued()),
            "disagreements": int(labelled["disagree"].sum()) if len(labelled) else 0,
            "model": self.model_name,
            "accuracy": accuracy_estimate(history, self.model_name, self.classifier),
            "retrain": {
                "running": self.retraining.running,
                "round": self.retraining.round,
                "last_error": self.retraining.last_error,
                "last_seconds": self.retraining.last_seconds,
                "model_seconds": self.retraining.model_seconds,
                "every": self.settings.retrain_every,
                "labels_since": len(history) - self.retraining.labels_at_last,
            },
        }


def train_in_process(store: str, settings: LoopSettings, output: Path) -> Path:
    """`critic train --data STORE` in a process of its own (its memory returns when it ends; a crash there leaves
    the labelling server as it was); the model's folder, or an error with the last lines it wrote."""
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "critic.cli", "train", "--data", store, "--model", settings.base_model]
    command += ["--output", str(output), *settings.retrain_args(store)]
    log = output.with_suffix(".log")
    with open(log, "w", encoding="utf-8") as handle:
        finished = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if finished.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise StoreError(f"critic train stopped ({finished.returncode}): {' / '.join(tail)} (the whole log: {log})")
    return output


def accuracy_estimate(history, model: str | None, classifier) -> dict | None:
    """The current model's accuracy: from the labels of its random picks when there are some (an unbiased sample
    of the pool), else its validation split's; with a two-sided 95% Clopper-Pearson interval."""
    if model is None:
        return None
    random = history[(history["model"] == model) & (history["picked_for"] == "random")]
    if len(random):
        correct, count, source = int((random["label"] == random["suggestion"]).sum()), len(random), "random picks"
    else:
        validation = (classifier.record.validation or {}) if classifier is not None else {}
        rows = classifier.record.split_summary("validation").get("rows", 0) if classifier is not None else 0
        if "val_accuracy" not in validation or not rows:
            return None
        count, source = int(rows), "validation split"
        correct = int(round(validation["val_accuracy"] * count))
    low, high = clopper_pearson(correct, count)
    return {"accuracy": correct / count, "low": low, "high": high, "reviews": count, "from": source}


def _model_id(classifier) -> str | None:
    if classifier is None:
        return None
    return str(classifier.path) if classifier.path is not None else classifier.name


def _beside(store: Store) -> Path:
    if store.sqlite:
        path = Path(store.url.removeprefix("sqlite:///"))
        return path.with_name(path.stem + "-models")
    return Path("runs") / "label-models"
