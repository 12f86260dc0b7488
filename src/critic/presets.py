"""The presets of `critic train`: named sets of defaults for a machine or a goal (a TOML file and the command line
still override them), which one `auto` resolves to, and what the cpu preset gives up."""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # The starting notebook, as it was: 256 tokens from the start, batch 16, AdamW 3e-5 eps 1e-8 without decay,
    # linear decay without warmup, 3 epochs, the last epoch's model kept.
    "notebook": dict(
        max_length=256,
        truncation="head",
        batch_size=16,
        lr=3e-5,
        weight_decay=0.0,
        warmup_ratio=0.0,
        epochs=3,
        cleaning="notebook",
        select="last",
        precision="fp32",
    ),
    # A GPU: the full training split, the default recipe.
    "gpu": dict(),
    # The most accurate recipe the GPU ablation has measured (docs/benchmarks.md; one H200): MPNet (110M) at a
    # base-size encoder's rate, 512 tokens head+tail, 3 epochs: 95.85% (95.29-96.37) on the whole test split
    # in 163 s of training (2026-11-27), 96.33% (95.79-96.85) in 174 s again (2026-12-04); MiniLM 93.78% in 35 s.
    "best": dict(model="mpnet", batch_size=32, lr=2e-5),
    # Two CPU cores: minutes, not hours. What it gives up is printed and saved with the model. It also keeps the
    # lowest third of the encoder's layers as pretrained, a rule on the model's depth (TrainConfig.kept_layers).
    "cpu": dict(
        train_size=2000,
        eval_size=500,
        test_size=1000,
        max_length=256,
        epochs=1,
        batch_size=16,
        small_split_batch=8,  # under 1,000 training reviews (training.fine_tuning.for_small_split says why)
        lr=1e-4,
        warmup_ratio=0.1,
    ),
}


def lowest_third(layers: int) -> int:
    """How many of an encoder's `layers` the cpu preset and the labelling loop's retrains keep as pretrained: the
    lowest third (2 of MiniLM's 6; none of a model under 3 layers)."""
    return layers // 3


def cpu_preset_note(job) -> str:
    """What a run of the cpu preset gives up against the full recipe, as it is configured (options override the
    preset's sizes); printed and saved with the model."""
    full = type(job)()  # the TrainConfig of every default
    given_up = [
        f"{job.train_size:,} training reviews instead of the whole split" if job.train_size else None,
        f"{job.max_length} tokens instead of {full.max_length}" if job.max_length < full.max_length else None,
        f"{job.epochs} epoch{'s' if job.epochs > 1 else ''} instead of {full.epochs}"
        if job.epochs < full.epochs
        else None,
        f"validation on {job.eval_size:,} reviews" if job.eval_size else None,
        f"test on {job.test_size:,} reviews" if job.test_size else None,
    ]
    return (
        "cpu preset: " + ", ".join(g for g in given_up if g) + "; on IMDB its defaults reach about 87% "
        "against the full recipe's 93.8% (run with --preset gpu on a GPU)"
    )


def resolve_preset(name: str) -> str:
    if name != "auto":
        if name not in PRESETS:
            raise ValueError(f"preset '{name}': choose one of auto, {', '.join(PRESETS)}")
        return name
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"
