"""The dataclass a training job is described by: defaults, presets, a TOML file, then command-line overrides.
The resolved config is saved with every run (train_config.json) and with every model."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from critic.text import LONG_REVIEW_MODES, POOLS, STRATEGIES


@dataclass
class TrainConfig:
    # what
    model: str = "minilm"  # short name (minilm, mpnet), hub id, or local folder
    data: str = "imdb"  # named dataset or a file/folder
    text_column: str | None = None
    label_column: str | None = None
    label_map: str | None = None  # "good=positive,bad=negative"
    drop_invalid: bool = False
    train_size: int | None = None  # seeded subset of the training split
    eval_size: int | None = None  # seeded subset of the validation split
    test_size: int | None = None  # seeded subset of the test split for the final evaluation
    # text
    cleaning: str = "default"
    max_length: int = 512
    truncation: str = "head+tail"
    head_tokens: int | None = None  # with head+tail; default a quarter of max_length
    long_reviews: str = "truncate"  # at prediction: truncate, or windows (scored and pooled); saved with the model
    window_stride: int | None = None  # with windows; default half a window
    window_pool: str = "max-confidence"  # with windows: mean-prob, mean-logit or max-confidence
    # optimisation
    epochs: int = 3
    batch_size: int = 32  # reviews per batch and process; with token batches, a full batch of the longest ones
    batching: str = "auto"  # tokens (batches filled to a token budget), reviews (a fixed count); auto: tokens on GPUs
    batch_tokens: int | None = None  # with token batches: padded tokens per batch and process (batch_size x max_length)
    lr: float = 5e-5
    weight_decay: float = 0.01
    adam_eps: float = 1e-8
    warmup_ratio: float = 0.06
    grad_clip: float = 1.0
    seed: int = 42
    # validation and selection
    eval_every: int = 0  # steps; 0 = once per epoch
    log_every: int = 50  # steps between reading the loss (a host-GPU sync), log lines and interrupt checks
    patience: int = 0  # evaluations without improvement before stopping; 0 = never stop early
    select: str = "best"  # best (by `metric`) or last
    metric: str = "accuracy"  # accuracy, auc or loss
    # machine
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 where the GPU or CPU has it), bf16, fp16, fp32
    compile: bool = False
    # where
    output: str = "runs/minilm-imdb"
    preset: str = "auto"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.truncation not in STRATEGIES:
            raise ValueError(f"truncation '{self.truncation}': choose one of {', '.join(STRATEGIES)}")
        if self.long_reviews not in LONG_REVIEW_MODES:
            raise ValueError(f"long_reviews '{self.long_reviews}': choose one of {', '.join(LONG_REVIEW_MODES)}")
        if self.window_pool not in POOLS:
            raise ValueError(f"window_pool '{self.window_pool}': choose one of {', '.join(POOLS)}")
        if self.select not in ("best", "last"):
            raise ValueError(f"select '{self.select}': choose best or last")
        if self.metric not in ("accuracy", "auc", "loss"):
            raise ValueError(f"metric '{self.metric}': choose accuracy, auc or loss")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"precision '{self.precision}': choose auto, bf16, fp16 or fp32")
        if self.batching not in ("auto", "tokens", "reviews"):
            raise ValueError(f"batching '{self.batching}': choose auto, tokens or reviews")
        if self.batch_tokens is not None and self.batch_tokens < self.max_length:
            raise ValueError(f"batch_tokens {self.batch_tokens} must hold at least one review of max_length "
                             f"{self.max_length}")
        for name in ("epochs", "batch_size", "max_length", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr {self.lr} is outside (0, 1)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))


# Presets change defaults; a TOML file and the command line still override them.
PRESETS: dict[str, dict] = {
    # The starting notebook, as it was: 256 tokens from the start, batch 16, AdamW 3e-5 eps 1e-8 without decay,
    # linear decay without warmup, 3 epochs, the last epoch's model kept.
    "notebook": dict(max_length=256, truncation="head", batch_size=16, lr=3e-5, weight_decay=0.0, warmup_ratio=0.0,
                     epochs=3, cleaning="notebook", select="last", precision="fp32"),
    # A GPU: the full training split, the default recipe.
    "gpu": dict(),
    # Two CPU cores: minutes, not hours. What it gives up is printed and saved with the model.
    "cpu": dict(train_size=2000, eval_size=500, test_size=1000, max_length=256, epochs=1, batch_size=16,
                lr=1e-4, warmup_ratio=0.1, notes=[
                    "cpu preset: 2,000 training reviews instead of 39,717, 256 tokens instead of 512, 1 epoch "
                    "instead of 3, validation on 500 and test on 1,000 reviews; expect about 87% accuracy "
                    "instead of about 93% (run with --preset gpu on a GPU for the full recipe)"]),
}


def resolve_preset(name: str) -> str:
    if name != "auto":
        if name not in PRESETS:
            raise ValueError(f"preset '{name}': choose one of auto, {', '.join(PRESETS)}")
        return name
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def parse_value(field_type: str, raw: str):
    raw = raw.strip()
    if raw.lower() in ("none", "null"):
        return None
    if "bool" in field_type:
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected true or false, got {raw!r}")
        return raw.lower() in ("true", "1", "yes")
    if "int" in field_type and "." not in raw and "e" not in raw.lower():
        return int(raw)
    if "float" in field_type or "int" in field_type:
        value = float(raw)
        return int(value) if "int" in field_type and "float" not in field_type else value
    if "list" in field_type:
        return [raw]
    return raw


def build(overrides: dict | None = None, toml_path: str | Path | None = None) -> TrainConfig:
    """Defaults, then the preset, then the TOML file, then `overrides` (already typed, or strings)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    from_file: dict = {}
    if toml_path:
        with open(toml_path, "rb") as f:
            from_file = tomllib.load(f)
        from_file = from_file.get("train", from_file)
    preset = resolve_preset(overrides.get("preset", from_file.get("preset", "auto")))
    values = {**PRESETS[preset], **from_file, **overrides, "preset": preset}
    fields = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(fields)}")
    typed = {k: parse_value(fields[k], v) if isinstance(v, str) and "str" not in fields[k] else v
             for k, v in values.items()}
    return TrainConfig(**typed)
