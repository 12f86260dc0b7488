"""Fine-tune an encoder into a sentiment classifier. The loop reads top to bottom: data, model, optimiser,
then epochs of length-grouped batches with validation, checkpointing and early stopping.

A run in OUTPUT writes: the model (the best or last checkpoint, a standard Hugging Face folder), train_config.json,
train_log.jsonl, stats.csv (the notebook's table), learning_curve.svg and checkpoint/ (everything needed to
resume: weights, optimiser, schedule, random states, position). Under torchrun the same command trains with
DistributedDataParallel.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from critic import data, model as modelling, sources
from critic.config import TrainConfig
from critic.text import Encoder, Truncation, length_grouped_batches, pad, prepare

CHECKPOINT = "checkpoint/state.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def validation_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    probs = modelling.softmax(logits)
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.tensor(labels)).item())
    accuracy = float((probs.argmax(1) == labels).mean())
    auc = float(roc_auc_score(labels, probs[:, 1])) if len(set(labels.tolist())) == 2 else float("nan")
    return {"loss": loss, "accuracy": accuracy, "auc": auc}


def better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new < old if metric == "loss" else new > old


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(obj, partial)
    os.replace(partial, path)


class Distributed:
    """Rank, world size and helpers; a single process is a world of one."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast_flag(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        tensor = torch.tensor([int(flag)])
        torch.distributed.broadcast(tensor, src=0)
        return bool(tensor.item())

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def train(config: TrainConfig, log: Callable[[str], None] | None = None, progress: bool = True) -> Path:
    """Train as `config` says; returns the folder of the saved model. Resumes when OUTPUT has a checkpoint."""
    dist = Distributed()
    say = (log or (lambda m: print(f"critic: {m}", file=sys.stderr))) if dist.main else (lambda m: None)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    for note in config.notes:
        say(note)
    seed_everything(config.seed)

    # ---- data
    dataset = data.load(config.data, data.Columns(config.text_column, config.label_column,
                                                  data.parse_label_map(config.label_map) if config.label_map else None),
                        config.drop_invalid, log=say)
    train_frame = dataset.split("train", config.train_size, config.seed)
    val_frame = dataset.split("validation", config.eval_size, config.seed)
    encoder_path = sources.resolve_model(config.model, log=say)
    model, tokenizer = modelling.build(encoder_path)
    encoder = Encoder(tokenizer)
    truncation = Truncation(config.max_length, config.truncation, config.head_tokens)
    cache = sources.cache_root() / "tokens"
    train_inputs = prepare(train_frame["text"], encoder, config.cleaning, truncation, cache)
    val_inputs = prepare(val_frame["text"], encoder, config.cleaning, truncation, cache)
    train_labels = torch.tensor(train_frame["label"].to_numpy())
    val_labels = val_frame["label"].to_numpy()
    say(f"training on {len(train_frame):,} reviews, validating on {len(val_frame):,}; "
        f"{config.max_length} tokens, truncation {config.truncation}")

    # ---- model and optimiser
    device = modelling.resolve_device(config.device)
    if device.type == "cuda" and dist.world > 1:
        device = torch.device("cuda", dist.local_rank)
    precision = modelling.resolve_precision(config.precision, device)
    pad_multiple = modelling.pad_multiple(device)
    model.to(device)
    if device.type == "cpu" and not config.compile:  # dynamo cannot trace its per-review loop
        modelling.use_rowwise_attention(model)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]  # biases and LayerNorm weights
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=config.lr, eps=config.adam_eps, fused=device.type in ("cuda", "cpu"))
    batches_per_epoch = math.ceil(len(train_frame) / config.batch_size)
    # Every rank must take the same number of steps; with several, the last uneven batches are left out.
    steps_per_epoch = batches_per_epoch if dist.world == 1 else batches_per_epoch // dist.world
    total_steps = steps_per_epoch * config.epochs
    warmup = int(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total_steps))
    forward_model = model
    if dist.world > 1:
        forward_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        forward_model = torch.compile(forward_model, dynamic=True)

    # ---- resume
    state = {"step": 0, "best": None, "best_step": None, "bad_evals": 0, "history": []}
    checkpoint_path = output / CHECKPOINT
    if checkpoint_path.is_file():
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if saved["config"] != _resumable(config):
            raise ValueError(f"{checkpoint_path} belongs to a run with other settings; "
                             f"use another --output or delete {checkpoint_path.parent}")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        random.setstate(saved["rng"]["python"])
        np.random.set_state(saved["rng"]["numpy"])
        torch.set_rng_state(saved["rng"]["torch"])
        if saved["rng"].get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        say(f"resuming from step {state['step']} of {total_steps} ({checkpoint_path})")
    if dist.main:
        config.save(output / "train_config.json")
        _truncate_log(output / "train_log.jsonl", state["step"])

    meta = {
        "name": output.name, "base_model": config.model, "data": config.data, "labels": list(data.LABEL_NAMES),
        "cleaning": config.cleaning, "truncation": truncation.as_dict(), "train_rows": len(train_frame),
        "long_reviews": {"mode": config.long_reviews, "stride": config.window_stride, "pool": config.window_pool},
        "manifest": dataset.manifest, "config": config.to_dict(), "notes": config.notes,
    }

    def evaluate_and_checkpoint(epoch: float) -> bool:
        """Validate, keep the best model, write a resumable checkpoint; True when patience has run out."""
        started_at = time.perf_counter()
        stop = False
        if dist.main:
            val_logits = modelling.logits(modelling.torch_forward(model, device, precision), val_inputs,
                                          encoder.pad_id, model.config.num_labels, pad_multiple=pad_multiple)
            metrics = validation_metrics(val_logits, val_labels)
            entry = {"step": state["step"], "epoch": round(epoch, 3), **{f"val_{k}": v for k, v in metrics.items()},
                     "train_loss": state.pop("running_loss", float("nan"))}
            state["history"].append(entry)
            improved = better(config.metric, metrics[config.metric], state["best"])
            if improved:
                state.update(best=metrics[config.metric], best_step=state["step"], bad_evals=0)
                if config.select == "best":
                    modelling.save(model, tokenizer, output, {**meta, "selected": f"best {config.metric} "
                                   f"at step {state['step']} (epoch {epoch:.2f})", "validation": entry})
            else:
                state["bad_evals"] += 1
            _append_log(output / "train_log.jsonl", {"event": "eval", **entry})
            say(f"step {state['step']}/{total_steps} epoch {epoch:.2f}: val loss {metrics['loss']:.4f} "
                f"accuracy {metrics['accuracy']:.4f} AUC {metrics['auc']:.4f}" + (" (best)" if improved else ""))
            stop = config.patience > 0 and state["bad_evals"] >= config.patience
            save_checkpoint()
        model.train()  # validation switched dropout off
        timing["validating"] += time.perf_counter() - started_at
        return dist.broadcast_flag(stop)

    def save_checkpoint() -> None:
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "state": state, "config": _resumable(config),
                     "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state(),
                             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}},
                    checkpoint_path)

    # ---- the loop. Ctrl-C or SIGTERM finish the current step, write a checkpoint and stop; run again to resume.
    interrupted = _InterruptFlag()
    bar = _progress(total_steps, state["step"], progress and dist.main)
    stopped = False
    start_epoch = state["step"] // steps_per_epoch
    started = time.perf_counter()
    timing = {"validating": 0.0}  # validation and checkpoints, kept apart from the training steps' speed
    samples_seen = 0
    for epoch in range(start_epoch, config.epochs):
        batches = length_grouped_batches(train_inputs.lengths, config.batch_size, seed=config.seed + epoch)
        my_batches = batches[dist.rank::dist.world][:steps_per_epoch]
        skip = state["step"] - epoch * steps_per_epoch
        model.train()
        for rows in my_batches[skip:]:
            batch = {k: v.to(device, non_blocking=True)
                     for k, v in pad(train_inputs, rows, encoder.pad_id, pad_multiple).items()}
            labels = train_labels[rows].to(device, non_blocking=True)
            with modelling.autocast(device, precision):
                logits = forward_model(**batch).logits
            loss = F.cross_entropy(logits.float(), labels)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            samples_seen += len(rows) * dist.world
            loss_value = loss.item()
            state["running_loss"] = loss_value if "running_loss" not in state else \
                0.9 * state["running_loss"] + 0.1 * loss_value
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{state['running_loss']:.3f}",
                                samples_s=f"{samples_seen / (time.perf_counter() - started):.1f}")
            if dist.main and state["step"] % 10 == 0:
                _append_log(output / "train_log.jsonl", {"event": "train", "step": state["step"],
                                                         "loss": loss_value, "lr": scheduler.get_last_lr()[0]})
            if config.eval_every and state["step"] % config.eval_every == 0 and state["step"] % steps_per_epoch:
                if stopped := evaluate_and_checkpoint(state["step"] / steps_per_epoch):
                    break
            if dist.broadcast_flag(interrupted.raised):
                if dist.main:
                    save_checkpoint()
                interrupted.restore()
                raise KeyboardInterrupt(f"interrupted at step {state['step']}; checkpoint saved in {checkpoint_path}, "
                                        f"run the same command again to resume")
        if not stopped:
            stopped = evaluate_and_checkpoint(epoch + 1)
        if stopped:
            say(f"early stop: no improvement in {config.patience} evaluations")
            break
    if bar is not None:
        bar.close()
    interrupted.restore()

    elapsed = time.perf_counter() - started
    stepping = max(elapsed - timing["validating"], 1e-9)
    if dist.main:
        if config.select == "last":
            modelling.save(model, tokenizer, output, {**meta, "selected": f"last (step {state['step']})",
                                                      "validation": state["history"][-1]})
        modelling.update_meta(output, history=state["history"], train_seconds=elapsed,
                              validation_seconds=timing["validating"],
                              train_samples_per_second=samples_seen / stepping)
        write_stats(state["history"], output)
        if progress:
            print_stats(state["history"], state["best_step"])
        say(f"trained in {elapsed:.0f} s: {samples_seen / stepping:.1f} samples/s in training steps, "
            f"{timing['validating']:.0f} s validating and checkpointing; best val {config.metric} "
            f"{state['best']:.4f} at step {state['best_step']}; model in {output}")
    dist.barrier()
    return output


