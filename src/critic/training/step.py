"""One training step and what it runs on: the machine (device, precision, batch widths), AdamW's parameter groups
and the learning-rate schedule, the loss meter and the clock of training seconds.

Nothing inside a step waits for the GPU: the loss is summed on the device and read every `log_every` steps."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from critic import modeling
from critic.config import LoopConfig

FP16_INIT_SCALE = 2.0**16  # GradScaler's own default; a test raises it to force overflowing steps


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def layer_count(model) -> int:
    return model.config.num_hidden_layers if hasattr(model.config, "num_hidden_layers") else model.config.n_layers


def depth(name: str, layers: int) -> int:
    """Where a parameter sits: 0 the embeddings, 1..layers the encoder's layers from the bottom, layers + 1 the
    head and the rest."""
    found = re.search(r"\.layers?\.(\d+)\.", name)  # ModernBERT's are model.layers.N
    below = "embeddings" in name or "relative_attention_bias" in name  # MPNet's is shared by all its layers
    return int(found[1]) + 1 if found else 0 if below else layers + 1


def layers_apart(model) -> bool:
    """Whether critic tells the encoder's layers apart by their parameters' names."""
    layers = layer_count(model)
    return any(0 < depth(name, layers) <= layers for name, _ in model.named_parameters())


def freeze_lowest(model, frozen_layers: int) -> int:
    """Keep the embeddings and the lowest `frozen_layers` encoder layers as they are: no gradient is computed for
    them, the optimiser does not hold them, and their dropout is off. Returns how many parameters still learn."""
    layers = layer_count(model)
    named = list(model.named_parameters())
    if frozen_layers >= layers:
        raise ValueError(
            f"frozen_layers {frozen_layers}: {type(model).__name__} has {layers} layers; keep one to learn"
        )
    if not layers_apart(model):
        raise ValueError(f"frozen_layers: critic cannot tell {type(model).__name__}'s layers apart (0 trains them all)")
    for name, param in named:
        if depth(name, layers) <= frozen_layers:
            param.requires_grad_(False)
    # So they compute the pretrained features as at inference. Drawing their masks was a sixth of a MiniLM step with
    # 3 of 6 layers kept (8 x 128 tokens, fp32, 2 AMD EPYC Zen 3 cores: 442 against 529 ms).
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout) and depth(name, layers) <= frozen_layers:
            module.p = 0.0
    return sum(param.numel() for _, param in named if param.requires_grad)


def parameter_groups(model, weight_decay: float, layer_decay: float, lr: float) -> list[dict]:
    """AdamW groups: weight decay on matrices only (not biases and LayerNorm); with layer_decay < 1 each encoder
    layer's rate is layer_decay times the one above it (the head at `lr`, the embeddings lowest). Frozen
    parameters are left out."""
    layers = layer_count(model)
    groups: dict[tuple[int, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((depth(name, layers), param.ndim >= 2), []).append(param)
    return [
        {
            "params": params,
            "weight_decay": weight_decay if matrix else 0.0,
            "lr": lr * layer_decay ** (layers + 1 - level),
        }
        for (level, matrix), params in sorted(groups.items())
    ]


class TrainingStep:
    """One step of training, all of it: the forward pass (DDP, compiled, under autocast), the objective, the scaled
    backward pass, clipping, the fused AdamW update with the fp16 loss scaler, and the learning-rate schedule."""

    def __init__(
        self,
        model,
        config: LoopConfig,
        machine: Machine,
        total_steps: int,
        loss: Callable[[Callable[..., Any], dict[str, torch.Tensor]], torch.Tensor],
        before_update: Callable[[int], None] | None = None,
        schedule: Callable[[int], float] | None = None,
    ):
        device, precision, world = machine.device, machine.precision, machine.world
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
        self.loss = loss  # the job's: (forward, the batch on the device) -> the share's summed loss
        self.before_update = before_update  # called with the step's index between backward and update

    def run(self, batch: dict, mean_over: int) -> torch.Tensor:
        """One training step on this process's share of a global batch; returns the share's summed loss, on the
        device and unread (reading it would make the host wait for the GPU). `mean_over`: what the loss is a
        mean over (the global batch's rows; masked tokens in pre-training)."""
        summed = self.loss(self.forward, modeling.device_batch(self.model, batch, self.device))
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

    def forward(self, **inputs: torch.Tensor):
        """The model (through DDP and torch.compile where they wrap it) on `inputs`, under autocast: what a job's
        loss calls, reading its output as the job needs (logits, an embedding)."""
        with modeling.autocast(self.device, self.precision):
            return self.forward_model(**inputs)

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
        self.terms = 0

    def add(self, summed: torch.Tensor, terms: int) -> None:
        self.total += summed
        self.terms += terms

    def mean_and_reset(self) -> float:
        mean = self.total.item() / self.terms if self.terms else float("nan")
        self.total.zero_()
        self.terms = 0
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


@dataclass(frozen=True)
class Machine:
    """Where and how the steps run."""

    device: torch.device
    precision: str  # bf16, fp16 or fp32
    multiple: int  # batch widths rounded up to it
    by_tokens: bool  # batches filled to a token budget, or a fixed number of reviews
    world: int = 1  # the processes that train together, each on its own device

    @classmethod
    def choose(cls, config: LoopConfig, device: torch.device, world: int = 1) -> Machine:
        return cls(
            device,
            modeling.resolve_precision(config.precision, device),
            COMPILED_WIDTH if config.compile else modeling.pad_multiple(device),
            config.batching == "tokens" or (config.batching == "auto" and device.type == "cuda"),
            world,
        )


# Compiled, a batch width rounds up to 64 tokens, so a run meets at most max_length / 64 widths (4 at 256 tokens)
# where torch.compile may specialise (on one H200 a compiled run spent 106 of its 118 s compiling, 2026-11-27). On
# the CPU, a tiny BERT on IMDB-like lengths up to 256: 23 distinct (rows, width) shapes in 120 token-budget batches
# with widths rounded to 8, 4 with widths rounded to 64; torch.compile's default built 3 graphs for the 23 (it turns
# a changing size dynamic) and 4 static ones for the 4. Which compiles faster on a card, the queue's `compiled` step
# measures.
COMPILED_WIDTH = 64
