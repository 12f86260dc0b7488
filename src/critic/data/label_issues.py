"""Labels that look wrong: rows whose given label disagrees with what a model that never saw them predicts.

Out-of-fold probabilities come from TF-IDF (words and word pairs) and logistic regression, cross-validated with
scikit-learn: no GPU, 166 s for IMDB's 39,717 training reviews on 2 AMD EPYC cores (docs/benchmarks.md). Or, for the
training split, from critic models trained with --fold 1/N … N/N, each scoring the fold it held out (`OutOfFold`,
given by the caller: this stage does not train).
cleanlab's `find_label_issues` then flags the rows whose label the probabilities contradict (confident learning:
per-class thresholds, so a class the model is less sure of is not flagged wholesale), ranked by cleanlab's
label-quality score (lowest first: the most suspicious).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from critic.data.reading import TEXT_COLUMNS, Columns, DataError, pick_column, records

FOLDS = 5
FILE = "label_issues.csv"
# The training split's texts and the class names -> each text's probabilities from a model that never trained on it
OutOfFold = Callable[[list[str], tuple[str, ...]], np.ndarray]


def out_of_fold_probabilities(texts: list[str], labels: np.ndarray, folds: int = FOLDS, seed: int = 42) -> np.ndarray:
    """Each row's class probabilities from a TF-IDF + logistic-regression model trained on the other folds."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    smallest = int(np.bincount(labels).min())
    if smallest < 2:
        raise DataError("label issues need at least 2 rows of every class, for cross-validation")
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000),
        LogisticRegression(C=4.0, max_iter=1000),
    )
    splitter = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    return cross_val_predict(model, texts, labels, cv=splitter, method="predict_proba", n_jobs=1)


def find(
    texts: list[str], labels: np.ndarray, names: tuple[str, ...], folds: int = FOLDS, seed: int = 42
) -> pd.DataFrame:
    """The rows whose label looks wrong, most suspicious first: (row, given, suggested, score)."""
    return flag(labels, out_of_fold_probabilities(texts, labels, folds, seed), names)


def flag(labels: np.ndarray, probs: np.ndarray, names: tuple[str, ...]) -> pd.DataFrame:
    """The rows whose label out-of-fold probabilities `probs` contradict, by cleanlab, most suspicious first."""
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise ImportError("label issues need cleanlab: pip install 'critic[labels]'") from None
    # n_jobs=1: cleanlab's pool of processes forks, and a fork of a process with other threads running (the
    # labelling server plans in a thread beside uvicorn's and torch's) hung in Pool.terminate, 2026-12-06
    flagged = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    scores = get_label_quality_scores(labels, probs, method="self_confidence")
    return pd.DataFrame(
        {
            "row": flagged,
            "given": [names[labels[i]] for i in flagged],
            "suggested": [names[int(probs[i].argmax())] for i in flagged],
            "score": scores[flagged].round(4),
        }
    )


def source_lines(path: str | Path, columns: Columns, texts: pd.Series) -> list[str]:
    """Where each text is in the file it was read from: its line (the first, for a text that occurs twice); blank
    where the source is not one file (an aclImdb folder or tarball)."""
    path = Path(path)
    if not path.is_file() or path.name.endswith(".tar.gz"):
        return [""] * len(texts)
    where_of: dict[str, str] = {}
    text_key = None
    for where, record in records(path):
        if text_key is None:
            text_key = pick_column(list(record), columns.text, TEXT_COLUMNS, "text", path)
        text = record.get(text_key)
        if isinstance(text, str):
            where_of.setdefault(text, str(where))
    return [where_of.get(text, "") for text in texts]


def label_issues(
    dataset, columns: Columns = Columns(), folds: int = FOLDS, seed: int = 42, out_of_fold: OutOfFold | None = None
) -> pd.DataFrame:
    """A dataset's suspicious rows, most suspicious first, with the line of each in its file:
    (line, text, given label, suggested label, score). Every row by cross-validated TF-IDF; with `out_of_fold`,
    the training split's rows by the probabilities it gives."""
    if out_of_fold is None:
        frame = dataset.frame.reset_index(drop=True)
        probs = out_of_fold_probabilities(frame["text"].tolist(), frame["label"].to_numpy(), folds, seed)
    else:
        frame = dataset.split("train")
        probs = out_of_fold(frame["text"].tolist(), tuple(dataset.labels))
    return ranked(frame, probs, tuple(dataset.labels), dataset.manifest["source"], columns)


def ranked(frame: pd.DataFrame, probs: np.ndarray, names: tuple[str, ...], source: str, columns: Columns):
    """The rows of `frame` (text, label) whose label `probs` contradict (from a model that never saw them), most
    suspicious first, with the line of each in `source` where it is a file."""
    frame = frame.reset_index(drop=True)
    found = flag(frame["label"].to_numpy(), probs, names)
    texts = frame["text"].iloc[found["row"]].reset_index(drop=True)
    lines = source_lines(source, columns, texts)
    return pd.DataFrame(
        {
            "line": lines,
            "text": texts,
            "given": found["given"],
            "suggested": found["suggested"],
            "score": found["score"],
        }
    )
