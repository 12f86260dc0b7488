"""An evaluation's figures shown: a terminal summary (`print_summary`), and evaluation.json with an HTML report
(`write`)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from critic import report
from critic.modeling.calibration import describe


def public(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def to_html(summary: dict, title: str, subtitle: str) -> str:
    names = summary["labels"]
    sections = [("Summary", report.kpis(headline_figures(summary)))]
    if summary.get("baseline") or summary.get("calibration"):
        sections.append(("Against a baseline, and calibration", comparison_html(summary)))
    if summary.get("cascade"):
        sections.append(("The cascade", cascade_html(summary["cascade"])))
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
    if "slices" in summary:
        sections.append(
            (f"By {summary['slices']['column']}, the worst first", report.table(SLICE_COLUMNS, slice_rows(summary)))
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


SLICE_COLUMNS = ("value", "reviews", "accuracy", "95% interval")


def slice_rows(summary: dict, most: int = 50) -> list[tuple]:
    return [
        (row["value"], f"{row['reviews']:,}", f"{row['accuracy']:.2%}", f"{row['ci95'][0]:.1%} – {row['ci95'][1]:.1%}")
        for row in summary["slices"]["slices"][:most]
    ]


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


CASCADE_COLUMNS = ("answered by", "accuracy", "95% interval", "macro F1")


def cascade_rows(cascade: dict) -> list[tuple]:
    """(stage, accuracy, 95% interval, macro F1) for the model alone, the cheap stage alone and the cascade."""
    return [
        (
            name,
            f"{row['accuracy']:.2%}",
            f"{row['accuracy_ci95'][0]:.2%} – {row['accuracy_ci95'][1]:.2%}",
            f"{row['f1_macro']:.4f}",
        )
        for name, row in cascade["stages"].items()
    ]


def cascade_note(cascade: dict) -> str:
    return (
        f"the cascade's cheap stage answered {cascade['cheap_share']:.1%} of these reviews, the model the rest "
        "(the figures above are the model's alone; --cascade off serves it so)"
    )


def cascade_html(cascade: dict) -> str:
    return report.table(list(CASCADE_COLUMNS), cascade_rows(cascade)) + f"<p>{html.escape(cascade_note(cascade))}.</p>"


def print_summary(summary: dict, console=None) -> None:
    from rich.console import Console

    console = console or Console()
    print_headline(summary, console)
    per_class = [
        (name, f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1-score']:.4f}", f"{int(c['support'])}")
        for name, c in summary["per_class"].items()
    ]
    console.print(report.terminal_table(None, ("class", "precision", "recall", "F1", "support"), per_class))
    if summary.get("baseline"):
        columns = ("model", "accuracy", "95% interval", "macro F1", "ROC AUC", "ECE")
        console.print(report.terminal_table("against the baseline", columns, comparison_rows(summary)))
    if summary.get("cascade"):
        console.print(report.terminal_table("the cascade", CASCADE_COLUMNS, cascade_rows(summary["cascade"])))
        console.print(cascade_note(summary["cascade"]))
    if summary.get("calibration"):
        fitted = summary["calibration"]
        console.print(
            f"calibrated: {describe(fitted, summary['labels'])}, validation ECE {fitted['ece_before']:.4f}"
            f" -> {fitted['ece_after']:.4f}"
        )
    if "label_issues" in summary:
        found = summary["label_issues"]
        console.print(f"labels that look wrong: {found['rows']:,} ({found['share']:.1%}), ranked in {found['file']}")
    print_breakdowns(summary, console)


def print_headline(summary: dict, console) -> None:
    """Accuracy with its interval and the other scores in a line; top-2 and ordinal scores where there are any."""
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


def print_breakdowns(summary: dict, console) -> None:
    """The tables by slice, by "not sure" target and by length, where the summary has them."""
    if "slices" in summary:
        title = f"by {summary['slices']['column']}, the worst first"
        console.print(report.terminal_table(title, SLICE_COLUMNS, slice_rows(summary, most=15)))
    if "unsure" in summary:
        title = "not sure below a threshold (--min-accuracy)"
        console.print(report.terminal_table(title, UNSURE_COLUMNS, unsure_rows(summary)))
    if "accuracy_by_length" in summary:
        console.print(
            "by length: "
            + ", ".join(
                f"{b['tokens']} tokens {b['accuracy']:.2%} ({b['rows']:,})" for b in summary["accuracy_by_length"]
            )
        )


def write(summary: dict, folder: Path, title: str, subtitle: str) -> tuple[Path, Path]:
    return report.write(folder, "evaluation", public(summary), to_html(summary, title, subtitle))
