"""The evaluation run: a model scores a split of its data (or of other data), every figure is measured
(metrics.py) and written (rendering.py), and the headline goes into the model's card."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from critic import safe_csv
from critic.evaluation.metrics import cascade_figures, measure, slices, tfidf_baseline, unsure_figures
from critic.evaluation.rendering import write

if TYPE_CHECKING:
    from critic.modeling import ModelRecord

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


def evaluate_model(  # noqa: PLR0913 (public: each option a keyword of critic's API and a flag of its verbs)
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
    slice_by: str | None = None,
) -> dict:
    """Score `split` of `data` (default: the data the model was trained on, `trained_on`) with a trained model
    and compute every metric; writes evaluation.json and
    evaluation.html to `output` (default: MODEL/evaluation) and records the headline numbers in the model card
    (for the PyTorch model unless another backend is named). With `baseline`, TF-IDF + logistic regression is
    trained on the model's own training rows and scored beside it. With `label_issues`, the reviews whose label
    the model's probabilities contradict go to OUTPUT/label_issues.csv, the worst into the report. With `slice_by`,
    accuracy per value of that column of the data's file (product, source, stars, date), the worst first."""
    from critic import data as datasets
    from critic import modeling
    from critic.inference.predict import Classifier  # the run scores with the Classifier, as predict does

    classifier = Classifier.load(model, backend=backend, encoder_workers=encoder_workers)
    # the evaluation rows read as the model's training rows were, with the model's classes in the model's order
    record = classifier.record
    columns = dataclasses.replace(record.columns(), labels=tuple(classifier.labels))
    own = data is None
    data = record.trained_on(model) if own else data
    trained_here = str(data) in {str(record.data), str(record.data_path)}
    if label_issues and split in ("train", "all") and trained_here:
        raise ValueError(
            f"--label-issues needs probabilities from a model that never saw the reviews; it trained on the "
            f"{split} split's training rows: evaluate the validation or test split"
        )
    dataset = datasets.load(data, columns)
    if own and not size:
        warn_if_changed(record, dataset, split)
    frame = dataset.split(split, size, seed)
    texts = frame["text"].tolist()
    tokens, probs = score(classifier, texts, progress)
    summary = measure(
        frame["label"].to_numpy(),
        probs,
        classifier.labels,
        texts,
        tokens.lengths + classifier.encoder.specials,
        ordered=bool(record.ordered),
    )
    if slice_by:
        by_text = datasets.values_by_text(data, columns, slice_by)
        correct = probs.argmax(axis=1) == frame["label"].to_numpy()
        summary["slices"] = slices([by_text.get(t) for t in texts], correct, slice_by)
    if baseline:
        training_rows = record.rows("train", dataset if own else None)
        if training_rows is not None:
            summary["baseline"] = baseline_beside(classifier, training_rows, texts, frame["label"])
    if classifier.cheap_stage is not None:  # the model's figures above are its own; the cascade's beside them
        cheap, answered = classifier.cheap_answers(texts)
        summary["cascade"] = cascade_figures(frame["label"].to_numpy(), probs, cheap, answered)
    summary.update(model_records(record, frame["label"].to_numpy(), probs))
    summary["data"] = f"{data}, split {split}" + (f" (seeded sample of {size})" if size else "")
    summary["backend"] = (
        f"{classifier.backend} {classifier.precision}" if classifier.backend == "torch" else classifier.backend
    )
    folder = Path(output) if output else Path(model) / "evaluation"
    if label_issues:
        summary["label_issues"] = model_label_issues(frame, probs, classifier.labels, dataset, columns, folder)
    json_path, html_path = write(summary, folder, f"Evaluation of {classifier.name}", summary["data"])
    summary["files"] = [str(json_path), str(html_path)]
    if not record.foreign:  # a model critic did not train keeps its folder as it was
        modeling.update_record(model, evaluation={k: summary[k] for k in HEADLINE if k in summary})
    return summary


def score(classifier, texts: list[str], progress: bool):
    """The reviews' tokens and the classifier's probabilities, with a progress bar."""
    from tqdm.auto import tqdm

    tokens = classifier.encode(texts)
    classifier.close()  # the encoder's workers, if any (`encoder_workers`, as Classifier.load takes it), are done
    with tqdm(total=len(texts), unit="review", desc="evaluating", disable=not progress, mininterval=1.0) as bar:
        return tokens, classifier.proba_from_tokens(tokens, progress=bar)


def model_records(record: ModelRecord, labels: np.ndarray, probs: np.ndarray) -> dict:
    """What the model's critic.json adds to its evaluation: the calibration it applies, and its "not sure"
    thresholds' accuracy and coverage on these reviews."""
    records = {}
    if (record.calibration or {}).get("applied"):
        records["calibration"] = record.calibration
    if record.abstention:
        records["unsure"] = unsure_figures(labels, probs, record.abstention)
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


def warn_if_changed(record: ModelRecord, dataset, split: str) -> None:
    """Says where the split read now is not the one the model was trained beside (the file changed since)."""
    recorded = record.split_summary(split).get("texts_sha256")
    now = dataset.manifest.get("splits", {}).get(split, {}).get("texts_sha256")
    if recorded and now and recorded != now:
        print(
            f"critic: the {split} split of {record.data} differs from the one recorded when the model was "
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
