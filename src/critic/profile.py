"""What a dataset looks like before training on it: sizes, balance, duplicates, lengths in characters and in
the model's tokens, markup, and samples. As a dict (JSON), a terminal summary and one HTML page."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd

from critic import data, report, safe_csv
from critic.text import Encoder

WINDOWS = (128, 256, 512)
_TAG = re.compile(r"<[a-zA-Z/][^>]{0,80}>")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def profile(
    dataset: data.Dataset, encoder: Encoder | None = None, cleaning: str = "default", samples: int = 3, seed: int = 0
) -> dict:
    """Numbers that describe `dataset`; token counts use `encoder` (the model's tokenizer) after `cleaning`."""
    frame = dataset.frame
    chars = frame["text"].str.len()
    summary: dict = {
        "source": dataset.manifest["source"],
        "rows": len(frame),
        "rows_read": dataset.manifest["rows_read"],
        "rows_dropped_invalid": dataset.manifest["rows_dropped"],
        "exact_duplicates_removed": dataset.manifest["duplicates_removed"],
        "duplicates_across_splits": _cross_split_duplicates(frame),
        "splits": dataset.manifest["splits"],
        "labels": list(dataset.labels),
        "label_balance": {name: int((frame["label"] == i).sum()) for i, name in enumerate(dataset.labels)},
        "rare_classes": rare_classes(frame["label"].to_numpy(), dataset.labels),
        "characters": _stats(chars.to_numpy()),
        "share_with_html_tags": float(frame["text"].str.contains(_TAG).mean()),
        "share_with_non_ascii": float(frame["text"].str.contains(_NON_ASCII).mean()),
        "cleaning": cleaning,
    }
    if encoder is not None:
        clean = data.cleaner(cleaning)
        tokens = encoder.encode([clean(t) for t in frame["text"]]).lengths + encoder.specials
        summary["tokens"] = _stats(tokens)
        summary["tokens"]["tokenizer"] = encoder.tokenizer.name_or_path
        summary["share_truncated"] = {str(w): float((tokens > w).mean()) for w in WINDOWS}
        summary["_token_lengths"] = tokens
    rng = np.random.default_rng(seed)
    summary["samples"] = [
        {"label": dataset.labels[label], "text": text[:400] + ("…" if len(text) > 400 else "")}
        for label in range(len(dataset.labels))
        for text in frame.loc[frame["label"] == label, "text"].iloc[
            rng.choice(
                int((frame["label"] == label).sum()),
                size=min(samples, int((frame["label"] == label).sum())),
                replace=False,
            )
        ]
    ]
    summary["_char_lengths"] = chars.to_numpy()
    summary["_labels"] = frame["label"].to_numpy()
    return summary


RARE_SHARE, RARE_ROWS = 0.05, 50


def rare_classes(labels: np.ndarray, names: tuple[str, ...]) -> list[str]:
    """Warnings for classes under 5% of the rows or under 50 rows: too few to learn or to measure well."""
    warnings = []
    for i, name in enumerate(names):
        count = int((labels == i).sum())
        if count < RARE_ROWS or count < RARE_SHARE * len(labels):
            warnings.append(
                f"class {name!r} has {count:,} rows ({count / max(len(labels), 1):.1%}): consider "
                f"--class-weights balanced, and read its recall, not only the accuracy"
            )
    return warnings


def _cross_split_duplicates(frame: pd.DataFrame) -> int:
    per_text = frame.groupby("text", sort=False)["split"].nunique()
    return int((per_text > 1).sum())


def _stats(values: np.ndarray) -> dict:
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "p99": float(np.percentile(values, 99)),
        "min": int(values.min()),
        "max": int(values.max()),
    }


