"""The GPU suite: every GPU figure critic claims, measured in one run on one card and printed as one JSON object
(card, versions, date, each step's figures, each target and whether it was met).

    python bench/gpu_suite.py build                        # here: .gpu/ = MiniLM in fp16 (43 MiB) + IMDB in xz (17 MiB)
    python bench/gpu_suite.py run --artifacts .gpu --out results.json     # on the GPU machine: about 5 minutes
    python bench/gpu_suite.py run --artifacts .gpu --smoke  # the same folder, every step tiny, on this CPU
    python bench/gpu_suite.py smoke                        # every step, tiny, on a CPU (CI runs it)
    python bench/gpu_suite.py pack --model mpnet           # here: .gpu-mpnet/ = MPNet fp16 in 4 parts of <= 56 MiB
    python bench/gpu_suite.py join .gpu-mpnet              # there, once every part has travelled (one per run)

`run` needs no network and installs nothing: Python with torch, transformers (5.17 or later), accelerate, pandas,
pyarrow and scikit-learn, this repository, and the folder that `build` wrote (small enough to travel with the
code). Steps, each timing critic and its peer in the same run:

  train_throughput  DistilBERT architecture (random weights from its config; no download), 256 tokens (the first),
                    20,000 IMDB training reviews, one epoch: critic (token batches of 64 x 256, bf16), critic with
                    torch.compile, and HF Trainer at its best (bf16, group_by_length, batch 64).
                    Targets: >= 4,000 samples/s and >= 5x Trainer.
  recipe            the full MiniLM recipe (`critic train --preset gpu`: the whole training split, 512 tokens
                    head+tail, 3 epochs, validation every epoch), then its accuracy, ECE and "not sure" (for
                    each standard target: the share of test reviews answered and their accuracy) on the whole
                    test split. Target: <= 30 s of training.
  scoring           that model at 256 tokens (the first), tokenization included, on the validation and test reviews:
                    critic (bf16 weights, the encoder's worker processes on every core but two) vs
                    transformers.pipeline at its best (bf16 or fp16, batch 64 or 256, chosen on a probe); then
                    each stage's rate on 20,000 of them, the slowest named (benchlib/stages.py: cleaning,
                    tokenization, ids in one process and in 1, 2, 4 ... workers; framing and padding; the copy;
                    the model). Targets: >= 20,000 reviews/s and >= 20x.
  fp16              DistilBERT architecture, 2 epochs in fp16 with loss scaling (the T4/V100 path): skipped
                    steps, validation accuracy, finite weights.
  bare_loop         the throughput step's model and token budget in a bare PyTorch loop: the card's floor per
                    step, against critic's steady milliseconds per step; again with a 2-D mask of ones, which
                    transformers reads back on the host at every forward (what that read costs a step).
  compiled          the train_throughput run again under torch.compile (last: compiling for changing batch
                    shapes can take minutes), its samples/s against the eager run's; then once more in a new
                    process with an empty torch cache, given the compile cache critic saved (a fresh machine).
  profile           where critic's step time goes (on an H200 it took 31 ms against the bare loop's 21): the
                    throughput run on 6,000 reviews, the host's time inside each optimiser step against the time
                    from one step's start to the next, and torch.profiler's busiest operations over 10 steady steps.
  attention         what cuDNN's attention plans cost (an H200, 2026-12-04: 114 of a profiled step's 164 ms of host
                    time): the gpu preset on MiniLM, 20,000 reviews, 1 epoch, four ways, each in a process of its
                    own: as is, SDPA without cuDNN, batch widths rounded to 64 tokens (8 widths at 512), both;
                    training seconds, steady ms a step, the distinct batch shapes met, validation accuracy; then
                    that model scoring the validation reviews (512 tokens, tokenized beforehand) twice: shapes new
                    to the process, then the same shapes again.

A step that fails is reported with its error and the others still run; results are written after every step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from benchlib import stages  # noqa: E402
from benchlib.artifacts import PART_MIB, build, join, pack  # noqa: E402
from benchlib.harness import (  # noqa: E402
    Context,
    critic_train,
    critic_train_in_a_new_process,
    finish_run,
    machine,
    open_context,
    run_settings,
    run_step,
    seconds_at_step,
    steady,
    steady_speed,
    sync,
    target,
    write_report,
)

from critic import data, modeling  # noqa: E402

FULL = dict(
    throughput_reviews=20000,
    throughput_batch=64,
    throughput_length=256,
    profile_reviews=6000,
    profiled_steps=(30, 10),
    attention=dict(train_size=20000, eval_size=512, epochs=1, log_every=20),
    recipe={},
    fp16_reviews=10000,
    fp16_eval=1000,
    scoring_length=256,
    scoring_probe=2000,
    scoring_reviews=None,
    stage_reviews=20000,
    pipeline_dtypes=("bf16", "fp16"),
    pipeline_batches=(64, 256),
    scoring_precision="auto",
    tiny=False,
)
SMOKE = dict(
    throughput_reviews=160,
    throughput_batch=16,
    throughput_length=64,
    profile_reviews=160,
    profiled_steps=(3, 2),
    attention=dict(train_size=160, eval_size=32, max_length=64, epochs=1, batch_size=16),
    recipe=dict(train_size=800, eval_size=40, max_length=64, epochs=2, batch_size=32, lr=3e-3),
    fp16_reviews=160,
    fp16_eval=40,
    scoring_length=64,
    scoring_probe=32,
    scoring_reviews=120,
    stage_reviews=120,
    pipeline_dtypes=("fp32",),
    pipeline_batches=(16,),
    scoring_precision="fp32",
    tiny=True,
)

TARGETS = {  # issue 23, on one H200
    "train_samples_per_s": 4000,
    "train_ratio_vs_trainer": 5.0,
    "recipe_train_seconds": 30,
    "scoring_reviews_per_s": 20000,
    "scoring_ratio_vs_pipeline": 20.0,
}


# ------------------------------------------------------------------------------------------ build


# ------------------------------------------------------------------------------------------ context


def distilbert(ctx: Context, name: str) -> Path:
    """A DistilBERT-architecture encoder with random weights (base size; tiny for the smoke) and MiniLM's
    vocabulary, which is DistilBERT's own (BERT uncased)."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    folder = ctx.folder(name)
    if (folder / "config.json").is_file():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(ctx.minilm)
    size = dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64) if ctx.sizes["tiny"] else {}
    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig(vocab_size=len(tokenizer), **size)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def throughput_settings(ctx: Context) -> dict:
    """The train_throughput step's settings, for it and the steps that repeat its work (bare_loop can run alone)."""
    sizes = ctx.sizes
    return dict(
        model=str(distilbert(ctx, "distilbert")),
        train_size=sizes["throughput_reviews"],
        eval_size=256 if not sizes["tiny"] else 32,
        max_length=sizes["throughput_length"],
        truncation="head",
        epochs=1,
        batch_size=sizes["throughput_batch"],
        log_every=20 if not sizes["tiny"] else 2,
    )


