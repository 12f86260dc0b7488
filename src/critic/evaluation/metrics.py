"""How good a classifier is, from its probabilities (never from hard 0/1 predictions): accuracy with a bootstrap
interval, per-class precision/recall/F1, the confusion matrix, ROC and precision-recall curves, calibration, accuracy
by review length, the most confident mistakes, and a TF-IDF baseline beside them: `measure` gives them as a dict."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from critic.modeling.calibration import expected_calibration_error

LENGTH_BUCKETS = ((0, 128), (129, 256), (257, 512), (513, 10**9))


def bootstrap_accuracy(correct: np.ndarray, rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(correct), size=(rounds, len(correct)))
    means = correct[samples].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def measure(
    labels: Sequence[int],
    probs: np.ndarray,
    label_names: Sequence[str],
    texts: Sequence[str] | None = None,
    token_lengths: Sequence[int] | None = None,
    mistakes: int = 10,
    ordered: bool = False,
) -> dict:
    """Every metric for a binary or multi-class classifier from true labels and predicted probabilities; with
    `ordered` classes (stars) also the mean absolute error in classes and the share within one class."""
    from sklearn.metrics import classification_report, confusion_matrix

    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    correct = predicted == labels
    names = list(label_names)
    per_class = classification_report(
        labels, predicted, labels=list(range(len(names))), target_names=names, output_dict=True, zero_division=0
    )
    summary: dict = {
        "rows": int(len(labels)),
        "accuracy": float(correct.mean()),
        "accuracy_ci95": list(bootstrap_accuracy(correct)),
        "f1_macro": float(per_class["macro avg"]["f1-score"]),
        "f1_weighted": float(per_class["weighted avg"]["f1-score"]),
        "per_class": {
            n: {k: float(per_class[n][k]) for k in ("precision", "recall", "f1-score", "support")} for n in names
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=list(range(len(names)))).tolist(),
        "ece": expected_calibration_error(labels, confidence, predicted),
        "labels": names,
    }
    counts = np.asarray(summary["confusion_matrix"], dtype=float)
    summary["confusion_matrix_normalized"] = (counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)).tolist()
    summary.update(ranking_metrics(labels, probs, names))
    if ordered:
        distance = np.abs(predicted - labels)
        summary.update(mean_absolute_error=float(distance.mean()), within_one=float((distance <= 1).mean()))
    summary["_calibration"] = reliability_curve(labels, probs, names)
    if token_lengths is not None:
        summary["accuracy_by_length"] = accuracy_by_length(np.asarray(token_lengths), correct)
    if texts is not None:
        wrong = np.flatnonzero(~correct)
        worst = wrong[np.argsort(-confidence[wrong])][:mistakes]
        summary["confident_mistakes"] = [
            {
                "row": int(i),
                "true": names[labels[i]],
                "predicted": names[predicted[i]],
                "confidence": float(confidence[i]),
                "text": texts[i][:500] + ("…" if len(texts[i]) > 500 else ""),
            }
            for i in worst
        ]
    summary["_confidence"] = confidence
    summary["_correct"] = correct
    return summary


def ranking_metrics(labels: np.ndarray, probs: np.ndarray, names: list[str]) -> dict:
    """ROC and PR AUC with their curves (binary, both classes present), or one-vs-rest and top-2 accuracy."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    if len(names) == 2 and len(set(labels.tolist())) == 2:
        positive = probs[:, 1]
        fpr, tpr, _ = roc_curve(labels, positive)
        precision, recall, _ = precision_recall_curve(labels, positive)
        return {
            "roc_auc": float(roc_auc_score(labels, positive)),
            "pr_auc": float(average_precision_score(labels, positive)),
            "_roc": {names[1]: (fpr, tpr)},
            "_pr": {names[1]: (recall, precision)},
        }
    if len(names) > 2:
        top2 = np.argsort(-probs, axis=1)[:, :2]
        return {
            **one_vs_rest(labels, probs, names),
            "top2_accuracy": float((top2 == labels[:, None]).any(axis=1).mean()),
        }
    return {}


def reliability_curve(labels: np.ndarray, probs: np.ndarray, names: list[str]) -> tuple:
    """(expected, observed, what the x axis is) in 10 bins: P(positive) for two classes, else the predicted class's
    confidence against how often it is right."""
    from sklearn.calibration import calibration_curve

    if len(names) == 2:
        observed, expected = calibration_curve(labels, probs[:, 1], n_bins=10, strategy="uniform")
        return expected, observed, f"predicted P({names[1]})"
    correct = (probs.argmax(axis=1) == labels).astype(int)
    observed, expected = calibration_curve(correct, probs.max(axis=1), n_bins=10, strategy="uniform")
    return expected, observed, "confidence of the predicted class"


def accuracy_by_length(lengths: np.ndarray, correct: np.ndarray) -> list[dict]:
    buckets = []
    for low, high in LENGTH_BUCKETS:
        members = (lengths >= low) & (lengths <= high)
        if members.any():
            label = f"{low}–{high}" if high < 10**9 else f"> {low - 1}"
            buckets.append({"tokens": label, "rows": int(members.sum()), "accuracy": float(correct[members].mean())})
    return buckets


