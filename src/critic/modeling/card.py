"""The model card (README.md) of a model folder: metadata the hub reads, then what a reader needs in prose."""

from __future__ import annotations

from pathlib import Path

from critic.modeling.calibration import describe
from critic.modeling.record import ModelRecord

HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "mpnet": "sentence-transformers/all-mpnet-base-v2"}


CARD_METRICS = {"accuracy": "accuracy", "f1_macro": "f1", "roc_auc": "roc_auc", "pr_auc": "pr_auc", "ece": "ece"}


def model_card(record: ModelRecord) -> str:
    """The model card (README.md): metadata through huggingface_hub's ModelCardData (base model, dataset, and the
    evaluation as a model-index, as the hub and setfit read it), then what a reader needs in prose."""
    from huggingface_hub import ModelCard

    base = record.base_model or ""
    evaluation = record.evaluation or {}
    truncation = record.truncation
    lines = [
        f"# {record.name}",
        "",
        f"A sentiment classifier fine-tuned with critic from `{base}` on {record.data}.",
        f"Labels: {', '.join(record.labels)}.",
        "",
        "## Use",
        "",
        "```python",
        "from critic import Classifier",
        "clf = Classifier.load('PATH')",
        "clf.predict(['A moving, beautifully shot film.'])",
        "```",
        "",
        "The folder is a standard Hugging Face model: "
        "`transformers.pipeline('text-classification', model='PATH')` loads it too; its tokenizer carries critic's "
        "default cleaning (without critic's long-review handling).",
        "",
        "## Training",
        "",
        f"- cleaning: `{record.cleaning}`; window: {truncation.get('max_length')} tokens, "
        f"truncation `{truncation.get('strategy')}` (head {truncation.get('head')})",
        f"- training rows: {record.train_rows}; selected checkpoint: {record.selected}",
    ]
    for note in record.notes:
        lines.append(f"- note: {note}")
    if evaluation:
        lines += evaluation_lines(evaluation)
    fitted = record.calibration
    if fitted and fitted.get("applied"):
        lines += [
            "",
            f"Calibrated: {describe(fitted, record.labels)} (fitted on {fitted['rows']:,} validation "
            f"reviews) is folded into the classification head; validation ECE {fitted['ece_before']:.4f} "
            f"before, {fitted['ece_after']:.4f} after.",
        ]
    return str(ModelCard(f"---\n{card_data(record).to_yaml()}\n---\n" + "\n".join(lines) + "\n"))


def card_data(record: ModelRecord):
    """The card's metadata: base model, dataset, and the evaluation as a model-index."""
    from huggingface_hub import EvalResult, ModelCardData

    base = record.base_model or ""
    hub_id = HUB_IDS.get(base, base if "/" in base and not Path(base).exists() else None)
    evaluation = record.evaluation or {}
    results = [
        EvalResult(
            task_type="text-classification",
            dataset_type="imdb" if record.data == "imdb" else "custom",
            dataset_name=str(evaluation.get("data")),
            metric_type=metric,
            metric_value=float(evaluation[key]),
        )
        for key, metric in CARD_METRICS.items()
        if isinstance(evaluation.get(key), (int, float))
    ]
    return ModelCardData(
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["sentiment", "critic"],
        base_model=hub_id,
        datasets=["imdb"] if record.data == "imdb" else None,
        model_name=record.name if results else None,
        eval_results=results or None,
    )


def evaluation_lines(evaluation: dict) -> list[str]:
    """The card's evaluation section: the headline metrics as a table, and the baseline beside them."""
    lines = [
        "",
        "## Evaluation",
        "",
        f"On {evaluation.get('data')} ({evaluation.get('rows')} reviews):",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("accuracy", "accuracy_ci95", "f1_macro", "roc_auc", "pr_auc", "ece"):
        if key in evaluation:
            value = evaluation[key]
            shown = f"{value[0]:.4f} – {value[1]:.4f}" if isinstance(value, list) else f"{value:.4f}"
            lines.append(f"| {key} | {shown} |")
    base = evaluation.get("baseline")
    if base:
        low, high = base["accuracy_ci95"]
        lines += [
            "",
            f"Baseline on the same reviews, trained on the same {base['train_rows']:,} training reviews: "
            f"{base['model']}, accuracy {base['accuracy']:.4f} ({low:.4f} – {high:.4f}).",
        ]
    return lines