# ------------------------------------------------------------------------------------------ steps


def step_train_throughput(ctx: Context) -> dict:
    from train_throughput import hf_trainer

    common = throughput_settings(ctx)
    model, n, batch, length = common["model"], common["train_size"], common["batch_size"], common["max_length"]
    out = {"reviews": n, "max_length": length, "batch": batch}
    _, meta = critic_train(ctx, "throughput-critic", **common)
    out["critic"] = {
        "samples_per_s": meta["train_samples_per_second"],
        "precision": meta["precision"],
        "batching": f"tokens ({batch} x {length} per batch)" if ctx.device.type == "cuda" else f"reviews ({batch})",
        "steady_samples_per_s": steady_speed(ctx.folder("throughput-critic")),
    }
    out["critic"]["seconds_at_step"] = seconds_at_step(ctx.folder("throughput-critic"))

    frame = data.load(ctx.data).split("train", n, 42)  # the rows critic trained on (its seed is 42)
    texts, labels = frame["text"].map(data.clean_default).tolist(), frame["label"].to_numpy()
    bf16 = torch.cuda.is_bf16_supported() if ctx.device.type == "cuda" else modeling.cpu_has_bf16()
    args = argparse.Namespace(batch_size=batch, max_length=length)
    trainer = hf_trainer(model, texts, labels, args, ctx.device, ctx.folder("throughput-trainer"), bf16)
    out["hf_trainer"] = {
        "samples_per_s": trainer,
        "precision": "bf16" if bf16 else "fp32",
        "settings": f"batch {batch}, group_by_length, dynamic padding",
    }
    out["ratio_vs_trainer"] = out["critic"]["samples_per_s"] / trainer
    return out


