"""The processes of a training run: rank, world size and the device each trains on, the few collectives the loop
needs, the seeds, and each process's random state. A single process is a world of one."""

from __future__ import annotations

import os
import random
import socket
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from critic import messages, modeling


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """Each process's own seed for dropout; the data order comes from `seed` alone and is shared by all."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


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