def public(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def to_html(summary: dict, title: str = "Dataset profile") -> str:
    sections = [
        (
            "Overview",
            report.kpis(
                [
                    ("rows after dedupe", summary["rows"]),
                    ("rows read", summary["rows_read"]),
                    ("invalid rows dropped", summary["rows_dropped_invalid"]),
                    ("exact duplicates removed", summary["exact_duplicates_removed"]),
                    ("texts in two splits", summary["duplicates_across_splits"]),
                    ("with HTML tags", f"{summary['share_with_html_tags']:.1%}"),
                    ("with non-ASCII", f"{summary['share_with_non_ascii']:.1%}"),
                ]
            ),
        )
    ]
    names = summary["labels"]
    split_rows = [
        (name, s["rows"], *(s["classes"].get(c, 0) for c in names), s["texts_sha256"][:16])
        for name, s in summary["splits"].items()
    ]
    sections.append(
        (
            "Splits and label balance",
            report.table(["split", "rows", *names, "texts sha256 (first 16)"], split_rows)
            + "".join(f"<p class='warn'>{html.escape(w)}</p>" for w in summary["rare_classes"]),
        )
    )
    plots = [
        length_plot(summary[key], summary["_labels"], names, unit)
        for key, unit in (("_char_lengths", "characters"), ("_token_lengths", "tokens"))
        if key in summary
    ]
    sections.append(("Lengths", f"<div class='grid'>{''.join(plots)}</div>"))
    length_rows = [
        (unit, *(summary[unit][k] for k in ("mean", "median", "p90", "p99", "max")))
        for unit in ("characters", "tokens")
        if unit in summary
    ]
    sections.append(("Length statistics", report.table(["unit", "mean", "median", "p90", "p99", "max"], length_rows)))
    if "share_truncated" in summary:
        sections.append(
            (
                f"Truncated by the window ({summary['tokens']['tokenizer']})",
                report.table(
                    ["window (tokens)", "share of reviews longer"],
                    [(w, f"{s:.1%}") for w, s in summary["share_truncated"].items()],
                ),
            )
        )
    if "label_issues" in summary:
        sections.append(("Labels that look wrong", label_issues_html(summary["label_issues"])))
    sections.append(
        (
            "Samples",
            report.table(["label", "text"], [(s["label"], s["text"]) for s in summary["samples"]], text_columns=(1,)),
        )
    )
    return report.page(title, summary["source"], sections)


def length_plot(values: np.ndarray, labels: np.ndarray, names: list[str], unit: str) -> str:
    """One histogram of review lengths per class, with the windows marked on the token lengths."""
    fig, ax = report.figure()
    upper = np.percentile(values, 99.5)
    colours = ("#c0392b", "#2e86c1") if len(names) == 2 else report.plt.cm.viridis(np.linspace(0, 0.9, len(names)))
    for label, color in enumerate(colours):
        ax.hist(np.minimum(values[labels == label], upper), bins=60, alpha=0.55, color=color, label=names[label])
    if unit == "tokens":
        for w in WINDOWS:
            ax.axvline(w, color="#333", lw=0.8, ls="--")
            ax.text(w, ax.get_ylim()[1] * 0.92, f" {w}", fontsize=8)
    ax.set_xlabel(f"review length ({unit}, clipped at p99.5)")
    ax.set_ylabel("reviews")
    ax.legend()
    return f"<figure>{report.svg(fig)}</figure>"


def label_issues_html(found: dict) -> str:
    intro = (
        f"<p>{found['rows']:,} of {found['scanned']:,} rows ({found['share']:.1%}) whose label disagrees with "
        f"out-of-fold predictions of {html.escape(found['method'])} (cleanlab's confident learning); all of them, "
        f"ranked, in {html.escape(found['file'])}. The {len(found['top'])} most suspicious:</p>"
    )
    rows = [(r["line"], r["given"], r["suggested"], r["score"], r["text"]) for r in found["top"]]
    return intro + report.table(["line", "given", "suggested", "score", "text"], rows, text_columns=(4,))


def print_summary(summary: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="Dataset profile", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("source", summary["source"])
    table.add_row(
        "rows",
        f"{summary['rows']:,} (read {summary['rows_read']:,}, "
        f"{summary['exact_duplicates_removed']:,} exact duplicates removed, "
        f"{summary['rows_dropped_invalid']:,} invalid dropped)",
    )
    table.add_row("splits", ", ".join(f"{k} {v['rows']:,}" for k, v in summary["splits"].items()))
    table.add_row("texts in two splits", str(summary["duplicates_across_splits"]))
    total = max(sum(summary["label_balance"].values()), 1)
    table.add_row("labels", ", ".join(f"{k} {v:,} ({v / total:.1%})" for k, v in summary["label_balance"].items()))
    for warning in summary["rare_classes"]:
        table.add_row("[yellow]warning[/yellow]", warning)
    c = summary["characters"]
    table.add_row("characters", f"mean {c['mean']:.0f}, median {c['median']:.0f}, p90 {c['p90']:.0f}, max {c['max']:,}")
    if "tokens" in summary:
        t = summary["tokens"]
        table.add_row("tokens", f"mean {t['mean']:.0f}, median {t['median']:.0f}, p90 {t['p90']:.0f}, max {t['max']:,}")
        table.add_row("longer than", ", ".join(f"{w}: {s:.1%}" for w, s in summary["share_truncated"].items()))
    table.add_row("HTML tags", f"{summary['share_with_html_tags']:.1%} of reviews")
    table.add_row("non-ASCII", f"{summary['share_with_non_ascii']:.1%} of reviews")
    if "label_issues" in summary:
        found = summary["label_issues"]
        table.add_row("labels that look wrong", f"{found['rows']:,} ({found['share']:.1%}), ranked in {found['file']}")
    console.print(table)


def write(summary: dict, folder: Path) -> tuple[Path, Path]:
    return report.write(folder, "profile", public(summary), to_html(summary))


def profile_dataset(  # noqa: PLR0913 (public: each option a keyword of critic's API and a flag of its verbs)
    data: str | Path = "imdb",
    tokenizer: str | None = "minilm",
    cleaning: str = "default",
    output: str | Path | None = None,
    columns=None,
    drop_invalid: bool = False,
    log=None,
    label_issues: bool = False,
    out_of_fold=None,
) -> dict:
    """Profile a dataset (token counts with `tokenizer`'s vocabulary, None to skip them); writes profile.json and
    profile.html when `output` is given. `columns` is a critic.data.Columns for files. With `label_issues`, the
    rows whose label looks wrong (critic.data.label_issues) go to OUTPUT/label_issues.csv, the worst into the page:
    by cross-validated TF-IDF, or the training split's rows by `out_of_fold` (a `label_issues.OutOfFold`, with a
    `description` attribute: critic.training.distill.FoldModels is one, for models trained with --fold)."""
    from critic import data as datasets
    from critic.data import catalogue

    encoder = None
    if tokenizer:
        from transformers import AutoTokenizer

        encoder = Encoder(AutoTokenizer.from_pretrained(str(catalogue.resolve_model(tokenizer, log=log))))
    dataset = datasets.load(data, columns or datasets.Columns(), drop_invalid, log=log)
    summary = profile(dataset, encoder, cleaning)
    if label_issues:
        summary["label_issues"] = find_label_issues(dataset, columns or datasets.Columns(), output, log, out_of_fold)
    if output:
        write(summary, Path(output))
    return public(summary)


def find_label_issues(dataset, columns, output: str | Path | None, log=None, out_of_fold=None, top: int = 20) -> dict:
    """The rows whose label looks wrong: written to OUTPUT/label_issues.csv (all of them, ranked), summarised."""
    from critic.data import label_issues

    if out_of_fold is None:
        method = f"TF-IDF + logistic regression ({label_issues.FOLDS} folds)"
        rows = len(dataset.frame)
    else:
        method, rows = out_of_fold.description, len(dataset.split("train"))
    if log:
        log(f"looking for labels that look wrong in {rows:,} rows: out-of-fold predictions of {method}")
    found = label_issues.label_issues(dataset, columns, out_of_fold=out_of_fold)
    file = ""
    if output:
        Path(output).mkdir(parents=True, exist_ok=True)
        file = str(Path(output) / label_issues.FILE)
        safe_csv.write_frame(found, file)
    return {
        "rows": len(found),
        "share": len(found) / max(rows, 1),
        "scanned": rows,
        "method": method,
        "file": file,
        "top": found.head(top).to_dict("records"),
    }