def step_bare_loop(ctx: Context) -> dict:
    """The card's floor for the throughput step's work: the same model trained by a bare PyTorch loop (fused AdamW,
    the same precision) on full batches of the same token budget, random tokens, nothing else in the loop. Against
    critic's steady milliseconds per step it tells whether time goes to critic's loop or to eager PyTorch itself
    (on an H200, 2026-11-27, MiniLM kept the card busy about half the time)."""
    from transformers import AutoModelForSequenceClassification

    common = throughput_settings(ctx)
    rows, width = common["batch_size"], common["max_length"]
    model = AutoModelForSequenceClassification.from_pretrained(common["model"], num_labels=2).to(ctx.device).train()
    if ctx.device.type == "cuda":
        model.set_attn_implementation("sdpa")
    precision = modeling.resolve_precision("auto", ctx.device)
    steps = (3, 5) if ctx.sizes["tiny"] else (20, 100)
    bare_ms = bare_ms_per_step(model, rows, width, ctx.device, precision, steps, mask=False)
    host_read_ms = bare_ms_per_step(model, rows, width, ctx.device, precision, steps, mask=True)
    critic = steady(ctx.folder("throughput-critic"))
    return {
        "batch": f"{rows} x {width} tokens",
        "precision": precision,
        "bare_ms_per_step": bare_ms,
        "bare_samples_per_s": rows / bare_ms * 1000,
        "bare_with_2d_mask_ms_per_step": host_read_ms,
        "critic_steady_ms_per_step": critic[1] if critic else None,
        "note": "bare: no mask (the batch is full); with_2d_mask: an all-ones 2-D mask, which transformers "
        "reads back on the host at every forward (critic.modeling.ready_mask spares that read); critic's "
        "steps hold the same token budget, in rows of varying width",
    }


