"""The training loop's machinery, shared by every kind of training (fine-tuning, distillation, masked-language-model
pre-training, pair tuning): processes and their collectives, the plan of batches, the step, the loss meter and clock,
checkpoints that resume exactly, interruption, the progress bar and the log.

Nothing inside a step waits for the GPU: the loss is summed on the device and read every `log_every` steps, where
the interrupt flag is checked too; batches are padded and pinned in a background thread while the GPU works.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from critic import messages, modeling
from critic.config import LoopConfig
from critic.modeling import compile_cache
from critic.text import Ragged, length_grouped_batches, pad

CHECKPOINT = "checkpoint/state.pt"


FP16_INIT_SCALE = 2.0**16  # GradScaler's own default; a test raises it to force overflowing steps


ROWS_PER_TOKEN_BATCH = 4  # with token budgets, a batch of short reviews holds at most 4 x --batch-size of them


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """Each process's own seed for dropout; the data order comes from `seed` alone and is shared by all."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def atomic_save(obj, path: Path) -> None:
    """`obj` at `path` whole or not at all: written beside it and renamed over; a failed write leaves nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    try:
        torch.save(obj, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)


# ---------------------------------------------------------------------------------------------------------- processes


def rejoin_warning() -> str | None:
    """Under torchrun on several machines with --max-restarts, a lost machine started again can rejoin only when
    torchrun does not share its rendezvous store with the workers (pytorch/pytorch#135712; with the store shared,
    the survivor and the newcomer wait for each other at the next rendezvous, seen with torch 2.13)."""
    env = os.environ
    if (
        int(env.get("GROUP_WORLD_SIZE", "1")) > 1
        and int(env.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
        and env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    ):
        return (
            "a machine lost and started again cannot rejoin this run: start torchrun with "
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 on every machine (pytorch/pytorch#135712)"
        )
    return None


def first_process() -> bool:
    """Whether this is the first process of a run (torchrun sets RANK; a single process is rank 0)."""
    return int(os.environ.get("RANK", "0")) == 0


def speaker(log: Callable[[str], None] | None, main: bool) -> Callable[[str], None]:
    """Where a run's messages go: `log`, else standard error as `critic: …`; nowhere from processes but the first."""
    if not main:
        return lambda message: None
    return log or messages.to_stderr


class Distributed:
    """Rank, world size, the device this process trains on, and the few collectives the loop needs. A single
    process is a world of one. On GPUs each process takes the GPU of its LOCAL_RANK and NCCL moves CUDA tensors;
    on CPUs gloo moves CPU tensors."""

    def __init__(self, device_name: str = "auto"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))  # first_process() reads the same
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = modeling.resolve_device(device_name)
        if device.type == "cuda":
            if self.world > 1:
                device = torch.device("cuda", self.local_rank)
            device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
            torch.cuda.set_device(device)
        self.device = device
        self.owns_group = False
        if self.world > 1 and not torch.distributed.is_initialized():
            nccl = device.type == "cuda"
            torch.distributed.init_process_group("nccl" if nccl else "gloo", device_id=device if nccl else None)
            self.owns_group = True
        nccl = self.world > 1 and torch.distributed.get_backend() == "nccl"
        self.collective_device = device if nccl else torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True on every process when `flag` is true on any (a signal may reach one process first)."""
        if self.world == 1:
            return flag
        tensor = torch.tensor([int(flag)], device=self.collective_device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return bool(tensor.item())

    def gather(self, obj) -> list:
        """`obj` of every process, in rank order, on every process."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            if self.collective_device.type == "cuda":
                torch.distributed.barrier(device_ids=[self.collective_device.index])
            else:
                torch.distributed.barrier()

    def check_shared(self, folder: Path) -> None:
        """Every process must see the files rank 0 writes in `folder`: a resume reads rank 0's checkpoint there.
        Processes on other machines fail at once, naming themselves, when the folder is not shared."""
        if self.world == 1:
            return
        marker = folder / f".shared-{self.gather(uuid.uuid4().hex)[0]}"  # rank 0's name, the same on all
        if self.main:
            marker.touch()
        self.barrier()
        seen = self.gather((marker.exists(), socket.gethostname()))
        self.barrier()
        if self.main:
            marker.unlink()
        blind = [f"rank {rank} on {host}" for rank, (ok, host) in enumerate(seen) if not ok]
        if blind:
            raise RuntimeError(
                f"{folder}: {', '.join(blind)} cannot see the files rank 0 writes there; on several "
                f"machines --output must be a folder they all share (NFS, a cluster filesystem)"
            )

    def open_output(self, folder: Path, say: Callable[[str], None]) -> None:
        """The run's output folder: made, checked to be one folder every process sees, and a warning where a lost
        machine could not rejoin the run."""
        folder.mkdir(parents=True, exist_ok=True)
        self.check_shared(folder)
        if note := rejoin_warning():
            say(note)

    @contextmanager
    def local_main_first(self):
        """The first process of each machine goes first (it tokenizes and fills the cache; the others then read
        it, instead of all tokenizing the same reviews at once)."""
        if self.local_rank != 0:
            self.barrier()
        yield
        if self.local_rank == 0:
            self.barrier()

    def close(self) -> None:
        if self.owns_group:
            torch.distributed.destroy_process_group()
            self.owns_group = False


