"""The harness of the GPU benchmarks: the run's context (device, sizes, artifacts), the machine it names, critic
training runs and their clocks, and steps run one by one into a report written after each."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[2] / "src"
sys.path.insert(0, str(SRC))

from benchlib.artifacts import MODEL_DIR, unpack  # noqa: E402
from critic import config, modeling  # noqa: E402
from critic.inference.backends import cpu_name as cpu_model  # noqa: E402


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock read after it is the work's own (nothing on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclasses.dataclass
class Context:
    data: str  # "imdb" (verified copy in the suite's cache) or a file (smoke)
    minilm: Path  # an encoder folder
    device: torch.device
    sizes: dict
    work: Path
    results: dict = dataclasses.field(default_factory=dict)

    def folder(self, name: str) -> Path:
        return self.work / name


def machine(device: torch.device) -> dict:
    import transformers

    info = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            card=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            bf16=torch.cuda.is_bf16_supported(),
        )
    return info


def run_settings(ctx: Context, name: str, settings: dict) -> dict:
    """A suite run's training settings: the suite's data and device, the gpu preset, its own folder, `settings`."""
    return dict(data=ctx.data, preset="gpu", output=str(ctx.folder(name)), device=str(ctx.device), **settings)


def critic_train(ctx: Context, name: str, **settings) -> tuple[Path, dict]:
    import critic

    cfg = config.build(run_settings(ctx, name, settings))
    started = time.perf_counter()
    folder = critic.train_model(cfg, log=lambda m: print(f"  critic: {m}", file=sys.stderr, flush=True), progress=False)
    meta = json.loads((folder / "critic.json").read_text())
    meta["wall_seconds"] = time.perf_counter() - started
    return folder, meta


def critic_train_in_a_new_process(ctx: Context, name: str, env: dict, **settings) -> tuple[Path, dict]:
    """critic_train as `critic train` in a process of its own with `env` added: for what one process cannot show,
    such as a fresh machine's empty torch.compile cache (TORCHINDUCTOR_CACHE_DIR: an empty folder)."""
    options = [
        part
        for key, value in run_settings(ctx, name, settings).items()
        for part in (f"--{key.replace('_', '-')}", str(value))
    ]
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "critic.cli", "train", *options],
        env={**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])},
        check=True,
    )
    meta = json.loads((ctx.folder(name) / "critic.json").read_text())
    meta["wall_seconds"] = time.perf_counter() - started
    return ctx.folder(name), meta


def training_clock(folder: Path) -> list[tuple[int, int, float]]:
    """(step, samples, seconds) at each logged step, on the run's own training clock: from the loop's start,
    validation and checkpoints left out (samples over the logged samples/s)."""
    entries = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    return [
        (e["step"], e["samples"], e["samples"] / e["samples_per_second"])
        for e in entries
        if e["event"] == "train" and e.get("samples_per_second")
    ]


def steady(folder: Path) -> tuple[float, float] | None:
    """(samples/s, milliseconds per step) over the second half of the logged steps (compilation and warm-up left
    out); None with fewer than 3 logged steps, or no log (a run not made, or a model trained elsewhere)."""
    clock = training_clock(folder) if (folder / "train_log.jsonl").is_file() else []
    if len(clock) < 3:
        return None
    (step0, samples0, seconds0), (step1, samples1, seconds1) = clock[len(clock) // 2], clock[-1]
    elapsed = max(seconds1 - seconds0, 1e-9)
    return (samples1 - samples0) / elapsed, elapsed / max(step1 - step0, 1) * 1000


def steady_speed(folder: Path) -> float | None:
    figures = steady(folder)
    return figures[0] if figures else None


def seconds_at_step(folder: Path) -> dict[int, float]:
    """The training clock's seconds at each logged step: where a run's time went (on an H200 the first half of the
    throughput run took three times as long as the second)."""
    return {step: round(seconds, 2) for step, _, seconds in training_clock(folder)}


def open_context(artifacts: Path, smoke: bool, device: str, sizes: dict, prefix: str) -> Context:
    """A fresh work folder and cache, offline, the reviews unpacked: where a suite's steps run."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update(CRITIC_CACHE=str(work / "cache"), CRITIC_OFFLINE="1", HF_HUB_OFFLINE="1")
    device_ = torch.device("cpu") if smoke else modeling.resolve_device(device)
    return Context(
        data=unpack(artifacts, work, smoke), minilm=artifacts / MODEL_DIR, device=device_, sizes=sizes, work=work
    )


def target(value: float | None, goal: float, at_most: bool = False) -> dict:
    """A target's verdict as the GPU scripts print it: its value, the target, and whether it was met (None: not
    measured). Seconds are met at most, everything else at least."""
    met = None if value is None else (value <= goal if at_most else value >= goal)
    return {"value": value, "target": goal, "met": met}


def run_step(report: dict, section: str, name: str, step) -> None:
    """One step into report[section][name]: its figures, or its error (the other steps still run), and its
    seconds."""
    print(f"{Path(sys.argv[0]).stem}: {name} …", file=sys.stderr, flush=True)
    began = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the report alone (Trainer prints)
            report[section][name] = step()
    except Exception:
        report[section][name] = {"error": traceback.format_exc()[-3000:]}
    report[section][name]["seconds"] = round(time.perf_counter() - began, 1)


def write_report(report: dict, out: Path | None) -> None:
    """After every step, so that a run cut short keeps what it measured."""
    if out:
        out.write_text(json.dumps(report, indent=1, default=str))


def finish_run(report: dict, ctx: Context) -> dict:
    print(json.dumps(report, indent=1, default=str))
    shutil.rmtree(ctx.work, ignore_errors=True)
    return report