class StepTimer:
    """Wraps TrainingStep.run: each step's start and the host's time inside it (queueing the GPU's work), and
    torch.profiler over steps [first, first + count)."""

    def __init__(self, device: torch.device, first: int, count: int):
        self.device, self.first, self.count = device, first, count
        self.starts: list[float] = []
        self.inside: list[float] = []
        activities = [torch.profiler.ProfilerActivity.CPU] + (
            [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else []
        )
        self.profiler = torch.profiler.profile(activities=activities)
        self.window_began: float | None = None
        self.window_seconds: float | None = None

    def wrap(self, step):
        def timed(training_step, batch, mean_over):
            self.profile_edge(len(self.starts))
            began = time.perf_counter()
            self.starts.append(began)
            try:
                return step(training_step, batch, mean_over)
            finally:
                self.inside.append(time.perf_counter() - began)

        return timed

    def profile_edge(self, index: int) -> None:
        """Starts the profiler before step `first`, stops it before step `first + count` (the GPU waited for)."""
        if index == self.first:
            sync(self.device)
            self.profiler.start()
            self.window_began = time.perf_counter()
        if index == self.first + self.count:
            sync(self.device)
            self.window_seconds = time.perf_counter() - self.window_began
            self.profiler.stop()

    def medians(self) -> dict:
        """Milliseconds from one step's start to the next, inside the step and outside it: medians over the second
        half of the steps, the profiled ones (and the step before them, which paid the profiler's start) left out."""
        between = np.diff(self.starts) * 1000  # step i's start to step i+1's
        within = np.array(self.inside[:-1]) * 1000
        index = np.arange(len(between))
        steady = (index >= len(between) // 2) & ((index < self.first - 1) | (index > self.first + self.count))
        if not steady.any():
            raise RuntimeError(f"the run took {len(self.starts)} steps: none steady and unprofiled")
        return {
            "steps": len(self.starts),
            "ms_per_step_median": float(np.median(between[steady])),
            "host_ms_in_step_median": float(np.median(within[steady])),
            "host_ms_outside_step_median": float(np.median(between[steady] - within[steady])),
        }


def step_profile(ctx: Context) -> dict:
    """Where a step's time goes: the host's time inside each optimiser step (TrainingStep.run, queueing the GPU's
    work) against the time from one step's start to the next (the rest: the next batch, the loss meter, logging),
    medians over the second half of the steps; and torch.profiler's operations by their host time over a few
    steady steps, with the share of that window the GPU was busy."""
    from critic.training.step import TrainingStep

    first, count = ctx.sizes["profiled_steps"]
    timer = StepTimer(ctx.device, first, count)
    original = TrainingStep.run
    TrainingStep.run = timer.wrap(original)
    try:
        critic_train(ctx, "profile-critic", **{**throughput_settings(ctx), "train_size": ctx.sizes["profile_reviews"]})
    finally:
        TrainingStep.run = original
    if timer.window_seconds is None:
        raise RuntimeError(f"the run took {len(timer.starts)} steps, fewer than the {first + count + 1} profiled")
    return {
        **timer.medians(),
        "profiled_steps": [first, first + count],
        **profiled_operations(timer.profiler, timer.window_seconds, count),
    }


def profiled_operations(profiler, seconds: float, steps: int, top: int = 25) -> dict:
    """The profiled window's operations with the most host time of their own, per step, and the GPU's busy share."""
    events = profiler.key_averages()

    def device_us(event) -> float:  # named cuda_* before torch 2.4
        return getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0)) or 0.0

    busy_us = sum(device_us(e) for e in events if e.device_type == torch.autograd.DeviceType.CUDA)  # the kernels
    busiest = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {
        "window_ms_per_step": seconds / steps * 1000,
        "gpu_busy_share": busy_us / (seconds * 1e6) if busy_us else None,
        "host_operations": [
            {
                "name": e.key,
                "calls_per_step": e.count / steps,
                "host_ms_per_step": e.self_cpu_time_total / steps / 1000,
                "gpu_ms_per_step": device_us(e) / steps / 1000,
            }
            for e in busiest
        ],
    }