class _InterruptFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps; a second Ctrl-C interrupts at once."""

    def __init__(self):
        import signal
        import threading

        self.raised = False
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def restore(self):
        import signal

        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


def _resumable(config: TrainConfig) -> dict:
    """The settings that must match for a checkpoint to be resumed."""
    keep = ("model", "data", "train_size", "eval_size", "cleaning", "max_length", "truncation", "head_tokens",
            "epochs", "batch_size", "lr", "weight_decay", "warmup_ratio", "seed", "select", "metric")
    return {k: getattr(config, k) for k in keep}


def _progress(total: int, done: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="step", desc="training", dynamic_ncols=True,
                file=sys.stderr, mininterval=1.0)


def _append_log(path: Path, entry: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"time": time.time(), **entry}) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """On resume, forget log lines written after the checkpoint."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


def print_stats(history: list[dict], best_step: int | None) -> None:
    """The notebook's per-epoch table, one row per validation; the kept checkpoint is marked."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Training", title_justify="left")
    for column in ("epoch", "step", "training loss", "valid. loss", "valid. accuracy", "valid. AUC", ""):
        table.add_column(column, justify="right")
    for entry in history:
        table.add_row(f"{entry['epoch']:.2f}", str(entry["step"]), f"{entry['train_loss']:.4f}",
                      f"{entry['val_loss']:.4f}", f"{entry['val_accuracy']:.4f}", f"{entry['val_auc']:.4f}",
                      "best" if entry["step"] == best_step else "")
    Console(stderr=True).print(table)


def write_stats(history: list[dict], output: Path) -> None:
    """The notebook's table (stats.csv) and its learning-curve plot (learning_curve.svg)."""
    import pandas as pd

    from critic import report

    table = pd.DataFrame(history)
    table.to_csv(output / "stats.csv", index=False)
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
