"""How good a classifier is, from its probabilities (never from hard 0/1 predictions): accuracy with a
bootstrap interval, per-class precision/recall/F1, confusion matrix, ROC and precision-recall curves, calibration,
accuracy by review length, and the most confident mistakes. As a dict (JSON), a terminal table and an HTML page.
`evaluate_model` is the evaluation run: a model scores a split of its data and every figure is written."""

from __future__ import annotations

import dataclasses
import html
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from critic import report, safe_csv
from critic.modeling.calibration import describe, expected_calibration_error

LENGTH_BUCKETS = ((0, 128), (129, 256), (257, 512), (513, 10**9))


def bootstrap_accuracy(correct: np.ndarray, rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(correct), size=(rounds, len(correct)))
    means = correct[samples].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def evaluate(
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
    scored = evaluate(labels, probs, label_names)
    keep = ("accuracy", "accuracy_ci95", "f1_macro", "roc_auc", "pr_auc", "ece")
    return {
        "model": "TF-IDF word 1-2-grams + logistic regression (C=10)",
        "train_rows": len(train_texts),
        "seconds": time.perf_counter() - started,
        **{k: scored[k] for k in keep if k in scored},
    }


def public(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def to_html(summary: dict, title: str, subtitle: str) -> str:
    names = summary["labels"]
    sections = [("Summary", report.kpis(headline_figures(summary)))]
    if summary.get("baseline") or summary.get("calibration"):
        sections.append(("Against a baseline, and calibration", comparison_html(summary)))
    per_class = [
        (n, c["precision"], c["recall"], c["f1-score"], int(c["support"])) for n, c in summary["per_class"].items()
    ]
    sections.append(("Per class", report.table(["class", "precision", "recall", "F1", "support"], per_class)))
    sections.append(
        (
            "Confusion matrix (rows: true, columns: predicted)",
            report.table(["", *names], [(n, *row) for n, row in zip(names, summary["confusion_matrix"])]),
        )
    )
    if "unsure" in summary:
        sections.append(("Not sure: answering only above a confidence", unsure_html(summary)))
    if "label_issues" in summary:
        found = summary["label_issues"]
        rows = [(r["line"], r["given"], r["suggested"], r["score"], r["text"]) for r in found["top"]]
        sections.append(
            (
                "Labels that look wrong",
                f"<p>{found['rows']:,} reviews ({found['share']:.1%}) whose label the model's probabilities "
                f"contradict (cleanlab's confident learning); all of them, ranked, in {html.escape(found['file'])}. "
                f"The {len(rows)} most suspicious:</p>"
                + report.table(["line", "given", "suggested", "score", "text"], rows, text_columns=(4,)),
            )
        )
    plots = [confusion_heat_map(summary), *curve_plots(summary)]
    sections.append(("Curves", "<div class='grid'>" + "".join(f"<figure>{p}</figure>" for p in plots) + "</div>"))
    if "accuracy_by_length" in summary:
        by_length = [(b["tokens"], b["rows"], b["accuracy"]) for b in summary["accuracy_by_length"]]
        sections.append(
            ("Accuracy by review length (tokens)", report.table(["tokens", "reviews", "accuracy"], by_length))
        )
    if summary.get("confident_mistakes"):
        mistakes = [
            (m["row"], m["true"], m["predicted"], m["confidence"], m["text"]) for m in summary["confident_mistakes"]
        ]
        sections.append(
            (
                "Most confident mistakes",
                report.table(["row", "true", "predicted", "confidence", "text"], mistakes, text_columns=(4,)),
            )
        )
    return report.page(title, subtitle, sections)


def unsure_rows(summary: dict) -> list[tuple]:
    return [
        (
            f"{t['target']:.0%}",
            "none shows it" if t["threshold"] is None else f"{t['threshold']:.4f}",
            f"{t['validation_coverage']:.1%}",
            f"{t['coverage']:.1%}",
            "—" if t["accuracy"] is None else f"{t['accuracy']:.2%}",
            "yes" if t["met"] else "no",
        )
        for t in summary["unsure"]["targets"]
    ]


UNSURE_COLUMNS = ("target", "threshold", "answered (validation)", "answered here", "accuracy answered", "met")


def unsure_html(summary: dict) -> str:
    """The targets' table and the accuracy against the share answered, with each target's threshold marked."""
    curve = summary["unsure"]["curve"]
    fig, ax = report.figure(5.2, 3.4)
    ax.plot(curve["coverage"], curve["accuracy"], color="#2e86c1", label="these reviews")
    for t in summary["unsure"]["targets"]:
        if t["accuracy"] is not None:
            ax.plot(t["coverage"], t["accuracy"], "o", label=f"{t['target']:.0%} target")
    ax.set(xlabel="share answered", ylabel="accuracy of the answers", title="Accuracy against coverage")
    ax.legend(loc="lower left", fontsize=8)
    return (
        "<p>With <code>--min-accuracy</code>, reviews below a confidence threshold are answered "
        "<code>unsure</code>; each threshold was chosen on the validation split so that the answered reviews' "
        "accuracy meets the target with 95% confidence.</p>"
        + report.table(UNSURE_COLUMNS, unsure_rows(summary))
        + f"<figure>{report.svg(fig)}</figure>"
    )


def headline_figures(summary: dict) -> list[tuple[str, object]]:
    low, high = summary["accuracy_ci95"]
    extra = [
        (name, f"{summary[key]:.2%}" if key != "mean_absolute_error" else f"{summary[key]:.3f}")
        for key, name in (
            ("top2_accuracy", "top-2 accuracy"),
            ("within_one", "within one class"),
            ("mean_absolute_error", "mean absolute error (classes)"),
        )
        if key in summary
    ]
    return [
        ("accuracy", f"{summary['accuracy']:.2%}"),
        ("95% interval (bootstrap)", f"{low:.2%} – {high:.2%}"),
        ("macro F1", f"{summary['f1_macro']:.4f}"),
        ("weighted F1", f"{summary['f1_weighted']:.4f}"),
        (
            "ROC AUC" + (" (macro, one vs rest)" if len(summary["labels"]) > 2 else ""),
            f"{summary.get('roc_auc', float('nan')):.4f}",
        ),
        ("PR AUC", f"{summary.get('pr_auc', float('nan')):.4f}"),
        ("ECE", f"{summary['ece']:.4f}"),
        *extra,
        ("reviews", summary["rows"]),
    ]


def curve_plots(summary: dict) -> list[str]:
    """ROC and precision-recall (where there are), reliability and confidence plots, as SVG."""
    plots = []
    if "_roc" in summary:
        fig, ax = report.figure(4.2, 3.6)
        for name, curve in summary["_roc"].items():
            ax.plot(*curve, label=name if len(summary["_roc"]) > 1 else f"AUC {summary['roc_auc']:.4f}")
        ax.plot([0, 1], [0, 1], ls="--", color="#999", lw=0.8)
        ax.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            title="ROC" + (f" (one vs rest, macro AUC {summary['roc_auc']:.4f})" if len(summary["_roc"]) > 1 else ""),
        )
        ax.legend(loc="lower right", fontsize=8)
        plots.append(report.svg(fig))
        fig, ax = report.figure(4.2, 3.6)
        for name, curve in summary["_pr"].items():
            ax.plot(*curve, label=name if len(summary["_pr"]) > 1 else f"AP {summary['pr_auc']:.4f}")
        ax.set(xlabel="recall", ylabel="precision", title="Precision–recall")
        ax.legend(loc="lower left", fontsize=8)
        plots.append(report.svg(fig))
    if "_calibration" in summary:
        expected, observed, axis = summary["_calibration"]
        fig, ax = report.figure(4.2, 3.6)
        ax.plot(expected, observed, "o-", label=f"model (ECE {summary['ece']:.3f})")
        ax.plot([0, 1], [0, 1], ls="--", color="#999", lw=0.8, label="perfect")
        ax.set(xlabel=axis, ylabel="observed share", title="Reliability")
        ax.legend(loc="upper left")
        plots.append(report.svg(fig))
    fig, ax = report.figure(4.2, 3.6)
    confidence, correct = summary["_confidence"], summary["_correct"]
    colours, names = ["#2e86c1", "#c0392b"], ["right", "wrong"]
    ax.hist([confidence[correct], confidence[~correct]], bins=20, stacked=True, color=colours, label=names)
    ax.set(xlabel="confidence", ylabel="reviews", title="Confidence")
    ax.legend()
    plots.append(report.svg(fig))
    return plots


def confusion_heat_map(summary: dict) -> str:
    """The confusion matrix as shares of each true class, counts written in the cells."""
    names, counts = summary["labels"], np.asarray(summary["confusion_matrix"])
    shares = np.asarray(summary["confusion_matrix_normalized"])
    size = 2.6 + 0.45 * len(names)
    fig, ax = report.figure(size + 0.8, size)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set(
        xticks=range(len(names)),
        yticks=range(len(names)),
        xticklabels=names,
        yticklabels=names,
        xlabel="predicted",
        ylabel="true",
        title="Confusion (share of each true class)",
    )
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{counts[i, j]:,}\n{shares[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if shares[i, j] > 0.5 else "#222",
            )
    fig.colorbar(image, ax=ax, fraction=0.046)
    return report.svg(fig)


def comparison_rows(summary: dict) -> list[tuple]:
    """(model, accuracy, 95% interval, macro F1, ROC AUC, ECE) for the model and its baseline."""
    rows = []
    for name, figures in (
        ("this model", summary),
        ("baseline: " + summary.get("baseline", {}).get("model", ""), summary.get("baseline")),
    ):
        if figures:
            low, high = figures["accuracy_ci95"]
            rows.append(
                (
                    name,
                    f"{figures['accuracy']:.2%}",
                    f"{low:.2%} – {high:.2%}",
                    f"{figures['f1_macro']:.4f}",
                    f"{figures.get('roc_auc', float('nan')):.4f}",
                    f"{figures['ece']:.4f}",
                )
            )
    return rows


def comparison_html(summary: dict) -> str:
    parts = []
    if summary.get("baseline"):
        base = summary["baseline"]
        parts.append(
            report.table(["model", "accuracy", "95% interval", "macro F1", "ROC AUC", "ECE"], comparison_rows(summary))
        )
        parts.append(
            f"<p>The baseline was trained on the same {base['train_rows']:,} training reviews as the model "
            f"in {base['seconds']:.0f} s, and scored on the same reviews.</p>"
        )
    fitted = summary.get("calibration")
    if fitted:
        parts.append(
            f"<p>Calibration: {describe(fitted, summary['labels'])} fitted on {fitted['rows']:,} "
            f"validation reviews and folded into the head; validation ECE {fitted['ece_before']:.4f} → "
            f"{fitted['ece_after']:.4f}.</p>"
        )
    return "".join(parts)


def print_summary(summary: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    low, high = summary["accuracy_ci95"]
    console.print(
        f"[bold]accuracy {summary['accuracy']:.2%}[/bold] (95% interval {low:.2%} – {high:.2%}) on "
        f"{summary['rows']:,} reviews; ROC AUC {summary.get('roc_auc', float('nan')):.4f}; "
        f"PR AUC {summary.get('pr_auc', float('nan')):.4f}; ECE {summary['ece']:.4f}; macro F1 "
        f"{summary['f1_macro']:.4f}, weighted F1 {summary['f1_weighted']:.4f}"
    )
    if "top2_accuracy" in summary:
        console.print(
            f"top-2 accuracy {summary['top2_accuracy']:.2%}"
            + (
                f"; within one class {summary['within_one']:.2%}, mean absolute error "
                f"{summary['mean_absolute_error']:.3f} classes"
                if "within_one" in summary
                else ""
            )
        )
    table = Table(title_justify="left")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="right")
    for name, c in summary["per_class"].items():
        table.add_row(
            name, f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1-score']:.4f}", f"{int(c['support'])}"
        )
    console.print(table)
    if summary.get("baseline"):
        compared = Table(title="against the baseline", title_justify="left")
        for column in ("model", "accuracy", "95% interval", "macro F1", "ROC AUC", "ECE"):
            compared.add_column(column, justify="right")
        for row in comparison_rows(summary):
            compared.add_row(*row)
        console.print(compared)
    if summary.get("calibration"):
        fitted = summary["calibration"]
        console.print(
            f"calibrated: {describe(fitted, summary['labels'])}, validation ECE {fitted['ece_before']:.4f}"
            f" -> {fitted['ece_after']:.4f}"
        )
    if "label_issues" in summary:
        found = summary["label_issues"]
        console.print(f"labels that look wrong: {found['rows']:,} ({found['share']:.1%}), ranked in {found['file']}")
    if "unsure" in summary:
        answered = Table(title="not sure below a threshold (--min-accuracy)", title_justify="left")
        for column in UNSURE_COLUMNS:
            answered.add_column(column, justify="right")
        for row in unsure_rows(summary):
            answered.add_row(*row)
        console.print(answered)
    if "accuracy_by_length" in summary:
        console.print(
            "by length: "
            + ", ".join(
                f"{b['tokens']} tokens {b['accuracy']:.2%} ({b['rows']:,})" for b in summary["accuracy_by_length"]
            )
        )


def write(summary: dict, folder: Path, title: str, subtitle: str) -> tuple[Path, Path]:
    return report.write(folder, "evaluation", public(summary), to_html(summary, title, subtitle))


# What the model's critic.json (and its card) keeps of an evaluation.
HEADLINE = (
    "accuracy",
    "accuracy_ci95",
    "f1_macro",
    "f1_weighted",
    "roc_auc",
    "pr_auc",
    "ece",
    "top2_accuracy",
    "mean_absolute_error",
    "within_one",
    "rows",
    "data",
    "backend",
    "baseline",
)


def evaluate_model(
    model: str | Path,
    data: str | Path | None = None,
    split: str = "test",
    size: int | None = None,
    seed: int = 42,
    output: str | Path | None = None,
    progress: bool = False,
    backend: str = "torch",
    baseline: bool = True,
    label_issues: bool = False,
    encoder_workers: int | str = 0,
) -> dict:
    """Score `split` of `data` (default: the data the model was trained on, `trained_on`) with a trained model
    and compute every metric; writes evaluation.json and
    evaluation.html to `output` (default: MODEL/evaluation) and records the headline numbers in the model card
    (for the PyTorch model unless another backend is named). With `baseline`, TF-IDF + logistic regression is
    trained on the model's own training rows and scored beside it. With `label_issues`, the reviews whose label
    the model's probabilities contradict go to OUTPUT/label_issues.csv, the worst into the report."""
    from critic import data as datasets
    from critic import modeling
    from critic.inference.predict import Classifier  # the run scores with the Classifier, as predict does

    classifier = Classifier.load(model, backend=backend, encoder_workers=encoder_workers)
    # the evaluation rows read as the model's training rows were, with the model's classes in the model's order
    columns = dataclasses.replace(
        datasets.columns_of(classifier.meta.get("config") or {}), labels=tuple(classifier.labels)
    )
    own = data is None
    data = datasets.trained_on(classifier.meta, model) if own else data
    trained_here = str(data) in {str(classifier.meta.get(key)) for key in ("data", "data_path")}
    if label_issues and split in ("train", "all") and trained_here:
        raise ValueError(
            f"--label-issues needs probabilities from a model that never saw the reviews; it trained on the "
            f"{split} split's training rows: evaluate the validation or test split"
        )
    dataset = datasets.load(data, columns)
    if own and not size:
        warn_if_changed(classifier.meta, dataset, split)
    frame = dataset.split(split, size, seed)
    texts = frame["text"].tolist()
    tokens, probs = score(classifier, texts, progress)
    summary = evaluate(
        frame["label"].to_numpy(),
        probs,
        classifier.labels,
        texts,
        tokens.lengths + classifier.encoder.specials,
        ordered=bool(classifier.meta.get("ordered")),
    )
    if baseline:
        training_rows = datasets.model_rows(classifier.meta, "train", dataset if own else None)
        if training_rows is not None:
            summary["baseline"] = baseline_beside(classifier, training_rows, texts, frame["label"])
    summary.update(model_records(classifier.meta, frame["label"].to_numpy(), probs))
    summary["data"] = f"{data}, split {split}" + (f" (seeded sample of {size})" if size else "")
    summary["backend"] = (
        f"{classifier.backend} {classifier.precision}" if classifier.backend == "torch" else classifier.backend
    )
    folder = Path(output) if output else Path(model) / "evaluation"
    if label_issues:
        summary["label_issues"] = model_label_issues(frame, probs, classifier.labels, dataset, columns, folder)
    json_path, html_path = write(summary, folder, f"Evaluation of {classifier.name}", summary["data"])
    summary["files"] = [str(json_path), str(html_path)]
    if not classifier.meta.get("foreign"):  # a model critic did not train keeps its folder as it was
        modeling.update_meta(model, evaluation={k: summary[k] for k in HEADLINE if k in summary})
    return summary


def score(classifier, texts: list[str], progress: bool):
    """The reviews' tokens and the classifier's probabilities, with a progress bar."""
    from tqdm.auto import tqdm

    tokens = classifier.encode(texts)
    classifier.close()  # the encoder's workers, if any (`encoder_workers`, as Classifier.load takes it), are done
    with tqdm(total=len(texts), unit="review", desc="evaluating", disable=not progress, mininterval=1.0) as bar:
        return tokens, classifier.proba_from_tokens(tokens, progress=bar)


def model_records(meta: dict, labels: np.ndarray, probs: np.ndarray) -> dict:
    """What the model's critic.json adds to its evaluation: the calibration it applies, and its "not sure"
    thresholds' accuracy and coverage on these reviews."""
    records = {}
    if meta.get("calibration", {}).get("applied"):
        records["calibration"] = meta["calibration"]
    if meta.get("abstention"):
        records["unsure"] = unsure_figures(labels, probs, meta["abstention"])
    return records


def model_label_issues(frame, probs: np.ndarray, names: list[str], dataset, columns, folder: Path) -> dict:
    """The evaluated reviews whose label the model's probabilities contradict (cleanlab), all of them ranked in
    FOLDER/label_issues.csv with their line in the file, the worst twenty for the report."""
    from critic.data import label_issues

    found = label_issues.ranked(frame, probs, tuple(names), dataset.manifest["source"], columns)
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / label_issues.FILE
    safe_csv.write_frame(found, file)
    return {
        "rows": len(found),
        "share": len(found) / max(len(frame), 1),
        "file": str(file),
        "top": found.head(20).to_dict("records"),
    }


def warn_if_changed(meta: dict, dataset, split: str) -> None:
    """Says where the split read now is not the one the model was trained beside (the file changed since)."""
    recorded = ((meta.get("manifest") or {}).get("splits") or {}).get(split, {}).get("texts_sha256")
    now = dataset.manifest.get("splits", {}).get(split, {}).get("texts_sha256")
    if recorded and now and recorded != now:
        print(
            f"critic: the {split} split of {meta.get('data')} differs from the one recorded when the model was "
            f"trained (the data changed since); its figures are not comparable with the card's",
            file=sys.stderr,
        )


def baseline_beside(classifier, trained_on, texts: list[str], labels) -> dict:
    """TF-IDF + logistic regression trained on the model's own training rows, scored on the same reviews, both
    cleaned as the model cleans them."""
    from critic import data as datasets

    clean = datasets.cleaner(classifier.cleaning)
    return tfidf_baseline(
        [clean(t) for t in trained_on["text"]],
        trained_on["label"],
        [clean(t) for t in texts],
        labels,
        classifier.labels,
    )
