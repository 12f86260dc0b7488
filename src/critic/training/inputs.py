"""What every job of the training loop starts from, and what a fine-tuned model's record says of its run: the
model and its tokenizer, the training and validation reviews tokenized, the targets (labels, and a teacher's softened
probabilities when distilling), class weights, and the reviews in batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from critic import data, modeling
from critic.config import TrainConfig, parse_fold
from critic.data import catalogue, sources
from critic.modeling import ModelRecord
from critic.text import DEFAULT_LONG_REVIEWS, DEFAULT_POOL, Encoder, Ragged, Truncation, carry_cleaning, prepare
from critic.training.batches import prepared_batches
from critic.training.processes import Distributed
from critic.training.step import Machine


@dataclass
class Inputs:
    """What a run starts from: the model and its tokenizer, and the training and validation reviews, tokenized."""

    dataset: data.Dataset
    model: torch.nn.Module
    tokenizer: object
    encoder: Encoder
    truncation: Truncation
    train: Ragged
    targets: dict[str, torch.Tensor]  # per training row: labels, and a teacher's softened probabilities
    validation: Ragged
    validation_labels: np.ndarray
    class_weights: torch.Tensor | None = None


# (training texts, the classes) -> the teacher's probabilities (critic.training.distill)
Teacher = Callable[[list[str], list[str]], np.ndarray]


def load_inputs(
    config: TrainConfig, say: Callable[[str], None], teacher: Teacher | None = None, dataset: data.Dataset | None = None
) -> Inputs:
    """The run's data, model and tokenized reviews; `dataset` where the caller has read the data already."""
    if dataset is None:
        dataset = data.load(config.data, data.columns_of(config), config.drop_invalid, log=say)
    train_frame, val_frame = split_frames(config, dataset, config.eval_size)
    model, tokenizer = modeling.build(
        catalogue.resolve_model(config.model, log=say), dataset.labels, dropout=config.dropout
    )
    carry_cleaning(tokenizer, config.cleaning)  # the saved folder reads raw reviews as critic does
    encoder = Encoder(tokenizer)
    truncation = Truncation(config.max_length, config.truncation, config.head_tokens)
    cache = sources.cache_root() / "tokens"
    targets = {"labels": torch.tensor(train_frame["label"].to_numpy())}
    weights = class_weights(config.class_weights, train_frame["label"].to_numpy(), dataset.labels)
    if config.teacher:
        if teacher is None:
            raise ValueError("a run with a teacher is started by critic.training.distill (or `critic distill`)")
        probs = teacher(train_frame["text"].tolist(), list(dataset.labels))
        agree = (probs.argmax(1) == train_frame["label"].to_numpy()).mean()
        say(
            f"teacher {config.teacher} agrees with {agree:.2%} of the training labels"
            + (
                "; a teacher that learned these labels mostly repeats them (on one H200 its student gained 0.2 "
                "points): teachers trained with --fold 1/N … N/N teach out of fold"
                if agree > 0.98 and "," not in config.teacher
                else ""
            )
        )
        targets["teacher"] = torch.from_numpy(soften(probs, config.teacher_temperature))
    return Inputs(
        dataset,
        model,
        tokenizer,
        encoder,
        truncation,
        prepare(train_frame["text"], encoder, config.cleaning, truncation, cache),
        targets,
        prepare(val_frame["text"], encoder, config.cleaning, truncation, cache),
        val_frame["label"].to_numpy(),
        weights,
    )


def split_frames(config: TrainConfig, dataset: data.Dataset, eval_size: int | None) -> tuple:
    """The training rows and the validation rows (a seeded `eval_size` of them). With --fold K/N, validation is
    the training split's K-th fold, and the validation split stays unseen."""
    train_frame = dataset.split("train", config.train_size, config.seed)
    if not config.fold:
        return train_frame, dataset.split("validation", eval_size, config.seed)
    k, n = parse_fold(config.fold)
    held = data.fold_of(train_frame["text"], n) == k - 1
    train_frame, val_frame = train_frame[~held].reset_index(drop=True), train_frame[held].reset_index(drop=True)
    if eval_size and eval_size < len(val_frame):
        val_frame = val_frame.sample(n=eval_size, random_state=config.seed).reset_index(drop=True)
    return train_frame, val_frame


def class_weights(spec: str, labels: np.ndarray, names: tuple[str, ...]) -> torch.Tensor | None:
    """Per-class weights of the loss: none, balanced (rows / (classes x rows of the class), as scikit-learn's
    compute_class_weight), or explicit 'a=1,b=3' (classes left out weigh 1)."""
    if spec == "none":
        return None
    if spec == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        present = np.unique(labels)
        weights = np.ones(len(names))
        weights[present] = compute_class_weight("balanced", classes=present, y=labels)
        return torch.tensor(weights, dtype=torch.float32)
    weights = np.ones(len(names))
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, value = item.partition("=")
        if name.strip() not in names:
            raise ValueError(f"class weight '{item}': no class {name.strip()!r}; the classes are {', '.join(names)}")
        try:
            weights[names.index(name.strip())] = float(value)
        except ValueError:
            raise ValueError(f"class weight '{item}': write CLASS=NUMBER, e.g. neutral=3") from None
    return torch.tensor(weights, dtype=torch.float32)


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the teacher's logits divided by T, recovered from its (possibly window-pooled)
    probabilities."""
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    return (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)


def run_record(
    config: TrainConfig, inputs: Inputs, long_reviews: str = DEFAULT_LONG_REVIEWS, pool: str = DEFAULT_POOL
) -> ModelRecord:
    """What critic.json says of the run before its first validation; `long_reviews` and `pool`: how the model reads
    long reviews unless the config says (the few-label fit reads them through windows)."""
    return ModelRecord(
        name=Path(config.output).name,
        base_model=config.model,
        base_model_commit=catalogue.hub_commit(config.model),
        data=config.data,
        data_path=str(Path(config.data).resolve()) if Path(config.data).exists() else None,
        labels=list(inputs.dataset.labels),
        ordered=data.is_ordered(inputs.dataset.labels),
        cleaning=config.cleaning,
        truncation=inputs.truncation.as_dict(),
        train_rows=len(inputs.train),
        manifest=inputs.dataset.manifest,
        config=config.to_dict(),
        long_reviews={
            "mode": config.long_reviews or long_reviews,
            "stride": config.window_stride,
            "pool": config.window_pool or pool,
        },
        notes=list(config.notes),
        distilled_from={
            "teacher": config.teacher,
            "share": config.teacher_share,
            "temperature": config.teacher_temperature,
            "windows": config.teacher_windows,
        }
        if config.teacher
        else None,
    )


def review_batches(inputs: Inputs, steps: list[np.ndarray], machine: Machine, dist: Distributed):
    """This process's share of each step's training reviews, padded, with their targets."""
    return prepared_batches(
        steps,
        inputs.train,
        inputs.targets,
        inputs.encoder.pad_id,
        machine.multiple,
        dist.rank,
        dist.world,
        pin=machine.device.type == "cuda",
    )
