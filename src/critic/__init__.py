"""critic: train, evaluate and serve transformer sentiment classifiers for reviews.

    import critic
    frame = critic.load_dataset("imdb", split="train")             # DataFrame: text, label
    path = critic.train_model(model="minilm", train_size=2000)     # a model folder
    summary = critic.evaluate_model(path, "imdb", split="test")    # metrics + report files
    clf = critic.Classifier.load(path)
    clf.predict(["A moving, beautifully shot film."])              # ['positive']
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from critic.data import load_dataset

__version__ = "0.1.0"
__all__ = ["Classifier", "load_dataset", "train_model", "evaluate_model", "profile_dataset"]


def __getattr__(name):
    if name == "Classifier":
        from critic.predict import Classifier

        return Classifier
    raise AttributeError(name)


def train_model(config=None, toml: str | Path | None = None, log=None, progress: bool = True, **settings) -> Path:
    """Fine-tune as `config` (a TrainConfig) or as keyword settings say (with `teacher`: distil from that model);
    returns the model folder."""
    from critic import config as configuration
    from critic.distill import distill
    from critic.train import train

    config = config or configuration.build(settings, toml)
    return (distill if config.teacher else train)(config, log=log, progress=progress)


def evaluate_model(model: str | Path, data: str | Path = "imdb", split: str = "test", size: int | None = None,
                   seed: int = 42, output: str | Path | None = None, progress: bool = False,
                   backend: str = "torch", baseline: bool = True) -> dict:
    """Score `split` of `data` with a trained model and compute every metric; writes evaluation.json and
    evaluation.html to `output` (default: MODEL/evaluation) and records the headline numbers in the model card
    (for the PyTorch model unless another backend is named). With `baseline`, TF-IDF + logistic regression is
    trained on the model's own training rows and scored beside it."""
    from tqdm.auto import tqdm

    from critic import data as datasets, evaluate, model as modelling
    from critic.predict import Classifier

    classifier = Classifier.load(model, backend=backend)
    # the evaluation rows read as the model's training rows were, with the model's classes in the model's order
    columns = dataclasses.replace(datasets.columns_of(classifier.meta.get("config") or {}),
                                  labels=tuple(classifier.labels))
    dataset = datasets.load(data, columns)
    frame = dataset.split(split, size, seed)
    texts = frame["text"].tolist()
    tokens = classifier.encode(texts)
    with tqdm(total=len(texts), unit="review", desc="evaluating", disable=not progress, mininterval=1.0) as bar:
        probs = classifier.proba_from_tokens(tokens, progress=bar)
    summary = evaluate.evaluate(frame["label"].to_numpy(), probs, classifier.labels, texts,
                                tokens.lengths + classifier.encoder.specials,
                                ordered=bool(classifier.meta.get("ordered")))
    if baseline:
        trained_on = evaluate.model_rows(classifier.meta, "train",
                                         dataset if str(data) == str(classifier.meta.get("data")) else None)
        if trained_on is not None:
            clean = datasets.cleaner(classifier.cleaning)
            summary["baseline"] = evaluate.baseline([clean(t) for t in trained_on["text"]], trained_on["label"],
                                                    [clean(t) for t in texts], frame["label"], classifier.labels)
    if classifier.meta.get("calibration", {}).get("applied"):
        summary["calibration"] = classifier.meta["calibration"]
    summary["data"] = f"{data}, split {split}" + (f" (seeded sample of {size})" if size else "")
    summary["backend"] = f"{classifier.backend} {classifier.precision}" if classifier.backend == "torch" else \
        classifier.backend
    folder = Path(output) if output else Path(model) / "evaluation"
    json_path, html_path = evaluate.write(summary, folder, f"Evaluation of {classifier.name}", summary["data"])
    summary["files"] = [str(json_path), str(html_path)]
    headline = {k: summary[k] for k in ("accuracy", "accuracy_ci95", "f1_macro", "f1_weighted", "roc_auc", "pr_auc",
                                        "ece", "top2_accuracy", "mean_absolute_error", "within_one", "rows", "data",
                                        "backend", "baseline") if k in summary}
    if not classifier.meta.get("foreign"):  # a model critic did not train keeps its folder as it was
        modelling.update_meta(model, evaluation=headline)
    return summary


def profile_dataset(data: str | Path = "imdb", tokenizer: str | None = "minilm", cleaning: str = "default",
                    output: str | Path | None = None, columns=None, drop_invalid: bool = False,
                    log=None) -> dict:
    """Profile a dataset (token counts with `tokenizer`'s vocabulary, None to skip them); writes profile.json and
    profile.html when `output` is given. `columns` is a critic.data.Columns for files."""
    from critic import data as datasets, profile, sources
    from critic.text import Encoder

    encoder = None
    if tokenizer:
        from transformers import AutoTokenizer

        encoder = Encoder(AutoTokenizer.from_pretrained(str(sources.resolve_model(tokenizer, log=log))))
    dataset = datasets.load(data, columns or datasets.Columns(), drop_invalid, log=log)
    summary = profile.profile(dataset, encoder, cleaning)
    if output:
        profile.write(summary, Path(output))
    return profile.public(summary)