def unsure_figures(labels: np.ndarray, probs: np.ndarray, record: dict) -> dict:
    """ "Not sure" on these reviews: for each standard target, the threshold chosen on the validation split
    (`abstention.threshold`), the share of these reviews it answers and their accuracy, met or not; and the
    accuracy against the share answered, for every threshold, as a curve."""
    from critic.modeling import abstention

    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    targets = []
    for target in abstention.STANDARD_TARGETS:
        chosen = abstention.threshold(record["curve"], target, record.get("level", abstention.LEVEL))
        answered = confidence >= abstention.cutoff(chosen)
        accuracy = float(correct[answered].mean()) if answered.any() else None
        targets.append(
            {
                "target": target,
                "threshold": chosen["threshold"],
                "validation_coverage": chosen["coverage"],
                "coverage": float(answered.mean()),
                "accuracy": accuracy,
                "met": accuracy is None or accuracy >= target,
            }
        )
    curve = abstention.curve(confidence, correct)
    answered, errors = np.array(curve["answered"]), np.array(curve["errors"])
    return {
        "targets": targets,
        "curve": {"coverage": (answered / len(labels)).tolist(), "accuracy": (1 - errors / answered).tolist()},
    }


def one_vs_rest(labels: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> dict:
    """Each class against the others: its ROC and PR curves and AUCs, and their macro average."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    roc, pr, roc_aucs, pr_aucs = {}, {}, [], []
    for i, name in enumerate(names):
        mine = (labels == i).astype(int)
        if 0 < mine.sum() < len(mine):
            fpr, tpr, _ = roc_curve(mine, probs[:, i])
            precision, recall, _ = precision_recall_curve(mine, probs[:, i])
            roc[name], pr[name] = (fpr, tpr), (recall, precision)
            roc_aucs.append(roc_auc_score(mine, probs[:, i]))
            pr_aucs.append(average_precision_score(mine, probs[:, i]))
    if not roc_aucs:
        return {}
    return {
        "roc_auc": float(np.mean(roc_aucs)),
        "pr_auc": float(np.mean(pr_aucs)),
        "_roc": roc,
        "_pr": pr,
        "auc_note": "one class against the rest, macro average",
    }


def tfidf_baseline(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    texts: Sequence[str],
    labels: Sequence[int],
    label_names: Sequence[str],
) -> dict:
    """TF-IDF over word 1-2-grams + logistic regression (scikit-learn), trained on the rows the model was trained on
    and scored on the same rows as the model: does the transformer earn its cost? About 91% on IMDB's full
    training split, in under a minute on 2 CPU cores."""
    import time

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    started = time.perf_counter()
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_df=0.95, sublinear_tf=True),
        LogisticRegression(C=10.0, max_iter=1000),
    )
    model.fit(list(train_texts), np.asarray(train_labels))
    probs = np.zeros((len(texts), len(label_names)))
    probs[:, model.classes_] = model.predict_proba(list(texts))
    scored = measure(labels, probs, label_names)
    keep = ("accuracy", "accuracy_ci95", "f1_macro", "roc_auc", "pr_auc", "ece")
    return {
        "model": "TF-IDF word 1-2-grams + logistic regression (C=10)",
        "train_rows": len(train_texts),
        "seconds": time.perf_counter() - started,
        **{k: scored[k] for k in keep if k in scored},
    }


def clopper_pearson(correct: int, count: int, level: float = 0.95) -> tuple[float, float]:
    """The two-sided interval of an accuracy of `correct` in `count` (exact, for the small counts of a slice)."""
    from scipy.stats import beta

    tail = (1 - level) / 2
    low = float(beta.ppf(tail, correct, count - correct + 1)) if correct else 0.0
    high = float(beta.ppf(1 - tail, correct + 1, count - correct)) if correct < count else 1.0
    return low, high


def slices(values: Sequence, correct: np.ndarray, column: str) -> dict:
    """Accuracy, its interval and the count for each value of `column`, the worst first (among equals, the
    larger slice first)."""
    import pandas as pd

    frame = pd.DataFrame({"value": [str(v) for v in values], "correct": np.asarray(correct, dtype=bool)})
    rows = []
    for value, part in frame.groupby("value", sort=False):
        count, right = len(part), int(part["correct"].sum())
        low, high = clopper_pearson(right, count)
        rows.append({"value": value, "reviews": count, "accuracy": right / count, "ci95": [low, high]})
    rows.sort(key=lambda row: (row["accuracy"], -row["reviews"]))
    return {"column": column, "slices": rows}


def cascade_figures(labels: np.ndarray, model: np.ndarray, cheap: np.ndarray, answered: np.ndarray) -> dict:
    """The model alone, the cascade's cheap stage alone and the cascade (the cheap stage where it `answered`, the
    model elsewhere) on the same reviews: accuracy with its bootstrap 95% interval and macro F1 each, and the share
    the cheap stage answered."""
    from sklearn.metrics import f1_score

    rows = {}
    for name, probs in (
        ("model", model),
        ("cheap stage", cheap),
        ("cascade", np.where(answered[:, None], cheap, model)),
    ):
        predicted = probs.argmax(axis=1)
        correct = predicted == labels
        rows[name] = {
            "accuracy": float(correct.mean()),
            "accuracy_ci95": list(bootstrap_accuracy(correct)),
            "f1_macro": float(f1_score(labels, predicted, average="macro", labels=range(probs.shape[1]))),
        }
    return {"stages": rows, "cheap_share": float(answered.mean())}
