"""The final save that fine-tuning and the few-label fit share: the model calibrated on the whole validation split,
its "not sure" curve (--min-accuracy) and its history in critic.json, stats.csv (the notebook's table), the learning
curves and a summary."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from critic import modeling, safe_csv
from critic.config import TrainConfig
from critic.data import sources
from critic.modeling import ModelRecord, abstention, calibration
from critic.text import Ragged, prepare
from critic.training.checkpoint import RunState
from critic.training.inputs import Inputs, split_frames
from critic.training.loop import Steps
from critic.training.step import Machine


def finish(
    inputs: Inputs,
    config: TrainConfig,
    state: RunState,
    record: ModelRecord,
    steps: Steps,
    say: Callable[[str], None],
    progress: bool,
) -> None:
    """The model (with --select last), calibrated; its history and speed in critic.json, stats.csv, the curves, a
    summary."""
    output = Path(config.output)
    machine, training_step, clock, samples = steps.machine, steps.training_step, steps.clock, steps.samples
    stepping = clock.training_seconds()
    elapsed = time.perf_counter() - clock.started
    fp16 = training_step.scaler.is_enabled()
    skipped = training_step.skipped_steps(state.step)
    if config.select == "last":
        modeling.save(
            inputs.model,
            inputs.tokenizer,
            output,
            dataclasses.replace(record, selected=f"last (step {state.step})", validation=state.history[-1]),
        )
    # A run whose final save is done again has trained no step in this process: it has no speed to record.
    speed = (
        {"train_seconds": elapsed, "validation_seconds": clock.paused, "train_samples_per_second": samples / stepping}
        if samples
        else {}
    )
    modeling.update_record(
        output,
        history=state.history,
        precision=training_step.precision,
        processes=machine.world,
        **speed,
        **({"fp16_skipped_steps": skipped} if fp16 else {}),
    )
    calibrate_and_record(config, output, inputs, machine, say, progress, trained_steps=state.step)
    write_stats(state.history, output)
    modeling.update_record(output, complete=True)  # last: a rerun of a run without it saves it again
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
    config: TrainConfig,
    output: Path,
    inputs: Inputs,
    machine: Machine,
    say,
    progress: bool = False,
    trained_steps: int | None = None,
) -> tuple:
    """The saved model's last steps, for fine-tuning and the few-label fit alike: calibrated on the whole validation
    split, with its --min-accuracy curve in critic.json, measured as the model answers by default (through windows
    where it reads long reviews so). Returns those validation probabilities, and the labels. `trained_steps`: the
    fine-tuning's optimizer steps (None: the few-label fit)."""
    texts, reviews, labels = final_validation(config, inputs, say)
    model, tokenizer, record, logits, hidden = validation_logits(
        output, reviews, inputs, machine, progress, head_inputs=config.calibrate
    )
    if config.calibrate:  # on each window's logits: what the head computes, whatever pools them
        logits = calibrate(output, model, tokenizer, record, logits, labels, say, hidden)
    if record.long_reviews["mode"] == "windows":
        probs = windowed_probabilities(output, texts, machine, say, progress)
    else:
        probs = modeling.softmax(logits)
    record_abstention(output, probs, labels, say)
    if note := one_sided(probs.argmax(axis=1), labels, inputs.dataset.labels, trained_steps):
        say(f"warning: {note}")
    if config.cascade:
        fit_cascade(output, texts, labels, probs, say)
    return probs, labels


def fit_cascade(output: Path, texts: list[str], labels: np.ndarray, probs: np.ndarray, say) -> None:
    """The cascade's cheap stage and its threshold, chosen on the validation probabilities just measured."""
    from critic.inference import cascade

    try:
        cascade.fit_on(output, texts, labels, probs, say=say)
    except ValueError as error:  # training data that cannot be read again: the model stands without a cascade
        say(f"no cascade: {error}")


def windowed_probabilities(output: Path, texts: list[str], machine: Machine, say, progress: bool) -> np.ndarray:
    """The saved model's probabilities for whole reviews, as `critic predict` gives them by default for a model
    that reads long reviews through overlapping windows."""
    from tqdm.auto import tqdm

    # the Classifier frames and pools the windows as every consumer does (training imports it only here, as
    # distillation does for its teacher)
    from critic.inference.predict import Classifier

    say(f"scoring the {len(texts):,} validation reviews whole, through windows, as the model answers by default")
    # the model alone: a finished run saved again finds the cascade of these weights, fitted on these probabilities
    classifier = Classifier.load(
        output, device=str(machine.device), precision=machine.precision, backend="torch", cascade=False
    )
    with tqdm(total=len(texts), unit="review", desc="windows", disable=not progress, mininterval=1.0) as bar:
        return classifier.predict_proba(texts, progress=bar)


