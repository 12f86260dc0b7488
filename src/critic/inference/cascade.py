"""A cascade: a cheap calibrated model answers the reviews it is sure of, and the transformer the rest.

The cheap stage is TF-IDF over word 1-2-grams with a logistic regression (the evaluation's baseline), fitted on the
training split of the model's data. Its threshold is chosen on the validation split: the lowest confidence above
which the cheap stage may answer while the cascade's accuracy stays within `margin` (default 0.1 points) of the
transformer's alone, with 95% confidence — the reviews it answers wrongly where the transformer was right, counted
with a one-sided Clopper-Pearson bound over the validation split. Where no threshold keeps the margin, there is no
cascade, and `fit` says why. The cascade's own answers to the validation split give its `--min-accuracy` curve.

It is kept in MODEL/cascade/ as plain arrays and JSON (no pickle: a model folder is data, never code), tied to the
transformer's weights like an export; `Classifier.load` uses it when it is there (`cascade=False` turns it off).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from critic import modeling
from critic.modeling import abstention

FOLDER = "cascade"
MARGIN = 0.001  # the accuracy the cascade may give up against the transformer alone, with 95% confidence
LEVEL = 0.95
# The cheap stage learns from at most this many training reviews (a seeded sample of more): IMDB's 39,717 took 22 s
# and a vocabulary of 613,348 1-2-grams on 2 AMD EPYC Zen 4 cores (2026-12-06); a million would take many minutes
# and gigabytes at the end of every training run.
MOST_TRAINING_REVIEWS = 100_000


@dataclass
class CheapStage:
    """TF-IDF + logistic regression as arrays: the vocabulary, the idf, the coefficients."""

    vocabulary: dict[str, int]
    idf: np.ndarray
    coef: np.ndarray  # (classes, features); binary: one row, as scikit-learn keeps it
    intercept: np.ndarray
    classes: np.ndarray  # the class indices the regression saw
    num_labels: int
    threshold: float = 1.0
    abstention: dict | None = None  # the cascade's answers to the validation split, for --min-accuracy
    _vectorizer: object = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def fit(cls, texts: list[str], labels: np.ndarray, num_labels: int) -> CheapStage:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_df=0.95, sublinear_tf=True, dtype=np.float32)
        features = vectorizer.fit_transform(texts)
        regression = LogisticRegression(C=10.0, max_iter=1000).fit(features, labels)
        vocabulary = {word: int(index) for word, index in vectorizer.vocabulary_.items()}
        return cls(
            vocabulary,
            vectorizer.idf_.astype(np.float32),
            regression.coef_.astype(np.float32),
            regression.intercept_.astype(np.float32),
            regression.classes_,
            num_labels,
        )

    def vectorizer(self):
        """Made once: scikit-learn checks a given vocabulary when it first transforms, which for IMDB's 613,348
        1-2-grams took 0.16 s a call, against 1.3 ms to score one review once made and 355 ms for 1,000 (2 AMD
        EPYC Zen 4 cores, 2026-12-06): made per call, it cost each request to the server a sixth of a second."""
        if self._vectorizer is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            vectorizer = TfidfVectorizer(
                ngram_range=(1, 2), sublinear_tf=True, vocabulary=self.vocabulary, dtype=np.float32
            )
            vectorizer.idf_ = self.idf
            vectorizer.transform([""])  # the check, paid here
            self._vectorizer = vectorizer
        return self._vectorizer

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        scores = self.vectorizer().transform(texts) @ self.coef.T + self.intercept
        if scores.shape[1] == 1:  # binary: the score of the second class
            scores = np.hstack([np.zeros_like(scores), scores])
        scores = np.asarray(scores, dtype=np.float64)
        scores -= scores.max(axis=1, keepdims=True)
        seen = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
        probs = np.zeros((len(texts), self.num_labels))
        probs[:, self.classes] = seen
        return probs

    def save(self, folder: Path, record: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "arrays.npz", idf=self.idf, coef=self.coef, intercept=self.intercept, classes=self.classes)
        modeling.write_text_atomic(folder / "vocabulary.json", json.dumps(self.vocabulary))
        record = {**record, "threshold": self.threshold, "num_labels": self.num_labels, "abstention": self.abstention}
        modeling.write_text_atomic(folder / "cascade.json", json.dumps(record))

    @classmethod
    def load(cls, folder: Path) -> CheapStage:
        arrays = np.load(folder / "arrays.npz")  # no pickled objects: allow_pickle stays off
        record = json.loads((folder / "cascade.json").read_text())
        return cls(
            json.loads((folder / "vocabulary.json").read_text()),
            arrays["idf"],
            arrays["coef"],
            arrays["intercept"],
            arrays["classes"],
            int(record["num_labels"]),
            float(record["threshold"]),
            record.get("abstention"),
        )


def choose_threshold(cheap: np.ndarray, model: np.ndarray, labels: np.ndarray, margin: float = MARGIN) -> dict:
    """The lowest cheap-stage confidence at which the cascade keeps within `margin` of the model's accuracy on
    these (validation) reviews with 95% confidence; threshold None where none does."""
    from scipy.stats import beta

    confidence = cheap.max(axis=1)
    cheap_right = cheap.argmax(axis=1) == labels
    model_right = model.argmax(axis=1) == labels
    costly = ~cheap_right & model_right  # what the cascade loses where the cheap stage answers
    order = np.argsort(-confidence, kind="stable")
    lost = np.cumsum(costly[order])
    count = len(labels)
    upper = np.array([beta.ppf(LEVEL, k + 1, count - k) for k in range(int(lost[-1]) + 2)])
    allowed = upper[lost] <= margin
    # answer the top n (n = 1..N) only at a confidence strictly above the next one's, so ties go together
    distinct = np.r_[confidence[order][1:] < confidence[order][:-1], True]
    candidates = np.flatnonzero(allowed & distinct)
    accuracies = {"model_accuracy": float(model_right.mean()), "cheap_accuracy": float(cheap_right.mean())}
    if not len(candidates):
        return {"threshold": None, "coverage": 0.0, "margin": margin, "reviews": count, **accuracies}
    answered = int(candidates.max()) + 1
    threshold = float(confidence[order][answered - 1])
    cascade_right = np.where(confidence >= threshold, cheap_right, model_right)
    return {
        "threshold": threshold,
        "coverage": answered / count,
        "margin": margin,
        "reviews": count,
        **accuracies,
        "cascade_accuracy": float(cascade_right.mean()),
        "lost_bound": float(upper[lost[answered - 1]]),
    }


def fit(model_dir: str | Path, margin: float = MARGIN, say=None) -> dict:
    """Fit the cheap stage on the model's training split, choose its threshold on the validation split, and keep it
    in MODEL/cascade/ tied to the weights; what was chosen (threshold None: no cascade, and why)."""
    from critic.inference.predict import Classifier

    model_dir = Path(model_dir)
    classifier = Classifier.load(model_dir, cascade=False)
    validation = classifier.record.rows("validation")
    if validation is None:
        raise ValueError(f"{model_dir}: its validation reviews cannot be read again, and the cascade is chosen on them")
    texts = validation["text"].tolist()
    return fit_on(model_dir, texts, validation["label"].to_numpy(), classifier.predict_proba(texts), margin, say)


def fit_on(
    model_dir: Path, texts: list[str], labels: np.ndarray, model_probs: np.ndarray, margin: float = MARGIN, say=None
) -> dict:
    """`fit` where the model's probabilities for its validation reviews (`texts`, `labels`) are known already, as
    they are at the end of `critic train`: as the model answers by default, calibrated."""
    from critic import data

    record = modeling.ModelRecord.read(model_dir)
    # the whole training split, though the transformer may have trained on a subset (--train-size): the cheap
    # stage takes seconds on all of it, and each review it learns from can only widen what it may answer
    train = record.splits(("train",), whole_train=True)
    if train is None:
        raise ValueError(f"{model_dir}: its training data cannot be read again, and the cheap stage learns from it")
    train, clean = train["train"], data.cleaner(record.cleaning)
    if len(train) > MOST_TRAINING_REVIEWS:
        train = train.sample(n=MOST_TRAINING_REVIEWS, random_state=0)
    cheap = CheapStage.fit([clean(t) for t in train["text"]], train["label"].to_numpy(), len(record.labels))
    cheap_probs = cheap.predict_proba([clean(t) for t in texts])
    chosen = choose_threshold(cheap_probs, model_probs, labels, margin)
    if say and (note := weaker_than_cheap(chosen, len(train))):
        say(note)
    if chosen["threshold"] is None:
        if say:
            say(f"no cascade: the cheap stage cannot answer any validation review within {margin:.2%} of the model")
        return chosen
    cheap.threshold = chosen["threshold"]
    answered = cheap_probs.max(axis=1) >= cheap.threshold
    cheap.abstention = abstention.record(np.where(answered[:, None], cheap_probs, model_probs), labels)
    folder = model_dir / FOLDER
    cheap.save(folder, {**chosen, "train_reviews": len(train), "stage": "TF-IDF word 1-2-grams + logistic regression"})
    modeling.tie_to_weights(folder, model_dir)
    modeling.update_record(model_dir, cascade=chosen)
    if say:
        say(
            f"cascade: the cheap stage answers {chosen['coverage']:.1%} of the validation reviews (confidence ≥ "
            f"{chosen['threshold']:.4f}); accuracy {chosen['cascade_accuracy']:.2%} against the model's "
            f"{chosen['model_accuracy']:.2%} alone (--cascade off: the model alone)"
        )
    return chosen


def weaker_than_cheap(chosen: dict, train_reviews: int) -> str | None:
    """A line for a transformer that the cheap stage alone outscores on validation (None for one it does not). The
    quickstart's MiniLM (2,000 reviews, 1 epoch) scored 87.63% on IMDB's test split against 91.84% for the cheap
    stage on all 39,717 training reviews (2026-12-06): the cascade keeps within the margin of the transformer, so it
    answers little of what the cheap stage would get right."""
    if chosen["cheap_accuracy"] <= chosen["model_accuracy"]:
        return None
    return (
        f"note: the cheap stage alone (TF-IDF on {train_reviews:,} training reviews) scores "
        f"{chosen['cheap_accuracy']:.2%} on validation against the model's {chosen['model_accuracy']:.2%}: the model "
        "learned less than it could (more training reviews or epochs; --preset cpu trains on 2,000 for 1 epoch)"
    )


def load_for(model_dir: Path) -> CheapStage | None:
    """The model's cascade, when it has one made from its present weights."""
    folder = Path(model_dir) / FOLDER
    if not (folder / "cascade.json").is_file() or modeling.export_mismatch(folder, model_dir) is not None:
        return None
    stage = CheapStage.load(folder)
    return stage if stage.abstention is not None else None  # fitted before the cascade kept its own curve
