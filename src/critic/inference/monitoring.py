"""Watching what a model sees: the share of "unsure" answers, the class mix of its answers against the validation
split's, and a drift score of the reviews against the model's training reviews on the model's own embeddings.

The drift score is the cross-validated ROC AUC of a logistic regression told to separate the two sets of
embeddings (a domain classifier): 0.5 when it cannot tell them apart, 1.0 when they share nothing. Two samples of the
same reviews score about 0.5; DRIFT_WARNING is where critic warns. `critic monitor MODEL FILE` gives these for a file;
`critic serve --watch` for the server's recent traffic (serve/watch.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from critic import modeling
from critic.modeling.record import ModelRecord
from critic.text import frame_all

DRIFT_WARNING = 0.75
REFERENCE_REVIEWS = 1000  # training reviews embedded once per model and kept in MODEL/monitor/
REFERENCE_FILE = "reference-embeddings.npz"
MIX_WARNING = 0.15  # a class's share of the answers this far from its share of the validation split


def embed(classifier, texts: list[str]) -> np.ndarray:
    """The mean of the encoder's last hidden states over each review's tokens (as the model reads it: its cleaning
    and window), one row per text; the PyTorch weights whatever backend scores."""
    tokens = classifier.encode(texts)
    inputs = frame_all(classifier.encoder, tokens, classifier.truncation)
    encoder = classifier.model.base_model
    precision = classifier.precision if classifier.backend == "torch" else "fp32"

    @torch.inference_mode()
    def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = {k: v.to(classifier.device) for k, v in batch.items()}
        with modeling.autocast(classifier.device, precision):
            hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1)).float()

    width = classifier.model.config.hidden_size
    return modeling.logits(forward, inputs, classifier.encoder.pad_id, width, classifier.max_tokens)


def drift_score(reference: np.ndarray, recent: np.ndarray, seed: int = 0) -> float:
    """The cross-validated ROC AUC of a classifier separating `recent` from `reference`, the larger side sampled down
    to the smaller. Without a difference a cross-validated AUC scatters around, and often below, 0.5 (each held-out
    review is pulled away from its own side): anything under 0.5 reads as 0.5, no drift."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if min(len(reference), len(recent)) < 10:
        raise ValueError(f"a drift score needs 10 reviews on each side ({len(reference)} and {len(recent)})")
    rng = np.random.default_rng(seed)
    size = min(len(reference), len(recent))
    reference, recent = (side[rng.choice(len(side), size, replace=False)] for side in (reference, recent))
    features = np.concatenate([reference, recent])
    is_recent = np.r_[np.zeros(len(reference)), np.ones(len(recent))]
    separator = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    scores = cross_val_predict(separator, features, is_recent, cv=folds, method="predict_proba")[:, 1]
    return max(float(roc_auc_score(is_recent, scores)), 0.5)


def reference_embeddings(classifier, model_dir: Path, say=None) -> np.ndarray | None:
    """Embeddings of up to REFERENCE_REVIEWS of the model's training reviews, computed once and kept beside the
    model (MODEL/monitor/), recomputed when the weights change; None where its training data cannot be read."""

    identity = str(classifier.identity()["weights"])
    path = Path(model_dir) / "monitor" / REFERENCE_FILE
    if path.is_file():
        kept = np.load(path)
        if str(kept["identity"]) == identity:
            return kept["embeddings"]
    training = classifier.record.rows("train")
    if training is None:
        return None
    sample = training.sample(n=min(REFERENCE_REVIEWS, len(training)), random_state=0)
    if say:
        say(f"embedding {len(sample):,} of the model's training reviews once, as the reference (kept in {path.parent})")
    embeddings = embed(classifier, sample["text"].tolist())
    path.parent.mkdir(exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, embeddings=embeddings, identity=identity)
    partial.replace(path)
    return embeddings


def validation_mix(record: ModelRecord) -> dict[str, float] | None:
    """Each class's share of the model's validation split, from its record."""
    classes = record.split_summary("validation").get("classes")
    if not classes:
        return None
    total = sum(classes.values())
    return {name: count / total for name, count in classes.items()}


def answer_mix(probs: np.ndarray, labels: list[str]) -> dict[str, float]:
    counts = np.bincount(probs.argmax(axis=1), minlength=len(labels))
    return {name: float(count / max(len(probs), 1)) for name, count in zip(labels, counts)}


def warnings(unsure_share: float | None, mix: dict, expected: dict | None, drift: float | None) -> list[str]:
    said = []
    if drift is not None and drift >= DRIFT_WARNING:
        said.append(
            f"drift: these reviews are told apart from the training reviews with ROC AUC {drift:.2f} (≥ "
            f"{DRIFT_WARNING}); the model's figures may not hold for them"
        )
    for name, share in mix.items():
        if expected and name in expected and abs(share - expected[name]) >= MIX_WARNING:
            said.append(f"class mix: {share:.0%} answered {name}, against {expected[name]:.0%} in validation")
    return said


def monitor_file(model: str | Path, path: str | Path, min_accuracy: float = 0.95, text_column=None, say=None) -> dict:
    """`critic monitor`: the unsure share, the class mix and the drift of a file of reviews against the model's."""
    from critic import data
    from critic.inference.predict import Classifier

    classifier = Classifier.load(model)
    frame, _ = data.read_table(path, data.Columns(text=text_column), unlabeled=True)
    texts = frame["text"].tolist()
    probs = classifier.predict_proba(texts)
    unsure_below = classifier.unsure_below(min_accuracy)
    unsure = float((probs.max(axis=1) < unsure_below).mean()) if unsure_below is not None else None
    reference = reference_embeddings(classifier, classifier.path, say) if classifier.path is not None else None
    drift = drift_score(reference, embed(classifier, texts)) if reference is not None and len(texts) >= 10 else None
    mix, expected = answer_mix(probs, classifier.labels), validation_mix(classifier.record)
    return {
        "model": str(model),
        "data": str(path),
        "reviews": len(texts),
        "min_accuracy": min_accuracy,
        "unsure_share": unsure,
        "class_mix": mix,
        "validation_mix": expected,
        "drift_auc": drift,
        "warnings": warnings(unsure, mix, expected, drift),
    }
