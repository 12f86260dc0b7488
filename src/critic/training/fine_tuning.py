"""Fine-tune an encoder into a sentiment classifier (and distil one from a teacher): the FineTuning job that the
training loop (critic.training.loop) runs — the classification loss, validation with selection and early stopping —
on the inputs of critic.training.inputs, ending in critic.training.final_save. critic.training.train chooses it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from critic import data, modeling
from critic.config import TrainConfig
from critic.modeling.attention import own_attention_reason, use_rowwise_attention
from critic.text import Ragged
from critic.training import loop
from critic.training.batches import Plan
from critic.training.checkpoint import RunState, append_log
from critic.training.final_save import finish
from critic.training.inputs import Teacher, load_inputs, review_batches, run_record
from critic.training.processes import Distributed
from critic.training.step import Machine, TrainingStep, freeze_lowest, layer_count, layers_apart


def validation_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    probs = modeling.softmax(logits)
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.tensor(labels)).item())
    accuracy = float((probs.argmax(1) == labels).mean())
    present = len(set(labels.tolist()))
    if probs.shape[1] == 2:
        auc = float(roc_auc_score(labels, probs[:, 1])) if present == 2 else float("nan")
    else:  # one class against the rest, averaged over the classes: needs every class in the validation rows
        auc = (
            float(roc_auc_score(labels, probs, multi_class="ovr", labels=list(range(probs.shape[1]))))
            if present == probs.shape[1]
            else float("nan")
        )
    return {"loss": loss, "accuracy": accuracy, "auc": auc}


def better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new < old if metric == "loss" else new > old


@dataclass(frozen=True)
class ClassificationLoss:
    """A batch's loss, summed over its rows: cross-entropy with the labels; when distilling, mixed with the
    KL divergence from the teacher's probabilities softened at `temperature` (Hinton et al. 2015), scaled by T^2
    so that its gradients keep their size whatever T is."""

    teacher_share: float = 0.0
    temperature: float = 1.0
    class_weights: torch.Tensor | None = None  # on the device of the logits

    def __call__(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        hard = F.cross_entropy(logits, targets["labels"], weight=self.class_weights, reduction="sum")
        if "teacher" not in targets:
            return hard
        t = self.temperature
        soft = F.kl_div(F.log_softmax(logits / t, dim=-1), targets["teacher"], reduction="sum") * t * t
        return (1 - self.teacher_share) * hard + self.teacher_share * soft


# ------------------------------------------------------------------------------ data, validation, checkpoints


def validate(
    model, inputs: Ragged, labels: np.ndarray, device: torch.device, precision: str, pad_id: int, multiple: int
) -> dict:
    """Loss, accuracy and AUC on the validation split; leaves the model in training mode."""
    forward = modeling.torch_forward(model, device, precision)
    logits = modeling.logits(forward, inputs, pad_id, model.config.num_labels, pad_multiple=multiple)
    model.train()  # torch_forward switched dropout off
    return validation_metrics(logits, labels)


def record(state: RunState, metrics: dict, metric: str, epoch: float, train_loss: float) -> tuple[dict, bool]:
    """Add a validation to the history; returns its entry and whether it is the best so far."""
    entry = {
        "step": state.step,
        "epoch": round(epoch, 3),
        **{f"val_{k}": v for k, v in metrics.items()},
        "train_loss": train_loss,
    }
    state.history.append(entry)
    improved = better(metric, metrics[metric], state.best)
    if improved:
        state.best, state.best_step, state.bad_evals = metrics[metric], state.step, 0
    else:
        state.bad_evals += 1
    return entry, improved


# --------------------------------------------------------------------------------------------- the job


def fine_tune(
    config: TrainConfig,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    teacher: Teacher | None = None,
    dataset: data.Dataset | None = None,
    on_validation: Callable[[dict], None] | None = None,
) -> Path:
    """Fine-tune as `config` says (with `teacher`'s probabilities mixed into the loss when distilling); returns the
    model folder. `dataset`: the data, where the caller has read it already."""
    return loop.run(
        config, lambda say: FineTuning(config, say, teacher, progress, dataset), log, progress, on_validation
    )


# Batches of 16 fine-tuned MiniLM unreliably on a few hundred reviews: 600 IMDB labels, 1 epoch, 1,000 test reviews:
# 56.1, 67.6 and 59.7% over three seeds against 78.2 and 81.5% in batches of 8, in the same time (AMD EPYC Zen 4,
# 2026-12-06); 1,000 reviews, 500 test reviews: 79.2% in batches of 16 at lr 2e-4, 80.6% in batches of 8 at 1e-4
# (Zen 3, 2026-12-07); 2,000 reviews in batches of 16 at lr 1e-4: 84.8% (tests/test_integration.py).
SMALL_SPLIT = 1000


def for_small_split(config: TrainConfig, dataset: data.Dataset) -> TrainConfig:
    """The config with `small_split_batch` reviews a batch where the run's training split is small (the cpu
    preset's, unless --batch-size was given), said in a note; else `config` as it is."""
    rows = len(dataset.split("train"))
    rows = min(rows, config.train_size) if config.train_size else rows
    if not 0 < config.small_split_batch < config.batch_size or rows >= SMALL_SPLIT:
        return config
    note = (
        f"batches of {config.small_split_batch} instead of {config.batch_size}: {rows:,} training reviews (under "
        f"{SMALL_SPLIT:,}, batches of {config.batch_size} learn unreliably; --batch-size sets it)"
    )
    return dataclasses.replace(config, batch_size=config.small_split_batch, notes=[*config.notes, note])


class FineTuning(loop.Job):
    """Fine-tuning (and distillation) as a job of the training loop: the classifier, its training and validation
    reviews, the classification loss, validation with selection and early stopping, the final save with
    calibration."""

    def __init__(
        self,
        config: TrainConfig,
        say: Callable[[str], None],
        teacher: Teacher | None,
        progress: bool,
        dataset: data.Dataset | None = None,
    ):
        for note in config.notes:
            say(note)
        self.config, self.say, self.show_progress = config, say, progress
        self.inputs = load_inputs(config, say, teacher, dataset)  # it tokenizes and fills the cache
        self.model, self.lengths = self.inputs.model, self.inputs.train.lengths
        self.output = Path(config.output)
        self.record = run_record(config, self.inputs)

    def training_step(self, machine: Machine, total: int) -> TrainingStep:
        if machine.device.type == "cpu" and not self.config.compile:  # dynamo cannot trace its per-review loop
            if not use_rowwise_attention(self.model):
                kind, own = self.model.config.model_type, self.model.config._attn_implementation
                self.say(f"attention: {kind}'s own ({own}), not critic's row-wise: {own_attention_reason(self.model)}")
        self.keep_lowest_layers()
        self.machine = machine
        weights = None if self.inputs.class_weights is None else self.inputs.class_weights.to(machine.device)
        teacher_share = self.config.teacher_share if self.config.teacher else 0.0
        self.objective = ClassificationLoss(teacher_share, self.config.teacher_temperature, weights)
        return TrainingStep(self.model, self.config, machine, total, self.loss)

    def keep_lowest_layers(self) -> None:
        """The lowest layers kept as pretrained: as many as --frozen-layers says, or the preset's choice (none where
        critic cannot tell the model's layers apart)."""
        asked = self.config.frozen_layers is not None
        layers = layer_count(self.model) if asked or layers_apart(self.model) else 0
        if frozen := self.config.kept_layers(layers):
            learning = freeze_lowest(self.model, frozen)
            lowest = "lowest layer" if frozen == 1 else f"lowest {frozen} layers"
            preset = f"the {self.config.preset} preset's choice; --frozen-layers 0: all learn"
            kept = f"the embeddings and the {lowest} of {layers} kept as pretrained"
            self.say(f"{kept} ({'--frozen-layers' if asked else preset}): {learning:,} parameters learn")
            self.record.notes.append(kept)  # in critic.json and the model card

    def loss(self, forward, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        targets = {key: batch.pop(key) for key in ("labels", "teacher") if key in batch}
        return self.objective(forward(**batch).logits.float(), targets)

    def finished(self, state: RunState, total: int) -> bool:
        return state.step >= total or (bool(self.config.patience) and state.bad_evals >= self.config.patience)

    def saved(self) -> bool:
        return modeling.run_complete(self.output)

    def begin(self, state: RunState, plan: Plan, machine: Machine, dist: Distributed) -> None:
        config = self.config
        self.total = plan.total
        self.say(
            f"training on {len(self.inputs.train):,} reviews, validating on {len(self.inputs.validation):,}; "
            f"{config.max_length} tokens, truncation {config.truncation}; {plan.total:,} steps of "
            + (
                f"up to {config.batch_tokens or config.batch_size * config.max_length:,} tokens"
                if machine.by_tokens
                else f"{config.batch_size} reviews"
            )
            + (f" on each of {dist.world} processes" if dist.world > 1 else "")
            + f"; {machine.device}, {machine.precision}"
        )

    def batches(self, steps: list[np.ndarray], first: int, machine: Machine, dist: Distributed):
        return review_batches(self.inputs, steps, machine, dist)

    def validates_at(self, step: int) -> bool:
        return bool(self.config.eval_every) and step % self.config.eval_every == 0

    def validate(self, state: RunState, epoch: float, train_loss: float) -> bool:
        """Validate, log, keep the best model (with --select best); True when patience has run out."""
        config, inputs, machine = self.config, self.inputs, self.machine
        metrics = validate(
            inputs.model,
            inputs.validation,
            inputs.validation_labels,
            machine.device,
            machine.precision,
            inputs.encoder.pad_id,
            machine.multiple,
        )
        entry, improved = record(state, metrics, config.metric, epoch, train_loss)
        if improved and config.select == "best":
            selected = f"best {config.metric} at step {state.step} (epoch {epoch:.2f})"
            modeling.save(
                inputs.model,
                inputs.tokenizer,
                self.output,
                dataclasses.replace(self.record, selected=selected, validation=entry),
            )
        append_log(self.output / self.log_file, {"event": "eval", **entry})
        self.say(
            f"step {state.step}/{self.total} epoch {epoch:.2f}: val loss {metrics['loss']:.4f} "
            f"accuracy {metrics['accuracy']:.4f} AUC {metrics['auc']:.4f}" + (" (best)" if improved else "")
        )
        stop = config.patience > 0 and state.bad_evals >= config.patience
        if stop:
            self.say(f"early stop: no improvement in {config.patience} evaluations")
        return stop

    def finish(self, state: RunState, steps: loop.Steps) -> None:
        finish(self.inputs, self.config, state, self.record, steps, self.say, self.show_progress)
