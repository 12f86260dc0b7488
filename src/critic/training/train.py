"""Fine-tune an encoder into a sentiment classifier (and distil one from a teacher): the FineTuning job that the
training loop (critic.training.loop) runs — the classifier and its reviews, the classification loss, validation with
selection and early stopping, and the final save with calibration.

A run in OUTPUT writes: the model (the best or last checkpoint, a standard Hugging Face folder), train_config.json,
train_log.jsonl, stats.csv (the notebook's table), learning_curve.svg and checkpoint/ (everything needed to
resume: weights, optimiser, schedule, loss scale, every process's random state, position). Under torchrun the same
command trains with DistributedDataParallel, on one machine or several (OUTPUT on a filesystem they all see).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from critic import data, modeling, safe_csv
from critic.config import TrainConfig, parse_fold
from critic.data import sources
from critic.modeling import abstention, calibration
from critic.modeling.attention import use_rowwise_attention
from critic.text import DEFAULT_LONG_REVIEWS, DEFAULT_POOL, Encoder, Ragged, Truncation, carry_cleaning, prepare
from critic.training import loop
from critic.training.loop import Clock, Distributed, Machine, Plan, RunState, TrainingStep, append_log, prepared_batches


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
        sources.resolve_model(config.model, log=say), dataset.labels, dropout=config.dropout
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


def validate(
    model, inputs: Ragged, labels: np.ndarray, device: torch.device, precision: str, pad_id: int, multiple: int
) -> dict:
    """Loss, accuracy and AUC on the validation split; leaves the model in training mode."""
    forward = modeling.torch_forward(model, device, precision)
    logits = modeling.logits(forward, inputs, pad_id, model.config.num_labels, pad_multiple=multiple)
    model.train()  # torch_forward switched dropout off
    return validation_metrics(logits, labels)


def record(progress: RunState, metrics: dict, metric: str, epoch: float, train_loss: float) -> tuple[dict, bool]:
    """Add a validation to the history; returns its entry and whether it is the best so far."""
    entry = {
        "step": progress.step,
        "epoch": round(epoch, 3),
        **{f"val_{k}": v for k, v in metrics.items()},
        "train_loss": train_loss,
    }
    progress.history.append(entry)
    improved = better(metric, metrics[metric], progress.best)
    if improved:
        progress.best, progress.best_step, progress.bad_evals = metrics[metric], progress.step, 0
    else:
        progress.bad_evals += 1
    return entry, improved


def validate_and_select(
    inputs: Inputs,
    machine: Machine,
    config: TrainConfig,
    progress: RunState,
    total: int,
    epoch: float,
    train_loss: float,
    meta: dict,
    say: Callable[[str], None],
) -> bool:
    """Validate, log, keep the best model (with --select best); True when patience has run out."""
    output = Path(config.output)
    metrics = validate(
        inputs.model,
        inputs.validation,
        inputs.validation_labels,
        machine.device,
        machine.precision,
        inputs.encoder.pad_id,
        machine.multiple,
    )
    entry, improved = record(progress, metrics, config.metric, epoch, train_loss)
    if improved and config.select == "best":
        modeling.save(
            inputs.model,
            inputs.tokenizer,
            output,
            {
                **meta,
                "selected": f"best {config.metric} at step {progress.step} (epoch {epoch:.2f})",
                "validation": entry,
            },
        )
    append_log(output / "train_log.jsonl", {"event": "eval", **entry})
    say(
        f"step {progress.step}/{total} epoch {epoch:.2f}: val loss {metrics['loss']:.4f} "
        f"accuracy {metrics['accuracy']:.4f} AUC {metrics['auc']:.4f}" + (" (best)" if improved else "")
    )
    return config.patience > 0 and progress.bad_evals >= config.patience


def run_meta(
    config: TrainConfig, inputs: Inputs, long_reviews: str = DEFAULT_LONG_REVIEWS, pool: str = DEFAULT_POOL
) -> dict:
    """What critic.json says of the run, besides its history; `long_reviews` and `pool`: how the model reads long
    reviews unless the config says (the few-label fit reads them through windows)."""
    return {
        "name": Path(config.output).name,
        "base_model": config.model,
        **({"base_model_commit": commit} if (commit := sources.hub_commit(config.model)) else {}),
        "data": config.data,
        **({"data_path": str(Path(config.data).resolve())} if Path(config.data).exists() else {}),
        "labels": list(inputs.dataset.labels),
        "ordered": data.is_ordered(inputs.dataset.labels),
        "cleaning": config.cleaning,
        "truncation": inputs.truncation.as_dict(),
        "train_rows": len(inputs.train),
        "manifest": inputs.dataset.manifest,
        "config": config.to_dict(),
        "long_reviews": {
            "mode": config.long_reviews or long_reviews,
            "stride": config.window_stride,
            "pool": config.window_pool or pool,
        },
        "notes": config.notes,
        **(
            {
                "distilled_from": {
                    "teacher": config.teacher,
                    "share": config.teacher_share,
                    "temperature": config.teacher_temperature,
                    "windows": config.teacher_windows,
                }
            }
            if config.teacher
            else {}
        ),
    }


# --------------------------------------------------------------------------------------------- the job


def train(
    config: TrainConfig,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    teacher: Teacher | None = None,
    on_validation: Callable[[dict], None] | None = None,
) -> Path:
    """Train as `config` says; returns the folder of the saved model. Resumes when OUTPUT has a checkpoint.
    `teacher` gives the teacher's probabilities when distilling (critic.training.distill.distill passes it);
    `on_validation` is called with each validation's history entry (critic.training.tune reports them to its pruner)."""
    from critic.training import few_labels  # it builds on this module's inputs and final steps

    dataset = None
    if teacher is None and few_labels.considered(config):  # read once, for the choice and for the chosen path
        say = loop.speaker(log, loop.first_process())  # as the run will say it: a download is not silent
        dataset = data.load(config.data, data.columns_of(config), config.drop_invalid, log=say)
        if few_labels.wanted(config, dataset):
            return few_labels.fit(config, log, dataset, progress)
    return loop.run(
        config, lambda say: FineTuning(config, say, teacher, progress, dataset), log, progress, on_validation
    )


