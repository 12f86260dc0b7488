"""Where a run stands and how it resumes exactly: the RunState, the checkpoint that keeps it with the weights, the
optimiser, the schedule and every process's random state, and the log cut back to it on resume."""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from critic import modeling
from critic.config import LoopConfig
from critic.training.processes import Distributed, rng_state, set_rng_state
from critic.training.step import TrainingStep

CHECKPOINT = "checkpoint/state.pt"


@dataclass
class RunState:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    history: list[dict] = field(default_factory=list)


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
