"""Answers with a guarantee: "unsure" below a confidence threshold chosen on the validation split so that the
accuracy on the reviews answered is at least a target with 95% confidence.

The validation reviews, most confident first, give a curve: for each number answered, the errors among them and
the confidence of the last one. For a target accuracy, CANDIDATES thresholds (those answering 5%, 10%, ... 100% of
the validation reviews) are each tested with the one-sided Clopper–Pearson lower bound of the accuracy on the
reviews they answer, at 5% / CANDIDATES (a union bound, as in Geifman and El-Yaniv's Selection with Guaranteed Risk,
2017), and the one answering most among those that pass is kept: it fails its target with probability at most 5%
however the candidates fared. (Testing thresholds from the most confident down and stopping at the first failure,
Learn then Test's fixed sequence, needs no correction, but its first tests answer too few reviews to pass: on 2,000
reviews of a calibrated model, 59% of draws kept no threshold for 95%.) Works for any number of classes: the
confidence is the top class's probability."""

from __future__ import annotations

import numpy as np

from critic.modeling.record import ModelRecord

UNSURE = "unsure"
LEVEL = 0.95  # the confidence that the accuracy on answered reviews meets the target
STANDARD_TARGETS = (0.9, 0.95, 0.97, 0.99)  # computed at the end of `critic train`, shown by `critic evaluate`
POINTS = 200  # curve points kept in critic.json: a threshold every 0.5% of the validation reviews
CANDIDATES = 20  # thresholds tested for a target: those answering 5%, 10%, ... 100% of the validation reviews


def lower_bound(correct: int, answered: int, level: float = LEVEL) -> float:
    """One-sided Clopper–Pearson: the accuracy that `correct` of `answered` shows with `level` confidence."""
    from scipy.stats import beta

    if answered == 0:
        return 0.0
    return float(beta.ppf(1 - level, correct, answered - correct + 1)) if correct else 0.0


def curve(confidence: np.ndarray, correct: np.ndarray, points: int = POINTS) -> dict:
    """Answered count, errors among them and the threshold (the confidence of the last review answered), at up to
    `points` numbers answered, most confident first; ties in confidence are answered together."""
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")
    ranked, errors = np.asarray(confidence)[order], np.cumsum(~np.asarray(correct, dtype=bool)[order])
    rows = len(ranked)
    wanted = np.unique(np.ceil(np.linspace(0, rows, points + 1)[1:]).astype(int))
    # a cut inside a run of equal confidences moves to its end: a threshold answers all of them or none
    ends = np.searchsorted(-ranked, -ranked[wanted - 1], side="right")
    ends = np.unique(ends)
    return {
        "rows": rows,
        "answered": [int(n) for n in ends],
        "errors": [int(errors[n - 1]) for n in ends],
        "threshold": [float(ranked[n - 1]) for n in ends],
    }


def threshold(record: dict, target: float, level: float = LEVEL) -> dict:
    """The candidate threshold that answers most of the validation reviews among those whose accuracy bound meets
    `target` (None where none does), with the share it answers, their accuracy and the bound."""
    if not 0 < target < 1:
        raise ValueError(f"min accuracy {target}: give a share between 0 and 1, such as 0.97")
    points = list(zip(record["answered"], record["errors"], record["threshold"]))
    kept = None
    for share in np.arange(1, CANDIDATES + 1) / CANDIDATES:
        # the first curve point answering at least this share (a run of equal confidences is answered whole)
        answered, errors, cut = next(point for point in points if point[0] >= share * record["rows"] - 1e-9)
        bound = lower_bound(answered - errors, answered, 1 - (1 - level) / CANDIDATES)
        if bound >= target:
            kept = (answered, errors, cut, bound)
    if kept is None:
        return {"target": target, "threshold": None, "coverage": 0.0, "accuracy": None, "lower_bound": None}
    answered, errors, cut, bound = kept
    return {
        "target": target,
        "threshold": cut,
        "coverage": answered / record["rows"],
        "accuracy": 1 - errors / answered,
        "lower_bound": bound,
    }


def cutoff(chosen: dict) -> float:
    """The confidence an answer needs under a `threshold` result: infinite where none met the target (all unsure)."""
    return np.inf if chosen["threshold"] is None else chosen["threshold"]


def record(probs: np.ndarray, labels: np.ndarray) -> dict:
    """What critic.json keeps: the validation curve, and the threshold for each standard target."""
    probs = np.asarray(probs)
    kept = curve(probs.max(axis=1), probs.argmax(axis=1) == np.asarray(labels))
    return {
        "level": LEVEL,
        "curve": kept,
        "targets": {f"{target:g}": threshold(kept, target) for target in STANDARD_TARGETS},
    }


def threshold_for(record: ModelRecord, target: float) -> dict:
    """The threshold for `target` from a model's critic.json; an error for a model without the record."""
    kept = record.abstention
    if not kept:
        raise ValueError(
            f"{record.name} has no validation record to choose a confidence threshold from "
            f"(a model critic did not train, or one trained before critic kept it); train it again with critic"
        )
    return threshold(kept["curve"], target, kept.get("level", LEVEL))


def answers(probs: np.ndarray, labels: list[str], unsure_below: float | None = None) -> list[str]:
    """The label of each row, or "unsure" where its confidence is below `unsure_below` (None: every row answered;
    infinite: none)."""
    probs = np.asarray(probs)
    top = probs.argmax(axis=1)
    if unsure_below is None:
        return [labels[i] for i in top]
    return [labels[i] if sure else UNSURE for i, sure in zip(top, probs.max(axis=1) >= unsure_below)]


def describe(chosen: dict, rows: int) -> str:
    """One line on a threshold: what it answers and what it promises."""
    target = f"{chosen['target']:.0%}" if chosen["target"] * 100 % 1 == 0 else f"{chosen['target']:.1%}"
    if chosen["threshold"] is None:
        return (
            f"no confidence threshold shows {target} accuracy on the {rows:,} validation reviews with "
            f"{LEVEL:.0%} confidence: every answer is {UNSURE} (a lower target, or more validation reviews)"
        )
    return (
        f"answers reviews with confidence >= {chosen['threshold']:.4f}: {chosen['coverage']:.1%} of the {rows:,} "
        f"validation reviews, {chosen['accuracy']:.2%} of them right (at least {target} with {LEVEL:.0%} "
        f"confidence); the others are {UNSURE}"
    )