def rng_state(device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


# ------------------------------------------------------------------------------------------------------------ batches


@dataclass
class Plan:
    """Every step of the run, decided up front: each epoch's global batches (rows of the training split). Under
    DDP every process walks the same plan and takes its share of each batch."""

    epochs: list[list[np.ndarray]]

    @property
    def steps(self) -> list[np.ndarray]:
        return [batch for epoch in self.epochs for batch in epoch]

    @property
    def total(self) -> int:
        return sum(len(epoch) for epoch in self.epochs)

    @property
    def epoch_ends(self) -> list[int]:
        return np.cumsum([len(epoch) for epoch in self.epochs]).tolist()

    def epoch_at(self, step: int) -> float:
        """Epochs done after `step` steps, with a fraction for a step inside an epoch."""
        start = 0
        for epoch, batches in enumerate(self.epochs):
            if step <= start + len(batches):
                return epoch + (step - start) / max(1, len(batches))
            start += len(batches)
        return float(len(self.epochs))


def plan_batches(lengths: np.ndarray, config: LoopConfig, world: int, by_tokens: bool, multiple: int) -> Plan:
    """Length-grouped global batches for every epoch: `batch_size` reviews per process, or, by tokens, as many
    reviews as fit in `batch_tokens` padded tokens per process (default: batch_size x max_length, the memory of
    a full batch of the longest reviews)."""
    epochs = []
    for epoch in range(config.epochs):
        if by_tokens:
            budget = (config.batch_tokens or config.batch_size * config.max_length) * world
            batches = length_grouped_batches(
                lengths,
                ROWS_PER_TOKEN_BATCH * config.batch_size * world,
                seed=config.seed + epoch,
                max_tokens=budget,
                multiple=multiple,
            )
        else:
            batches = length_grouped_batches(lengths, config.batch_size * world, seed=config.seed + epoch)
        epochs.append([b for b in batches if len(b) >= world])  # every process needs a share
    return Plan(epochs)


def prepared_batches(
    steps: Iterable[np.ndarray],
    inputs: Ragged,
    targets: dict[str, torch.Tensor],
    pad_id: int,
    multiple: int,
    rank: int,
    world: int,
    pin: bool,
) -> Iterator[tuple[dict, int, int]]:
    """(this process's padded share of each global batch, with the rows of each of `targets` (labels, a teacher's
    probabilities); the global batch's size, twice: its loss is a mean over its rows). With `pin` (a GPU) the
    batches are prepared in a background thread into pinned memory, so the copy to the GPU does not block."""

    def prepare_one(rows_global: np.ndarray) -> tuple[dict, int, int]:
        rows = np.array_split(rows_global, world)[rank]
        batch = pad(inputs, rows, pad_id, multiple)
        batch.update({name: values[torch.from_numpy(rows)] for name, values in targets.items()})
        return batch, len(rows_global), len(rows_global)

    return pinned_ahead(map(prepare_one, steps), pin)


def pinned_ahead(batches: Iterator[tuple[dict, int, int]], pin: bool) -> Iterator[tuple[dict, int, int]]:
    """With `pin` (a GPU): each (batch, count, rows) with its tensors in pinned memory, prepared up to 4 ahead in a
    background thread, so that the copy to the GPU does not block; without, `batches` as they are."""
    if not pin:
        return batches
    pinned = (({k: v.pin_memory() for k, v in batch.items()}, count, rows) for batch, count, rows in batches)
    return read_ahead(pinned, depth=4)


def read_ahead(items: Iterator, depth: int) -> Iterator:
    """Iterate `items` in a background thread, up to `depth` items ahead of the consumer."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(message) -> bool:
        while not stop.is_set():
            try:
                ready.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as error:  # handed to the consumer, raised there
            put(("error", error))

    threading.Thread(target=produce, daemon=True, name="critic-batches").start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


# ----------------------------------------------------------------------------------------------------------- the step


def parameter_groups(model, weight_decay: float, layer_decay: float, lr: float) -> list[dict]:
    """AdamW groups: weight decay on matrices only (not biases and LayerNorm); with layer_decay < 1 each encoder
    layer's rate is layer_decay times the one above it (the head at `lr`, the embeddings lowest)."""
    layers = model.config.num_hidden_layers if hasattr(model.config, "num_hidden_layers") else model.config.n_layers
    groups: dict[tuple[int, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        found = re.search(r"\.layer\.(\d+)\.", name)
        below = "embeddings" in name or "relative_attention_bias" in name  # MPNet's is shared by all its layers
        depth = int(found[1]) + 1 if found else 0 if below else layers + 1
        groups.setdefault((depth, param.ndim >= 2), []).append(param)
    return [
        {
            "params": params,
            "weight_decay": weight_decay if matrix else 0.0,
            "lr": lr * layer_decay ** (layers + 1 - depth),
        }
        for (depth, matrix), params in sorted(groups.items())
    ]


class TrainingStep:
    """One step of training, all of it: the forward pass (DDP, compiled, under autocast), the objective, the scaled
    backward pass, clipping, the fused AdamW update with the fp16 loss scaler, and the learning-rate schedule."""

    def __init__(
        self,
        model,
        config: LoopConfig,
        device: torch.device,
        precision: str,
        world: int,
        total_steps: int,
        objective: Callable[[torch.Tensor, dict], torch.Tensor],
        before_update: Callable[[int], None] | None = None,
        schedule: Callable[[int], float] | None = None,
    ):
        groups = parameter_groups(model, config.weight_decay, getattr(config, "layer_decay", 1.0), config.lr)
        self.params = [p for group in groups for p in group["params"]]
        self.optimizer = torch.optim.AdamW(
            groups, lr=config.lr, eps=config.adam_eps, fused=device.type in ("cuda", "cpu")
        )
        warmup = int(config.warmup_ratio * total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, schedule or linear_schedule(warmup, total_steps)
        )
        # fp16 (GPUs without bf16: T4, V100) needs a scaled loss, or small gradients underflow to zero. A step whose
        # gradients overflow is skipped by the fused optimiser itself, on the GPU, without a sync.
        self.scaler = torch.amp.GradScaler(device.type, init_scale=FP16_INIT_SCALE, enabled=precision == "fp16")
        self.model = self.forward_model = model
        if world > 1:
            self.forward_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True
            )
        if config.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.device, self.precision, self.world, self.grad_clip = device, precision, world, config.grad_clip
        self.objective = objective
        self.before_update = before_update  # called with the step's index between backward and update

    def run(self, batch: dict, mean_over: int) -> torch.Tensor:
        """One training step on this process's share of a global batch; returns the share's summed loss, on the
        device and unread (reading it would make the host wait for the GPU). `mean_over`: what the loss is a
        mean over (the global batch's rows; masked tokens in pre-training)."""
        inputs = modeling.device_batch(self.model, batch, self.device)
        targets = {k: inputs.pop(k) for k in ("labels", "teacher") if k in inputs}
        with modeling.autocast(self.device, self.precision):
            logits = self.forward_model(**inputs).logits
        summed = self.objective(logits.float(), targets)
        # DDP averages gradients over processes whose shares may differ in size: each share's sum scaled by
        # world / global count makes that average the mean over the whole global batch, as one process computes it.
        self.scaler.scale(summed * (self.world / mean_over)).backward()
        if self.before_update is not None:
            self.before_update(self.scheduler.last_epoch)  # the steps taken so far: resumed with the schedule
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return summed.detach()

    def skipped_steps(self, steps: int) -> int:
        """Steps whose update was skipped for overflowing fp16 gradients (the optimiser counts applied ones)."""
        if not self.scaler.is_enabled() or steps == 0:
            return 0
        applied = self.optimizer.state.get(self.params[0], {}).get("step", 0)
        return steps - int(applied)

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, saved: dict) -> None:
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])


