"""torch.compile's work kept between runs, so that a compiled run pays for compilation once, not on every machine.

torch keeps what it compiles (graphs, kernels, autotuning) in its own cache on the machine that compiled it; a fresh
machine (a rented card, a CI runner, a container) starts empty and compiles again: on one H200 a compiled run spent
106 of its 118 s compiling (2026-11-27). After a compiled run critic saves torch's portable cache ("mega-cache",
torch.compiler.save_cache_artifacts) to one file per torch version, device and model architecture under
$CRITIC_CACHE/compile, and loads it before the next such run: copy that folder to a new machine and its first run
starts warm. (One file per architecture: torch saves what a run compiled or used, so a MiniLM run saving into a
file an MPNet run had filled would drop MPNet's graphs.) torch checks every entry against the graph, the device and
its own version, so a file from elsewhere is at worst unused; one that cannot be read is reported and ignored.
On the CPU a first compiled step took 113.7 s from an empty cache and 73.6 s from the file (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import logging
import platform
import re
from collections.abc import Callable
from pathlib import Path

import torch

from critic.data import sources
from critic.modeling.folder import write_bytes_atomic


def cache_file(device: torch.device, model) -> Path:
    """The file for this torch version, this kind of device (the card's name; the CPU's architecture) and this
    model's architecture (its config, weights aside)."""
    kind = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"
    architecture = hashlib.sha256(model.config.to_json_string(use_diff=False).encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9.]+", "-", f"torch-{torch.__version__}-{kind}-{model.config.model_type}").strip("-")
    return sources.cache_root() / "compile" / f"{name}-{architecture}.bin"


def load(path: Path, say: Callable[[str], None]) -> None:
    """Give torch what earlier runs compiled, where `path` (cache_file's) holds it."""
    if not path.is_file():
        return
    torch_log = logging.getLogger("torch.compiler._cache")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)  # its own warning for an unreadable file is a traceback; ours is one line
    try:
        info = torch.compiler.load_cache_artifacts(path.read_bytes())
    except Exception as error:  # compiling from scratch is the fallback
        info, problem = None, f"{type(error).__name__}: {error}"
    else:
        problem = "torch could not read it"
    finally:
        torch_log.setLevel(level)
    if info is None:
        say(f"torch.compile: not using {path} ({problem}); compiling from scratch")
    else:
        say(f"torch.compile: {len(info.inductor_artifacts)} compiled graph(s) from earlier runs ({path})")


def save(path: Path) -> None:
    """Write what this process compiled, or found in the file it loaded, to `path`: the file load read, named
    before the run (saving a model rewrites its config's `architectures`, and so the name cache_file gives)."""
    artifacts = torch.compiler.save_cache_artifacts()
    if artifacts is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, artifacts[0])