class FineTuning:
    """Fine-tuning (and distillation) as a job of the training loop: the classifier, its training and validation
    reviews, the classification loss, validation with selection and early stopping, the final save with
    calibration."""

    log_file = "train_log.jsonl"
    config_file = "train_config.json"

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
        self.meta = run_meta(config, self.inputs)

    def training_step(self, machine: Machine, world: int, total: int) -> TrainingStep:
        if machine.device.type == "cpu" and not self.config.compile:  # dynamo cannot trace its per-review loop
            use_rowwise_attention(self.model)
        self.machine = machine
        weights = None if self.inputs.class_weights is None else self.inputs.class_weights.to(machine.device)
        teacher_share = self.config.teacher_share if self.config.teacher else 0.0
        objective = ClassificationLoss(teacher_share, self.config.teacher_temperature, weights)
        return TrainingStep(self.model, self.config, machine.device, machine.precision, world, total, objective)

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

    def rows(self, batch: dict) -> int:
        return len(batch["labels"])

    def validates_at(self, step: int) -> bool:
        return bool(self.config.eval_every) and step % self.config.eval_every == 0

    def validate(self, state: RunState, epoch: float, train_loss: float) -> bool:
        stop = validate_and_select(
            self.inputs, self.machine, self.config, state, self.total, epoch, train_loss, self.meta, self.say
        )
        if stop:
            self.say(f"early stop: no improvement in {self.config.patience} evaluations")
        return stop

    def finish(self, state: RunState, clock: Clock, samples: int, training_step: TrainingStep, world: int) -> None:
        finish(
            self.inputs,
            self.config,
            self.machine,
            state,
            self.meta,
            training_step,
            clock,
            samples,
            world,
            self.say,
            self.show_progress,
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


def finish(
    inputs: Inputs,
    config: TrainConfig,
    machine: Machine,
    state: RunState,
    meta: dict,
    training_step: TrainingStep,
    clock: Clock,
    samples: int,
    world: int,
    say: Callable[[str], None],
    progress: bool,
) -> None:
    """The model (with --select last), calibrated; its history and speed in critic.json, stats.csv, the curves, a
    summary."""
    output = Path(config.output)
    stepping = clock.training_seconds()
    elapsed = time.perf_counter() - clock.started
    fp16 = training_step.scaler.is_enabled()
    skipped = training_step.skipped_steps(state.step)
    if config.select == "last":
        modeling.save(
            inputs.model,
            inputs.tokenizer,
            output,
            {**meta, "selected": f"last (step {state.step})", "validation": state.history[-1]},
        )
    # A run whose final save is done again has trained no step in this process: it has no speed to record.
    speed = (
        {"train_seconds": elapsed, "validation_seconds": clock.paused, "train_samples_per_second": samples / stepping}
        if samples
        else {}
    )
    modeling.update_meta(
        output,
        history=state.history,
        precision=training_step.precision,
        processes=world,
        **speed,
        **({"fp16_skipped_steps": skipped} if fp16 else {}),
    )
    calibrate_and_record(config, output, inputs, machine, say, progress)
    write_stats(state.history, output)
    modeling.update_meta(output, complete=True)  # last: a rerun of a run without it saves it again
    if progress:
        print_stats(state.history, state.best_step)
    if fp16:
        say(f"fp16: {skipped} of {state.step} steps skipped for overflowing gradients (the loss scale adapts)")
    say(
        f"trained in {elapsed:.0f} s"
        + (
            f": {samples / stepping:.1f} samples/s in training steps, {clock.paused:.0f} s validating and checkpointing"
            if samples
            else ""
        )
        + f"; best val {config.metric} {state.best:.4f} at step {state.best_step}; model in {output}"
    )


def calibrate_and_record(
    config: TrainConfig, output: Path, inputs: Inputs, machine: Machine, say, progress: bool = False
) -> tuple:
    """The saved model's last steps, for fine-tuning and the few-label fit alike: calibrated on the whole validation
    split, with its --min-accuracy curve in critic.json, measured as the model answers by default (through windows
    where it reads long reviews so). Returns those validation probabilities, and the labels."""
    texts, reviews, labels = final_validation(config, inputs, say)
    model, tokenizer, meta, logits, hidden = validation_logits(
        output, reviews, inputs, machine, progress, head_inputs=config.calibrate
    )
    if config.calibrate:  # on each window's logits: what the head computes, whatever pools them
        logits = calibrate(output, model, tokenizer, meta, logits, labels, say, hidden)
    if meta["long_reviews"]["mode"] == "windows":
        probs = windowed_probabilities(output, texts, machine, say, progress)
    else:
        probs = modeling.softmax(logits)
    record_abstention(output, probs, labels, say)
    if note := one_sided(probs.argmax(axis=1), labels, inputs.dataset.labels):
        say(f"warning: {note}")
    return probs, labels


def windowed_probabilities(output: Path, texts: list[str], machine: Machine, say, progress: bool) -> np.ndarray:
    """The saved model's probabilities for whole reviews, as `critic predict` gives them by default for a model
    that reads long reviews through overlapping windows."""
    from tqdm.auto import tqdm

    # the Classifier frames and pools the windows as every consumer does (training imports it only here, as
    # distillation does for its teacher)
    from critic.inference.predict import Classifier

    say(f"scoring the {len(texts):,} validation reviews whole, through windows, as the model answers by default")
    classifier = Classifier.load(output, device=str(machine.device), precision=machine.precision, backend="torch")
    with tqdm(total=len(texts), unit="review", desc="windows", disable=not progress, mininterval=1.0) as bar:
        return classifier.predict_proba(texts, progress=bar)


ONE_SIDED_SHARE = 0.9  # of the validation reviews answered with one class, at least 10 points above its share


def one_sided(predicted: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> str | None:
    """What to tell of a model that answers one class for nearly every validation review, more often than the class
    occurs: it tells the classes apart little better than their shares (drugs, 8 labels per class: the calibrated
    model answered 'positive' for 97% of the reviews, 64% of which are). None for a model that does not."""
    top = int(np.bincount(predicted, minlength=len(names)).argmax())
    answered, occurs = float((predicted == top).mean()), float((labels == top).mean())
    if answered < ONE_SIDED_SHARE or answered - occurs < 0.1:
        return None
    recalls = [float((predicted[labels == c] == c).mean()) for c in range(len(names)) if (labels == c).any()]
    return (
        f"the model answers {names[top]!r} for {answered:.0%} of the validation reviews, of which {occurs:.0%} are: "
        f"it tells the classes apart little better than their shares (balanced accuracy {np.mean(recalls):.2f}, "
        f"{1 / len(names):.2f} by chance); label more reviews of the other classes"
    )


def final_validation(
    config: TrainConfig, inputs: Inputs, say: Callable[[str], None]
) -> tuple[list[str], Ragged, np.ndarray]:
    """The validation reviews the calibration and the --min-accuracy thresholds are fitted on, as texts, tokenized
    and labelled: all of them, also when the run validated on a sample (--eval-size): 500 reviews cannot show 97%
    accuracy on any useful share."""
    _, whole = split_frames(config, inputs.dataset, None)
    if len(whole) <= len(inputs.validation_labels):  # the run validated on all of them, in this order
        return whole["text"].tolist(), inputs.validation, inputs.validation_labels
    say(f"calibrating on all {len(whole):,} validation reviews (the run validated on {config.eval_size:,})")
    cache = sources.cache_root() / "tokens"
    reviews = prepare(whole["text"], inputs.encoder, config.cleaning, inputs.truncation, cache)
    return whole["text"].tolist(), reviews, whole["label"].to_numpy()


def validation_logits(
    output: Path, reviews: Ragged, inputs: Inputs, machine: Machine, progress: bool = False, head_inputs: bool = True
) -> tuple:
    """The saved model (with its tokenizer and critic.json), its logits on the validation reviews and, where asked
    (`head_inputs`: for calibration) of a head that can take a margin map (`calibration.margin_ready`), the inputs of
    the head's hidden layer (else None). With a progress bar where asked: 4,879 IMDB reviews take 5 minutes on 2 Zen
    3 cores."""
    from tqdm.auto import tqdm

    model, tokenizer, meta = modeling.load(output, machine.device, writer=True)
    forward = modeling.torch_forward(model, machine.device, machine.precision)
    classes = model.config.num_labels
    width = classes
    if head_inputs and calibration.margin_ready(model):
        forward, width = with_head_inputs(model, forward), classes + calibration.tanh_head(model)[0].in_features
    with tqdm(
        total=len(reviews), unit="review", desc="scoring validation", disable=not progress, mininterval=1.0
    ) as bar:
        scored = modeling.logits(
            forward, reviews, inputs.encoder.pad_id, width, progress=bar, pad_multiple=machine.multiple
        )
    hidden = scored[:, classes:] if width > classes else None
    return model, tokenizer, meta, scored[:, :classes], hidden


def with_head_inputs(model, forward: Callable) -> Callable:
    """`forward` whose rows carry, after the logits, the inputs of the head's hidden layer (the model keeps a hook
    that records them)."""
    captured = []
    calibration.tanh_head(model)[0].register_forward_hook(lambda layer, args, output: captured.append(args[0]))

    def forward_with_inputs(batch):
        logits = forward(batch)
        return torch.cat([logits, captured.pop().float()], dim=1)

    return forward_with_inputs


def calibrate(
    output: Path,
    model,
    tokenizer,
    meta: dict,
    logits: np.ndarray,
    labels: np.ndarray,
    say,
    hidden: np.ndarray | None = None,
) -> np.ndarray:
    """Fit a calibration on the validation split's logits of the saved model (a temperature, with a bias per class
    or, given the inputs of the head's `hidden` layer, an increasing map of the margin, where that calibrates better
    on held-out validation rows: `calibration.choose_calibration`) and fold it into its head; critic.json records it
    with the validation ECE and NLL before and after. A calibration that does not lower the log-loss on validation
    rows it was not fitted on (`calibration.improves`: a model already calibrated, or logits too noisy to fit) is
    recorded but not applied. Returns the validation logits as the saved head now gives them."""
    previous = meta.get("calibration")
    # A finished run started again finds its head calibrated already (records before "applied" were all applied).
    calibrated_before = bool(previous and previous.get("applied", True))
    if calibrated_before and previous.get("method") == "monotone":
        hidden = None  # the head is a margin map already: its hidden layer is far from linear
    margins = None if hidden is None else calibration.linear_margins(model, hidden)
    scaling, held_out = calibration.choose_calibration(logits, labels, margins)
    summary = calibration.calibration_summary(logits, labels, scaling, margins)
    summary["held_out"] = held_out
    summary["applied"] = calibration.improves(summary, held_out)
    names = list(meta["labels"])
    if not summary["applied"]:
        if calibrated_before:  # its record stays, as the head's scaling does
            say(
                f"the head keeps its calibration: a further {calibration.describe(summary, names)} "
                f"{refusal(summary, held_out)}"
            )
            return logits
        modeling.update_meta(output, calibration=summary)
        say(
            f"not calibrated: {calibration.describe(summary, names)} {refusal(summary, held_out)}; "
            "the head is left as trained"
        )
        return logits
    if isinstance(scaling, calibration.MarginMap):  # the map replaces the head's last layers, calibrated or not
        calibration.fold_margin_map(model, scaling)
    else:
        calibration.fold_scaling(model, scaling)
        if calibrated_before:  # the calibrated model calibrated again (near the identity): the total is the composite
            summary.update(calibration.as_record(scaling.after(calibration.from_record(previous, len(names)))))
    modeling.save(model, tokenizer, output, {**meta, "calibration": summary})
    say(
        f"calibrated: {calibration.describe(summary, names)} folded into the head; validation ECE "
        f"{summary['ece_before']:.4f} -> {summary['ece_after']:.4f}, NLL {summary['nll_before']:.4f} -> "
        f"{summary['nll_after']:.4f}" + (f" (held out: {held_out[scaling.method]['nll']:.4f})" if held_out else "")
    )
    return scaling.calibrated(logits, margins)


def refusal(summary: dict, held_out: dict) -> str:
    """Why a scaling was not folded in, in the figures that decided."""
    if held_out:
        return (
            f"would not lower the log-loss on validation reviews it was not fitted on ({held_out['none']['nll']:.4f} "
            f"-> {held_out[summary['method']]['nll']:.4f}, 5 folds)"
        )
    return (
        f"would raise the validation ECE or log-loss (ECE {summary['ece_before']:.4f} -> {summary['ece_after']:.4f}, "
        f"NLL {summary['nll_before']:.4f} -> {summary['nll_after']:.4f})"
    )


def record_abstention(output: Path, probs: np.ndarray, labels: np.ndarray, say: Callable[[str], None]) -> None:
    """The validation curve that `--min-accuracy` chooses its confidence threshold from, in critic.json, and what
    the standard targets answer."""
    kept = abstention.record(probs, labels)
    modeling.update_meta(output, abstention=kept)
    coverage = ", ".join(
        f"{float(target):.0%} answers {chosen['coverage']:.0%}" for target, chosen in kept["targets"].items()
    )
    say(f"not sure below a threshold (--min-accuracy), on {len(probs):,} validation reviews: {coverage}")


def print_stats(history: list[dict], best_step: int | None) -> None:
    """The notebook's per-epoch table, one row per validation; the kept checkpoint is marked."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Training", title_justify="left")
    for column in ("epoch", "step", "training loss", "valid. loss", "valid. accuracy", "valid. AUC", ""):
        table.add_column(column, justify="right")
    for entry in history:
        table.add_row(
            f"{entry['epoch']:.2f}",
            str(entry["step"]),
            f"{entry['train_loss']:.4f}",
            f"{entry['val_loss']:.4f}",
            f"{entry['val_accuracy']:.4f}",
            f"{entry['val_auc']:.4f}",
            "best" if entry["step"] == best_step else "",
        )
    Console(stderr=True).print(table)


def write_stats(history: list[dict], output: Path) -> None:
    """The notebook's table (stats.csv) and its learning-curve plot (learning_curve.svg)."""
    import pandas as pd

    from critic import report

    table = pd.DataFrame(history)
    safe_csv.write_frame(table, output / "stats.csv")
    if table.empty:
        return
    fig, (left, right) = report.plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(table["epoch"], table["train_loss"], "o-", label="training (running)")
    left.plot(table["epoch"], table["val_loss"], "o-", label="validation")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    right.plot(table["epoch"], table["val_accuracy"], "o-", label="accuracy")
    right.plot(table["epoch"], table["val_auc"], "o-", label="AUC")
    right.set_xlabel("epoch")
    right.set_ylabel("validation")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    (output / "learning_curve.svg").write_text(report.svg(fig))


def train_model(config=None, toml: str | Path | None = None, log=None, progress: bool = True, **settings) -> Path:
    """Fine-tune as `config` (a TrainConfig) or as keyword settings say (with `teacher`: distil from that model);
    returns the model folder."""
    from critic import config as configuration
    from critic.training.distill import distill  # distillation runs train() with a teacher

    config = config or configuration.build(settings, toml)
    return (distill if config.teacher else train)(config, log=log, progress=progress)