class LossMeter:
    """Sums the loss on the device; `mean_and_reset()` reads the mean since the last read (one host-device sync)."""

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), device=device)
        self.rows = 0

    def add(self, summed: torch.Tensor, rows: int) -> None:
        self.total += summed
        self.rows += rows

    def mean_and_reset(self) -> float:
        mean = self.total.item() / self.rows if self.rows else float("nan")
        self.total.zero_()
        self.rows = 0
        return mean


class Clock:
    """Seconds spent in training steps, apart from validation and checkpoints (the GPU is waited for at each
    switch, so queued work is counted where it belongs)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.started = time.perf_counter()
        self.paused = 0.0

    @contextmanager
    def pause(self):
        _synchronize(self.device)
        start = time.perf_counter()
        yield
        self.paused += time.perf_counter() - start

    def training_seconds(self) -> float:
        _synchronize(self.device)
        return max(time.perf_counter() - self.started - self.paused, 1e-9)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------- the run: where it stands, checkpoints, interruption, the log


@dataclass(frozen=True)
class Machine:
    """Where and how the steps run."""

    device: torch.device
    precision: str  # bf16, fp16 or fp32
    multiple: int  # batch widths rounded up to it
    by_tokens: bool  # batches filled to a token budget, or a fixed number of reviews

    @classmethod
    def choose(cls, config: LoopConfig, device: torch.device) -> Machine:
        return cls(
            device,
            modeling.resolve_precision(config.precision, device),
            COMPILED_WIDTH if config.compile else modeling.pad_multiple(device),
            config.batching == "tokens" or (config.batching == "auto" and device.type == "cuda"),
        )


# Compiled, a batch width rounds up to 64 tokens, so a run meets at most max_length / 64 widths (4 at 256 tokens)
# where torch.compile may specialise (on one H200 a compiled run spent 106 of its 118 s compiling, 2026-11-27). On
# the CPU, a tiny BERT on IMDB-like lengths up to 256: 23 distinct (rows, width) shapes in 120 token-budget batches
# with widths rounded to 8, 4 with widths rounded to 64; torch.compile's default built 3 graphs for the 23 (it turns
# a changing size dynamic) and 4 static ones for the 4. Which compiles faster on a card, the queue's `compiled` step
# measures.
COMPILED_WIDTH = 64


@dataclass
class RunState:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    history: list[dict] = field(default_factory=list)


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


class Checkpoint:
    """The run's checkpoint (OUTPUT/checkpoint/state.pt): the weights, the optimiser, the schedule and loss scale,
    where the run stands, every process's random state, and the settings it must match to be resumed."""

    def __init__(self, path: Path, dist: Distributed, model, training_step: TrainingStep, settings: dict):
        self.path, self.dist, self.model, self.training_step, self.settings = path, dist, model, training_step, settings

    def save(self, state: RunState) -> None:
        """Every process calls it (each draws its own dropout: its random state is kept); the first one writes."""
        rng = self.dist.gather(rng_state(self.dist.device))
        if self.dist.main:
            name, key, position, has_gauss, gauss = np.random.get_state()
            atomic_save(
                {
                    "model": self.model.state_dict(),
                    **self.training_step.state_dict(),
                    "state": asdict(state),
                    "config": self.settings,
                    "rng": {
                        "python": random.getstate(),
                        "processes": rng,
                        "numpy": (name, key.tolist(), position, has_gauss, gauss),
                    },
                },
                self.path,
            )

    def load(self) -> RunState:
        import pickle

        try:  # tensors and plain values only: a pickle in a shared output folder could otherwise run code
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            named = re.search(r"GLOBAL ([\w.]+)", str(error))
            found = f"a reference to {named.group(1)}" if named else "objects other than tensors and plain values"
            raise ValueError(
                f"{self.path}: not a checkpoint critic wrote (it holds {found}); critic loads only "
                f"tensors and plain values from a checkpoint. Delete {self.path.parent} if you did not "
                f"put it there"
            ) from None
        if saved["config"] != self.settings:
            changed = sorted(
                k for k in set(self.settings) | set(saved["config"]) if self.settings.get(k) != saved["config"].get(k)
            )
            raise ValueError(
                f"{self.path} belongs to a run with other settings ({', '.join(changed)}); "
                f"use another --output or delete {self.path.parent}"
            )
        self.model.load_state_dict(saved["model"])
        self.training_step.load_state_dict(saved)
        random.setstate(saved["rng"]["python"])
        name, key, position, has_gauss, gauss = saved["rng"]["numpy"]
        np.random.set_state((name, np.array(key, dtype=np.uint32), position, has_gauss, gauss))
        set_rng_state(saved["rng"]["processes"][self.dist.rank], self.dist.device)
        return RunState(**saved["state"])

    def resume(
        self, total: int, say: Callable[[str], None], finished: Callable[[RunState], bool], saved: Callable[[], bool]
    ) -> RunState | None:
        """Where a run stands: a fresh RunState without a checkpoint, the checkpoint's (weights, optimiser and
        random state loaded) with one, None when the checkpoint holds a finished run (`finished`) whose final save
        completed (`saved`). A finished run whose final save was cut short (a crash, a signal, a full disk) is
        returned as it is, to be saved again."""
        if not self.path.is_file():
            return RunState()
        state = self.load()
        folder = self.path.parent.parent
        if finished(state):
            if saved():
                say(
                    f"{folder} holds a finished run (step {state.step} of {total}); nothing to do. Use another "
                    f"--output, or delete the folder to run again"
                )
                return None
            say(
                f"{folder}: training finished at step {state.step} of {total}, but the final save did not "
                f"complete; saving it now"
            )
            return state
        say(f"resuming from step {state.step} of {total} ({self.path})")
        return state

    def stop_interrupted(self, state: RunState):
        """Ctrl-C or SIGTERM reached a process: every process checkpoints (rank 0 writes) and the run stops."""
        self.save(state)
        self.dist.barrier()
        raise KeyboardInterrupt(
            f"interrupted at step {state.step}; checkpoint saved in {self.path}, run the same command again to resume"
        )