def bare_ms_per_step(
    model, rows: int, width: int, device: torch.device, precision: str, steps: tuple[int, int], mask: bool
) -> float:
    """Milliseconds per training step of a plain loop on one fixed batch of random word ids, after warm-up steps;
    with `mask`, the batch carries a 2-D attention mask of ones, as a plain loop over padded batches does."""
    generator = torch.Generator().manual_seed(0)
    vocabulary = model.config.vocab_size  # ordinary word ids: past the special tokens (the first thousand in BERT)
    ids = torch.randint(min(1000, vocabulary // 2), vocabulary, (rows, width), generator=generator).to(device)
    labels = torch.randint(0, 2, (rows,), generator=generator).to(device)
    inputs = {"input_ids": ids, **({"attention_mask": torch.ones_like(ids)} if mask else {})}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    warmup, timed = steps
    for index in range(warmup + timed):
        if index == warmup:
            sync(device)
            started = time.perf_counter()
        with modeling.autocast(device, precision):
            logits = model(**inputs).logits
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return (time.perf_counter() - started) / timed * 1000


def step_compiled(ctx: Context) -> dict:
    """The throughput step's run again under torch.compile: last, since compiling for the token batches' changing
    shapes can take minutes, and a time-boxed run should lose this figure before the others."""
    folder, meta = critic_train(ctx, "throughput-compiled", compile=True, **throughput_settings(ctx))
    eager = json.loads((ctx.folder("throughput-critic") / "critic.json").read_text())["train_samples_per_second"]
    # The same run on a "fresh machine" given critic's compile cache (modeling/compile_cache.py) that the run above
    # saved: a new process whose own torch cache is an empty folder.
    empty = ctx.folder("inductor-empty")
    empty.mkdir()
    fresh_machine = {"TORCHINDUCTOR_CACHE_DIR": str(empty)}
    settings = throughput_settings(ctx)
    _, warm = critic_train_in_a_new_process(ctx, "throughput-compiled-warm", fresh_machine, compile=True, **settings)
    return {
        "samples_per_s": meta["train_samples_per_second"],
        "steady_samples_per_s": steady_speed(folder),
        "eager_samples_per_s": eager,
        "ratio_vs_eager": meta["train_samples_per_second"] / eager,
        "from_compile_cache_samples_per_s": warm["train_samples_per_second"],
        "from_compile_cache_ratio_vs_eager": warm["train_samples_per_second"] / eager,
        "note": "samples/s include compilation; steady: the second half of the steps; from_compile_cache: a new "
        "process with an empty torch cache, given the file critic saved after the first compiled run",
    }


# The attention step's ways: (cuDNN's attention on, batch widths rounded up to this many tokens; None: critic's own)
ATTENTION_WAYS = {
    "as_is": (True, None),
    "no_cudnn": (False, None),
    "widths_of_64": (True, 64),
    "no_cudnn_widths_of_64": (False, 64),
}


def step_attention(ctx: Context) -> dict:
    """What cuDNN's attention plans cost a training run: the gpu preset on MiniLM (512 tokens head+tail, token
    batches) for one epoch, each way of ATTENTION_WAYS in a process of its own (benchlib/attention_run.py). cuDNN,
    SDPA's first choice on Hopper, builds a plan for each new (rows, width) shape, and critic's token batches change
    shape from step to step; on an H200 (2026-12-04) torch.profiler put 114 of a step's 164 ms of host time in
    cuDNN's attention calls, and the recipe's first 50 steps took 12.9 s against 1.1-2.0 s for each 50 after step
    200. Scoring meets the same shapes problem: each way's model then scores the validation reviews twice."""
    out = {}
    for way, (cudnn, multiple) in ATTENTION_WAYS.items():
        name = f"attention-{way}"
        settings = run_settings(ctx, name, dict(model=str(ctx.minilm), **ctx.sizes["attention"]))
        spec = ctx.folder(f"{name}.json")
        spec.write_text(json.dumps({"settings": settings, "cudnn": cudnn, "multiple": multiple}))
        started = time.perf_counter()
        subprocess.run([sys.executable, str(HERE / "benchlib" / "attention_run.py"), str(spec)], check=True)
        folder = ctx.folder(name)
        meta = json.loads((folder / "critic.json").read_text())
        shapes = json.loads((folder / "shapes.json").read_text())
        scoring = json.loads((folder / "scoring.json").read_text())
        clock = seconds_at_step(folder)
        figures = steady(folder)
        out[way] = {
            "cudnn_attention": cudnn,
            "width_multiple": multiple or modeling.pad_multiple(ctx.device),
            "train_seconds": meta["train_seconds"],
            "train_samples_per_s": meta["train_samples_per_second"],
            "steady_ms_per_step": figures[1] if figures else None,
            "steps": sum(shapes.values()),
            "shapes": len(shapes),
            "val_accuracy": meta["history"][-1]["val_accuracy"],
            "scoring": scoring,
            "seconds_at_step": clock,
            "process_seconds": time.perf_counter() - started,
        }
    base = out["as_is"]["train_seconds"]
    for figures in out.values():
        figures["train_seconds_vs_as_is"] = figures["train_seconds"] / base
    return {"ways": out}


def step_recipe(ctx: Context) -> dict:
    import critic

    folder, meta = critic_train(ctx, "recipe", model=str(ctx.minilm), **ctx.sizes["recipe"])
    started = time.perf_counter()
    # the TF-IDF baseline needs no GPU: measured on the CPU machine instead of spending the card's minutes on it
    summary = critic.evaluate_model(folder, ctx.data, split="test", baseline=False)
    ctx.results["recipe_model"] = folder
    return {
        "train_seconds": meta["train_seconds"],
        "validation_seconds": meta["validation_seconds"],
        "train_samples_per_s": meta["train_samples_per_second"],
        "seconds_at_step": seconds_at_step(folder),
        "train_rows": meta["train_rows"],
        "epochs": meta["config"]["epochs"],
        "max_length": meta["truncation"]["max_length"],
        "truncation": meta["truncation"]["strategy"],
        "precision": meta["precision"],
        "validation": [{k: h[k] for k in ("epoch", "val_accuracy", "val_loss")} for h in meta["history"]],
        "test_accuracy": summary["accuracy"],
        "test_accuracy_ci95": summary["accuracy_ci95"],
        "test_rows": summary["rows"],
        "roc_auc": summary["roc_auc"],
        "test_ece": summary["ece"],
        # "not sure" for the gpu preset's model: each standard target's threshold, chosen on validation by `critic
        # train`, with the share of test reviews it answers and their accuracy
        "unsure": summary.get("unsure", {}).get("targets"),
        "evaluate_seconds": time.perf_counter() - started,
    }


def step_scoring(ctx: Context) -> dict:
    from critic.inference.predict import Classifier

    sizes = ctx.sizes
    model_dir = ctx.results.get("recipe_model")
    if model_dir is None:
        raise RuntimeError("needs the recipe step's model")
    import pandas as pd

    dataset = data.load(ctx.data)
    frame = pd.concat([dataset.split("validation"), dataset.split("test")], ignore_index=True)  # unseen in training
    if sizes["scoring_reviews"]:
        frame = frame.iloc[: sizes["scoring_reviews"]]
    labels = frame["label"].to_numpy()
    clf = Classifier.load(
        model_dir,
        device=str(ctx.device),
        backend="torch",
        long_reviews="truncate",
        precision=sizes["scoring_precision"],
        encoder_workers="auto",
    )
    length = sizes["scoring_length"]
    clf.truncation = dataclasses.replace(clf.truncation, max_length=length, strategy="head")
    texts = [data.cleaner(clf.cleaning)(t) for t in frame["text"]]  # both read the same cleaned text
    clf.cleaning = "none"

    clf.predict_proba(texts[:512])  # warm-up
    sync(ctx.device)
    started = time.perf_counter()
    ours = clf.predict_proba(texts)
    sync(ctx.device)
    critic_speed = len(texts) / (time.perf_counter() - started)
    started = time.perf_counter()  # where that time goes: the same work again in its two halves
    tokens = clf.encode(texts)
    encode_seconds = time.perf_counter() - started
    clf.proba_from_tokens(tokens)
    sync(ctx.device)
    forward_seconds = time.perf_counter() - started - encode_seconds

    workers = clf.encoder_pool.workers if clf.encoder_pool else 0
    clf.close()
    where = stages.measure(clf, texts[: sizes["stage_reviews"]], workers)
    print("\n".join(stages.lines(where)), flush=True)

    pipeline_speed, best, probes, theirs = pipeline_at_its_best(ctx, model_dir, texts, clf.labels, length)
    return {
        "reviews": len(texts),
        "max_length": length,
        "critic": {
            "reviews_per_s": critic_speed,
            "precision": clf.precision,
            "encoder_workers": workers,
            "encode_seconds": encode_seconds,
            "truncate_and_forward_seconds": forward_seconds,
            "accuracy": float((ours.argmax(1) == labels).mean()),
        },
        "pipeline": {
            "reviews_per_s": pipeline_speed,
            **{k: best[k] for k in ("dtype", "batch")},
            "accuracy": float((theirs.argmax(1) == labels).mean()),
            "probes": probes,
        },
        "ratio_vs_pipeline": critic_speed / pipeline_speed,
        "stages": where,
        "max_abs_probability_difference": float(np.abs(ours - theirs).max()),
    }


def pipeline_at_its_best(ctx: Context, model_dir: Path, texts: list[str], labels: list[str], length: int):
    """transformers.pipeline on `texts` at the best of its dtypes and batch sizes, chosen on a probe of the first
    reviews: (reviews/s, the best setting, every probe, probabilities in the order of `labels`)."""
    from transformers import pipeline

    sizes = ctx.sizes
    device = 0 if ctx.device.type == "cuda" else -1
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    probes = []
    probe = texts[: sizes["scoring_probe"]]
    for dtype in sizes["pipeline_dtypes"]:
        classify = pipeline("text-classification", model=str(model_dir), device=device, dtype=dtypes[dtype], top_k=None)
        for batch in sizes["pipeline_batches"]:
            classify(probe[:64], batch_size=batch, truncation=True, max_length=length)  # warm-up
            sync(ctx.device)
            started = time.perf_counter()
            classify(probe, batch_size=batch, truncation=True, max_length=length)
            sync(ctx.device)
            speed = len(probe) / (time.perf_counter() - started)
            probes.append({"dtype": dtype, "batch": batch, "reviews_per_s": speed})
    best = max(probes, key=lambda p: p["reviews_per_s"])
    classify = pipeline(
        "text-classification", model=str(model_dir), device=device, dtype=dtypes[best["dtype"]], top_k=None
    )
    started = time.perf_counter()
    scored = classify(texts, batch_size=best["batch"], truncation=True, max_length=length)
    sync(ctx.device)
    speed = len(texts) / (time.perf_counter() - started)
    probabilities = np.array(
        [[next(s["score"] for s in row if s["label"] == name) for name in labels] for row in scored]
    )
    return speed, best, probes, probabilities


def step_fp16(ctx: Context) -> dict:
    sizes = ctx.sizes
    folder, meta = critic_train(
        ctx,
        "fp16",
        model=str(distilbert(ctx, "distilbert")),
        train_size=sizes["fp16_reviews"],
        eval_size=sizes["fp16_eval"],
        max_length=sizes["throughput_length"],
        truncation="head",
        epochs=2,
        batch_size=32,
        lr=1e-4,
        precision="fp16",
        log_every=20 if not sizes["tiny"] else 2,
    )
    from safetensors.torch import load_file

    finite = all(bool(torch.isfinite(w).all()) for w in load_file(folder / "model.safetensors").values())
    steps = meta["history"][-1]["step"]
    return {
        "precision": meta["precision"],
        "steps": steps,
        "skipped_steps": meta.get("fp16_skipped_steps"),
        "finite_weights": finite,
        "samples_per_s": meta["train_samples_per_second"],
        "validation": [{k: h[k] for k in ("epoch", "val_accuracy", "val_loss")} for h in meta["history"]],
    }


STEPS = {
    "train_throughput": step_train_throughput,
    "recipe": step_recipe,
    "scoring": step_scoring,
    "fp16": step_fp16,
    "bare_loop": step_bare_loop,
    "profile": step_profile,
    "attention": step_attention,
    "compiled": step_compiled,
}


def targets(steps: dict) -> dict:
    found = {
        "train_samples_per_s": steps.get("train_throughput", {}).get("critic", {}).get("samples_per_s"),
        "train_ratio_vs_trainer": steps.get("train_throughput", {}).get("ratio_vs_trainer"),
        "recipe_train_seconds": steps.get("recipe", {}).get("train_seconds"),
        "scoring_reviews_per_s": steps.get("scoring", {}).get("critic", {}).get("reviews_per_s"),
        "scoring_ratio_vs_pipeline": steps.get("scoring", {}).get("ratio_vs_pipeline"),
    }
    return {name: target(found[name], goal, at_most=name.endswith("seconds")) for name, goal in TARGETS.items()}


# ------------------------------------------------------------------------------------------ run


def run(
    artifacts: Path,
    out: Path | None,
    smoke: bool,
    only: list[str] | None = None,
    device: str = "auto",
    keep: Path | None = None,
) -> dict:
    ctx = open_context(artifacts, smoke, device, SMOKE if smoke else FULL, "critic-gpu-suite-")
    report = {
        "suite": "critic GPU suite (bench/gpu_suite.py)",
        "smoke": smoke,
        "machine": machine(ctx.device),
        "steps": {},
    }
    started = time.perf_counter()
    for name in only or list(STEPS):
        run_step(report, "steps", name, lambda name=name: STEPS[name](ctx))
        if name == "recipe" and keep and "recipe_model" in ctx.results:  # gpu_recipe.py --trained takes it
            shutil.copytree(
                ctx.results["recipe_model"], keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint*")
            )
        report["targets"] = targets(report["steps"])
        report["seconds"] = round(time.perf_counter() - started, 1)
        write_report(report, out)
    return finish_run(report, ctx)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    b = verbs.add_parser("build", help="write the folder the GPU machine needs (fp16 MiniLM + IMDB in xz)")
    b.add_argument("--out", default=".gpu")
    b.add_argument("--model", default="minilm", help="an encoder: minilm or a folder")
    b.add_argument("--data", default="imdb", help="imdb or a CSV file")
    p = verbs.add_parser("pack", help="an encoder too large for one run (MPNet) in parts, one per run")
    p.add_argument("--model", default="mpnet", help="mpnet, or any encoder folder")
    p.add_argument("--out", default=".gpu-mpnet")
    p.add_argument("--part-mib", type=float, default=PART_MIB)
    j = verbs.add_parser("join", help="on the GPU machine: check the parts and rebuild the encoder folder")
    j.add_argument("folder", nargs="?", default=".gpu-mpnet")
    r = verbs.add_parser("run", help="run the suite on this machine's GPU")
    r.add_argument("--artifacts", default=".gpu", help="the folder `build` wrote")
    r.add_argument("--out", help="also write the JSON here (after every step)")
    r.add_argument("--steps", nargs="*", choices=list(STEPS), help="only these steps (default: all)")
    r.add_argument("--device", default="auto")
    r.add_argument(
        "--keep",
        help="copy the recipe step's model here (the gpu preset's, the settings of "
        "gpu_recipe.py's batch-64 row: its --trained batch-64=FOLDER then scores it "
        "instead of training it again)",
    )
    r.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (checks a built folder here)")
    s = verbs.add_parser("smoke", help="every step, tiny, on the CPU")
    s.add_argument("--model", default="minilm", help="an encoder for the recipe (its tokenizer serves all)")
    s.add_argument("--data", default="imdb", help="imdb or a CSV of reviews")
    s.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.verb == "build":
        build(Path(args.out), args.model, args.data)
        return 0
    if args.verb == "pack":
        pack(args.model, Path(args.out), args.part_mib)
        return 0
    if args.verb == "join":
        print(join(Path(args.folder), log=lambda line: print(line, file=sys.stderr)))
        return 0
    if args.verb == "run":
        report = run(
            Path(args.artifacts),
            Path(args.out) if args.out else None,
            smoke=args.smoke,
            only=args.steps,
            device=args.device,
            keep=Path(args.keep) if args.keep else None,
        )
    else:
        with tempfile.TemporaryDirectory(prefix="critic-gpu-smoke-") as folder:
            build(Path(folder), args.model, args.data, log=lambda m: print(m, file=sys.stderr))
            report = run(Path(folder), Path(args.out) if args.out else None, smoke=True)
    failed = [name for name, step in report["steps"].items() if "error" in step]
    if failed:
        print(f"gpu_suite: failed steps: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
