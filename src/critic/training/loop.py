"""The training loop, shared by every kind of training (fine-tuning, distillation, masked-language-model
pre-training, pair tuning): `run`, the `Steps` it takes, then the `Job` a kind of training brings to it. Its
machinery lives beside it: processes.py, batches.py, step.py and checkpoint.py.

The interrupt flag is checked where the loss is read (every `log_every` steps); batches are padded and pinned in a
background thread while the GPU works.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from critic.config import LoopConfig
from critic.modeling import compile_cache
from critic.training.batches import Plan, plan_batches
from critic.training.checkpoint import (
    CHECKPOINT,
    Checkpoint,
    RunState,
    append_log,
    checkpoint_settings,
    truncate_log,
)
from critic.training.processes import Distributed, rank_seed, seed_everything, speaker
from critic.training.step import Clock, LossMeter, Machine, TrainingStep


def run(
    config: LoopConfig,
    prepare: Callable[[Callable[[str], None]], Job],
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    on_validation: Callable[[dict], None] | None = None,
) -> Path:
    """Train as `config` says; returns OUTPUT. `prepare(say)` loads the job (its data and model; the first process
    of each machine first, so that it fills the cache for the others). Resumes from OUTPUT's checkpoint, and
    returns at once for a finished run. `on_validation` is called with each validation's history entry
    (critic.training.tune reports them to its pruner, and may raise there to stop the run)."""
    dist = Distributed(config.device)
    say = speaker(log, dist.main)
    output = Path(config.output)
    dist.open_output(output, say)
    seed_everything(config.seed)  # the same new head on every process
    with dist.local_main_first():
        job = prepare(say)
    machine = Machine.choose(config, dist.device, dist.world)
    plan = plan_batches(job.lengths, config, dist.world, machine.by_tokens, machine.multiple)
    job.model.to(machine.device)
    torch.manual_seed(rank_seed(config.seed, dist.rank))  # dropout masks differ from process to process
    training_step = job.training_step(machine, plan.total)
    compiled_kept = compile_cache.cache_file(machine.device, job.model) if config.compile else None
    if compiled_kept is not None:
        compile_cache.load(compiled_kept, say)
    checkpoint = Checkpoint(
        output / CHECKPOINT, dist, job.model, training_step, checkpoint_settings(config, dist.world, machine.precision)
    )
    state = checkpoint.resume(plan.total, say, lambda done: job.finished(done, plan.total), job.saved)
    if state is None:
        dist.close()
        return output
    if dist.main:
        config.save(output / job.config_file)
        truncate_log(output / job.log_file, state.step)
    job.begin(state, plan, machine, dist)
    steps = Steps(job, config, output, dist, machine, plan, training_step, checkpoint)
    steps.run_from(state, progress and dist.main, on_validation)
    if dist.main:
        job.finish(state, steps)
    if compiled_kept is not None and dist.local_rank == 0:  # one writer per machine
        compile_cache.save(compiled_kept)
    dist.barrier()
    dist.close()
    return output


@dataclass
class Steps:
    """The steps of a run, from where it stands to the end of its plan, with validation points, logging, checkpoints
    and interruption. Ctrl-C or SIGTERM finish the current step, write a checkpoint and stop; run again to resume."""

    job: Job
    config: LoopConfig
    output: Path
    dist: Distributed
    machine: Machine
    plan: Plan
    training_step: TrainingStep
    checkpoint: Checkpoint
    samples: int = 0

    def __post_init__(self):
        self.clock = Clock(self.machine.device)
        self.log_losses, self.epoch_losses = LossMeter(self.machine.device), LossMeter(self.machine.device)

    def run_from(self, state: RunState, show_progress: bool, on_validation: Callable[[dict], None] | None) -> None:
        dist, job, log_every = self.dist, self.job, self.config.log_every
        interrupted = InterruptFlag()
        bar = progress_bar(self.plan.total, state.step, show_progress)
        epoch_ends = set(self.plan.epoch_ends)
        left = [] if job.finished(state, self.plan.total) else self.plan.steps[state.step :]
        job.model.train()
        try:
            for batch, mean_over, batch_rows in job.batches(left, state.step, self.machine, dist):
                summed = self.training_step.run(batch, mean_over)
                terms = job.loss_terms(batch)
                self.log_losses.add(summed, terms)
                self.epoch_losses.add(summed, terms)
                state.step += 1
                self.samples += batch_rows
                if bar is not None:
                    bar.update(1)
                at_log_point = state.step % log_every == 0
                if at_log_point and dist.main:
                    log_training(
                        self.output / job.log_file,
                        state.step,
                        self.samples,
                        self.log_losses,
                        self.clock,
                        self.training_step,
                        bar,
                    )
                stop = False
                if state.step in epoch_ends or job.validates_at(state.step):
                    stop = self.validation_point(state, on_validation)
                if (dist.world == 1 or at_log_point) and dist.any(interrupted.raised):
                    self.checkpoint.stop_interrupted(state)
                if stop:
                    break
        finally:
            if bar is not None:
                bar.close()
            interrupted.restore()

    def validation_point(self, state: RunState, on_validation: Callable[[dict], None] | None) -> bool:
        """Validate (the first process), checkpoint (every process), report; True on every process to stop."""
        with self.clock.pause():
            stop = False
            if self.dist.main:
                stop = self.job.validate(state, self.plan.epoch_at(state.step), self.epoch_losses.mean_and_reset())
            self.checkpoint.save(state)
            if on_validation is not None and self.dist.main and state.history:
                on_validation(state.history[-1])  # may raise to stop the run (a pruned search trial)
        return self.dist.any(stop)


class Job:
    """What a kind of training brings to the loop: its model and training rows, its step's objective, its batches,
    what it does at a validation point, and its final save. Fine-tuning and distillation
    (critic.training.fine_tuning.FineTuning), masked-language-model pre-training (critic.training.pretrain.Pretraining)
    and the few-label path's pair tuning (critic.training.pair_tuning.PairTuning) are the three. A job overrides
    the methods without a body here; the others are what most jobs keep (a run ends at its last step, a step's loss
    is a mean over its reviews, validation comes at the end of each epoch only)."""

    log_file = "train_log.jsonl"  # under OUTPUT: the log's JSON lines
    config_file = "train_config.json"  # under OUTPUT: the resolved config
    model: torch.nn.Module
    lengths: np.ndarray  # each training row's tokens, for the plan of batches

    def training_step(self, machine: Machine, total: int) -> TrainingStep:
        """The model made ready for the machine (on its device already) and its TrainingStep, with `self.loss`."""
        raise NotImplementedError

    def loss(self, forward: Callable[..., Any], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """A step's loss on this process's share of a batch (on the device), summed over its `loss_terms`:
        `forward(**inputs)` runs the model; the batch holds its inputs and the job's targets."""
        raise NotImplementedError

    def saved(self) -> bool:
        """Whether the final save of a finished run completed."""
        raise NotImplementedError

    def begin(self, state: RunState, plan: Plan, machine: Machine, dist: Distributed) -> None:
        """What the run says (and measures) before its first step, resumed or not; on every process."""
        raise NotImplementedError

    def batches(
        self, steps: list[np.ndarray], first: int, machine: Machine, dist: Distributed
    ) -> Iterator[tuple[dict, int, int]]:
        """For each step from `first`: (this process's share of the global batch, ready for TrainingStep.run; what
        the loss is a mean over: the global batch's rows, or its masked tokens; the global batch's rows)."""
        raise NotImplementedError

    def validate(self, state: RunState, epoch: float, train_loss: float) -> bool:
        """On the first process: validate, record in `state`, keep what is best; True to stop early."""
        raise NotImplementedError

    def finish(self, state: RunState, steps: Steps) -> None:
        """On the first process: the final save and summary (`steps` holds the machine, the step, the clock and the
        reviews trained on)."""
        raise NotImplementedError

    def finished(self, state: RunState, total: int) -> bool:
        """Whether a run at `state` has no step left."""
        return state.step >= total

    def loss_terms(self, batch: dict) -> int:
        """How many terms the share's summed loss adds up: its reviews (pre-training: its masked tokens)."""
        return len(batch["labels"])

    def validates_at(self, step: int) -> bool:
        """Besides the end of each epoch: never, unless the job says so."""
        return False


def log_training(
    path: Path, step: int, samples: int, losses: LossMeter, clock: Clock, training_step: TrainingStep, bar
) -> None:
    """A train_log.jsonl line (and the progress bar's figures): the loss since the last one, read from the device."""
    loss = losses.mean_and_reset()
    speed = samples / clock.training_seconds()
    entry = {
        "event": "train",
        "step": step,
        "loss": loss,
        "lr": training_step.scheduler.get_last_lr()[0],
        "samples": samples,
        "samples_per_second": speed,
    }
    if training_step.scaler.is_enabled():
        entry.update(loss_scale=training_step.scaler.get_scale(), skipped_steps=training_step.skipped_steps(step))
    append_log(path, entry)
    if bar is not None:
        bar.set_postfix(loss=f"{loss:.3f}", samples_s=f"{speed:.0f}")


class InterruptFlag:
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


def progress_bar(total: int, done: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=done, unit="step", desc="training", dynamic_ncols=True, file=sys.stderr, mininterval=1.0
    )