def checkpoint_settings(config: LoopConfig, world: int, precision: str) -> dict:
    """What a checkpoint must have been written with to be resumed: the settings that change the weights (each
    setting says whether it does), the precision they resolved to and the number of processes."""
    return {**config.resume_settings(), "precision": precision, "processes": world}


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


def append_log(path: Path, entry: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"time": time.time(), **entry}) + "\n")


def truncate_log(path: Path, step: int) -> None:
    """On resume, forget log lines written after the checkpoint, and a line cut short by a crash in its write."""
    if not path.is_file():
        return
    kept = [
        line for line in path.read_text().splitlines() if (entry := log_entry(line)) and entry.get("step", 0) <= step
    ]
    modeling.write_text_atomic(path, "".join(line + "\n" for line in kept))


def log_entry(line: str) -> dict | None:
    """A log line's entry; None for an empty line or one cut short."""
    try:
        return json.loads(line) if line.strip() else None
    except json.JSONDecodeError:
        return None


# ------------------------------------------------------------------------------------------------------ the loop


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

    def training_step(self, machine: Machine, world: int, total: int) -> TrainingStep:
        """The model made ready for the machine (on its device already) and its TrainingStep."""
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

    def finish(self, state: RunState, clock: Clock, samples: int, training_step: TrainingStep, world: int) -> None:
        """On the first process: the final save and summary."""
        raise NotImplementedError

    def finished(self, state: RunState, total: int) -> bool:
        """Whether a run at `state` has no step left."""
        return state.step >= total

    def rows(self, batch: dict) -> int:
        """What the share's summed loss counts: its reviews (pre-training: its masked tokens)."""
        return len(batch["labels"])

    def validates_at(self, step: int) -> bool:
        """Besides the end of each epoch: never, unless the job says so."""
        return False


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
    machine = Machine.choose(config, dist.device)
    plan = plan_batches(job.lengths, config, dist.world, machine.by_tokens, machine.multiple)
    job.model.to(machine.device)
    torch.manual_seed(rank_seed(config.seed, dist.rank))  # dropout masks differ from process to process
    training_step = job.training_step(machine, dist.world, plan.total)
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
        job.finish(state, steps.clock, steps.samples, training_step, dist.world)
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
                rows = job.rows(batch)
                self.log_losses.add(summed, rows)
                self.epoch_losses.add(summed, rows)
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