ONE_SIDED_SHARE = 0.9  # of the validation reviews answered with one class, at least 10 points above its share
# Fine-tuning in fewer optimizer steps than this may not have learned yet. MiniLM on 600 IMDB labels, 1 epoch, 128
# tokens (2 AMD EPYC Zen 4 cores, 2026-12-06, docs/benchmarks.md "Active learning"): 34 steps of 16 gave 56-68% over
# three seeds, one of them answering "positive" for 97% of validation; 67 steps of 8 gave 78-82%.
FEW_STEPS = 100


def one_sided(
    predicted: np.ndarray, labels: np.ndarray, names: tuple[str, ...], trained_steps: int | None = None
) -> str | None:
    """What to tell of a model that answers one class for nearly every validation review, more often than the class
    occurs: it tells the classes apart little better than their shares (drugs, 8 labels per class: the calibrated
    model answered 'positive' for 97% of the reviews, 64% of which are), and what to do: train in more steps where
    fine-tuning took few (`trained_steps`), else label more of the other classes. None for a model that does not."""
    top = int(np.bincount(predicted, minlength=len(names)).argmax())
    answered, occurs = float((predicted == top).mean()), float((labels == top).mean())
    if answered < ONE_SIDED_SHARE or answered - occurs < 0.1:
        return None
    recalls = [float((predicted[labels == c] == c).mean()) for c in range(len(names)) if (labels == c).any()]
    return (
        f"the model answers {names[top]!r} for {answered:.0%} of the validation reviews, of which {occurs:.0%} are: "
        f"it tells the classes apart little better than their shares (balanced accuracy {np.mean(recalls):.2f}, "
        f"{1 / len(names):.2f} by chance); "
        + (
            f"it trained in {trained_steps} steps: train in more (smaller batches, --batch-size 8, or more --epochs)"
            if trained_steps is not None and trained_steps < FEW_STEPS
            else "label more reviews of the other classes"
        )
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

    model, tokenizer, record = modeling.load(output, machine.device, writer=True)
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
    return model, tokenizer, record, scored[:, :classes], hidden


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
    record: ModelRecord,
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
    previous = record.calibration
    # A finished run started again finds its head calibrated already (records before "applied" were all applied).
    calibrated_before = bool(previous and previous.get("applied", True))
    if calibrated_before and previous.get("method") == "monotone":
        hidden = None  # the head is a margin map already: its hidden layer is far from linear
    margins = None if hidden is None else calibration.linear_margins(model, hidden)
    scaling, held_out = calibration.choose_calibration(logits, labels, margins)
    summary = calibration.calibration_summary(logits, labels, scaling, margins)
    summary["held_out"] = held_out
    summary["applied"] = calibration.improves(summary, held_out)
    names = list(record.labels)
    if not summary["applied"]:
        if calibrated_before:  # its record stays, as the head's scaling does
            say(
                f"the head keeps its calibration: a further {calibration.describe(summary, names)} "
                f"{refusal(summary, held_out)}"
            )
            return logits
        modeling.update_record(output, calibration=summary)
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
    modeling.save(model, tokenizer, output, dataclasses.replace(record, calibration=summary))
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
    modeling.update_record(output, abstention=kept)
    coverage = ", ".join(
        f"{float(target):.0%} answers {chosen['coverage']:.0%}" for target, chosen in kept["targets"].items()
    )
    say(f"not sure below a threshold (--min-accuracy), on {len(probs):,} validation reviews: {coverage}")


def print_stats(history: list[dict], best_step: int | None) -> None:
    """The notebook's per-epoch table, one row per validation; the kept checkpoint is marked."""
    from rich.console import Console

    from critic import report

    header = ("epoch", "step", "training loss", "valid. loss", "valid. accuracy", "valid. AUC", "")
    rows = [
        (
            f"{entry['epoch']:.2f}",
            str(entry["step"]),
            f"{entry['train_loss']:.4f}",
            f"{entry['val_loss']:.4f}",
            f"{entry['val_accuracy']:.4f}",
            f"{entry['val_auc']:.4f}",
            "best" if entry["step"] == best_step else "",
        )
        for entry in history
    ]
    Console(stderr=True).print(report.terminal_table("Training", header, rows))


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
