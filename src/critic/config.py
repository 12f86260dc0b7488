"""The config family a training job is described by: the loop's settings in LoopConfig, fine-tuning's (TrainConfig)
and pre-training's (PretrainConfig) on top; each setting carries its help and whether it must match to resume.
Defaults, presets, a TOML file, then command-line overrides; the resolved config is saved with every run
(train_config.json) and with every model."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from critic.presets import PRESETS, cpu_preset_note, lowest_third, resolve_preset
from critic.text import LONG_REVIEW_MODES, POOLS, STRATEGIES


def parse_fold(spec: str) -> tuple[int, int]:
    """'2/5' -> (2, 5): the second of five folds."""
    try:
        k, n = (int(part) for part in spec.split("/"))
    except ValueError:
        raise ValueError(f"fold {spec!r}: write K/N, e.g. 1/5") from None
    if not (n >= 2 and 1 <= k <= n):
        raise ValueError(f"fold {spec!r}: need N >= 2 and 1 <= K <= N")
    return k, n


def setting(default, help: str, *, resume: bool):
    """A config field with its help text beside it (`critic train --help` prints it) and whether a checkpoint must
    have been written with the same value to be resumed: every setting that changes the weights must say so."""
    metadata = {"help": help, "resume": resume}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class LoopConfig:
    """The training loop's settings, shared by every kind of training: what it reads, how it steps, where it runs
    and writes. Fine-tuning (TrainConfig) and pre-training (PretrainConfig) add their own on top."""

    # its settings' heading in --help
    TITLE: typing.ClassVar[str] = "the loop: what it reads, how it steps, where it runs and writes"

    TOML_TABLE: typing.ClassVar[str] = "train"  # the table of a TOML file the settings are read from

    # what
    model: str = setting(
        "minilm",
        "encoder to start from: minilm, mpnet, a hub id (distilbert-base-uncased, roberta-base) or a folder",
        resume=True,
    )
    data: str = setting("imdb", "imdb or a CSV/TSV/JSONL/Parquet file or aclImdb folder", resume=True)
    text_column: str | None = setting(None, "column holding the text", resume=True)
    label_column: str | None = setting(None, "column holding the label", resume=True)
    train_size: int | None = setting(
        None, "train on a seeded random subset of N reviews of the training split", resume=True
    )
    cleaning: str = setting("default", "cleaning recipe: default, notebook or none (saved with the model)", resume=True)
    max_length: int = setting(
        512, "window in tokens, special tokens included (the model's limit is usually 512)", resume=True
    )
    # optimisation
    epochs: int = setting(3, "passes over the training data", resume=True)
    # Batch 64 at lr 1e-4 rather than 32 at 5e-5: on one H200 (2026-11-27) MiniLM's step is host-bound, 21.7 ms for
    # 64 x 512 tokens against 26.4 ms for 32 x 512, so half the steps trained the recipe in 35.0 s where batches of
    # 32 took 68-72 s, at 93.78% (93.14-94.42) on the test split against 93.64% (docs/benchmarks.md, batch-64 row).
    batch_size: int = setting(
        64,
        "sequences per step and process (torchrun: the global batch is this x processes); with token batching, the "
        "size of a batch of the longest ones (shorter ones come up to 4x as many)",
        resume=True,
    )
    batching: str = setting(
        "auto",
        "tokens: fill each batch to a token budget (short reviews in larger batches; the GPU default), reviews: a "
        "fixed --batch-size, auto: tokens on GPUs, reviews on CPUs",
        resume=True,
    )
    batch_tokens: int | None = setting(
        None, "with token batching: padded tokens per batch and process (default batch-size x max-length)", resume=True
    )
    lr: float = setting(
        1e-4,
        "peak learning rate of AdamW (for MiniLM-size encoders; base-size ones such as MPNet want about 2e-5)",
        resume=True,
    )
    weight_decay: float = setting(0.01, "AdamW weight decay (not applied to biases and LayerNorm)", resume=True)
    adam_eps: float = setting(1e-8, "AdamW epsilon", resume=True)
    warmup_ratio: float = setting(
        0.06, "share of steps spent warming the learning rate up, before linear decay to 0", resume=True
    )
    grad_clip: float = setting(1.0, "clip the gradient norm at this value (0: off)", resume=True)
    seed: int = setting(42, "random seed: same seed, same data, same machine -> same weights", resume=True)
    log_every: int = setting(
        50, "read the loss, log it and check for Ctrl-C every N steps (each read waits for the GPU)", resume=False
    )
    # machine
    device: str = setting("auto", "auto, cpu, cuda, cuda:1 …", resume=False)
    # (the precision a run resolves to, bf16 for auto on most machines, must match: the loop adds it)
    precision: str = setting(
        "auto", "auto (bf16 on GPUs and CPUs that have it, else fp32), bf16, fp16 or fp32", resume=False
    )
    compile: bool = setting(False, "torch.compile the model (pays off on long GPU runs)", resume=False)
    # where
    output: str = setting(
        "runs/minilm-imdb", "folder for the model, logs, plots and checkpoints (a run there resumes)", resume=False
    )

    def __post_init__(self):
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"precision '{self.precision}': choose auto, bf16, fp16 or fp32")
        if self.batching not in ("auto", "tokens", "reviews"):
            raise ValueError(f"batching '{self.batching}': choose auto, tokens or reviews")
        if self.batch_tokens is not None and self.batch_tokens < self.max_length:
            raise ValueError(
                f"batch_tokens {self.batch_tokens} must hold at least one review of max_length {self.max_length}"
            )
        for name in ("epochs", "batch_size", "max_length", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr {self.lr} is outside (0, 1)")

    def resume_settings(self) -> dict:
        """The settings a checkpoint must have been written with to be resumed (all that change the weights)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["resume"]}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_values(cls, values: dict):
        """The config from settings by name (typed, or strings from the command line), checked."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**{name: parse_value(name, value, cls) for name, value in values.items()})


@dataclass
class DataSettings:
    """The data: how a file's labels become classes, the classes' weights in the loss, and the splits."""

    TITLE: typing.ClassVar[str] = "data: labels, classes and splits"  # its settings' heading in --help

    label_map: str | None = setting(
        None,
        "raw label values to classes: 'good=positive,bad=negative', or "
        "'1=negative,2=negative,3=neutral,4=positive,5=positive' for 3 classes from stars",
        resume=True,
    )
    labels: str | None = setting(
        None,
        "the classes in order, comma-separated (default: from the data; binary "
        "sentiment as negative,positive, stars in numeric order)",
        resume=True,
    )
    class_weights: str = setting(
        "none",
        "weights of the classes in the loss and the few-label regression: none, balanced (inverse frequency), a=1,b=3",
        resume=True,
    )
    drop_invalid: bool = setting(False, "skip invalid rows instead of stopping (counted and recorded)", resume=True)
    eval_size: int | None = setting(None, "validate on a seeded subset of N validation reviews", resume=True)
    fold: str | None = setting(
        None,
        "cross-validation: 'K/N' trains on the training split without its K-th of N "
        "folds (by text hash) and validates on that fold, not on the validation split",
        resume=True,
    )
    test_size: int | None = setting(
        None, "evaluate at the end on a seeded subset of N test reviews (quickstart)", resume=False
    )

    def check(self) -> None:
        if self.class_weights not in ("none", "balanced") and "=" not in self.class_weights:
            raise ValueError(f"class_weights '{self.class_weights}': choose none, balanced or 'CLASS=NUMBER,…'")
        if self.fold is not None:
            parse_fold(self.fold)


@dataclass
class FewLabelSettings:
    """Few labels: the pair-tuned encoder and a regression instead of fine-tuning."""

    TITLE: typing.ClassVar[str] = "few labels"  # its settings' heading in --help

    few_labels: str = setting(
        "auto",
        "auto: with fewer than 200 labelled training reviews in a class, tune the sentence encoder on pairs of them "
        "and fit a logistic regression on its mean embedding instead of fine-tuning (SetFit's recipe, in a "
        "fraction of its time); on, off",
        resume=True,
    )
    pair_epochs: int = setting(
        10,
        "few labels: passes of tuning the encoder on pairs of labelled reviews (SetFit's contrastive stage) before "
        "the regression; minutes on a CPU (0: the encoder as it is, seconds)",
        resume=True,
    )
    small_split_batch: int = setting(
        0, "with fewer than 1,000 training reviews and no --batch-size: batches of this many (0: off)", resume=False
    )

    def check(self) -> None:
        if self.few_labels not in ("auto", "on", "off"):
            raise ValueError(f"few_labels '{self.few_labels}': choose auto, on or off")
        if self.pair_epochs < 0:
            raise ValueError(f"pair_epochs must be 0 or more, got {self.pair_epochs}")


@dataclass
class TextSettings:
    """How reviews are cut to the window, and how `critic predict` reads longer ones (saved with the model)."""

    TITLE: typing.ClassVar[str] = "text: the window and long reviews"  # its settings' heading in --help

    truncation: str = setting("head+tail", "how longer reviews are cut: head, tail or head+tail", resume=True)
    head_tokens: int | None = setting(
        None,
        "with head+tail: tokens kept from the start, the rest of the window "
        "from the end (default: a quarter of the window, 128 of 512)",
        resume=True,
    )
    long_reviews: str | None = setting(
        None,
        "how `critic predict` treats reviews longer than the window by default: truncate, or windows (overlapping "
        "windows scored and pooled: +1.2 points on IMDB, 2.2x the compute); default: windows for a few-label model "
        "(+0.6 points at 64 labels per class on IMDB), else truncate",
        resume=False,
    )
    window_stride: int | None = setting(
        None, "with windows: tokens between window starts (default: half a window)", resume=False
    )
    window_pool: str | None = setting(
        None,
        "with windows: mean-prob, mean-logit or max-confidence (default: max-confidence, the best measured on "
        "IMDB; mean-prob for a few-label model, whose confidence it ranks better)",
        resume=False,
    )

    def check(self) -> None:
        if self.truncation not in STRATEGIES:
            raise ValueError(f"truncation '{self.truncation}': choose one of {', '.join(STRATEGIES)}")
        if self.long_reviews is not None and self.long_reviews not in LONG_REVIEW_MODES:
            raise ValueError(f"long_reviews '{self.long_reviews}': choose one of {', '.join(LONG_REVIEW_MODES)}")
        if self.window_pool is not None and self.window_pool not in POOLS:
            raise ValueError(f"window_pool '{self.window_pool}': choose one of {', '.join(POOLS)}")


@dataclass
class RegularisationSettings:
    """Fine-tuning's own optimisation, beside the loop's."""

    TITLE: typing.ClassVar[str] = "regularisation"  # its settings' heading in --help

    layer_decay: float = setting(
        1.0,
        "layer-wise learning-rate decay: each layer below the head learns this times "
        "as fast as the one above it (1: one rate for all; 0.8-0.95 is common)",
        resume=True,
    )
    dropout: float | None = setting(
        None, "dropout of the encoder's hidden states and attention (default: the model's, 0.1 for most)", resume=True
    )
    frozen_layers: int | None = setting(
        None,
        "keep the embeddings and the lowest N layers as pretrained, their dropout off: less work a step (default: "
        "a third of the layers with the cpu preset, none with the others; 0: all learn)",
        resume=True,
    )

    def check(self) -> None:
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay {self.layer_decay} is outside (0, 1]")
        if self.frozen_layers is not None and self.frozen_layers < 0:
            raise ValueError(f"frozen_layers must be 0 or more, got {self.frozen_layers}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout {self.dropout} is outside [0, 1)")


@dataclass
class DistillationSettings:
    """Distillation: a teacher's probabilities mixed into the loss."""

    TITLE: typing.ClassVar[str] = "distillation"  # its settings' heading in --help

    teacher: str | None = setting(
        None,
        "a fine-tuned critic model folder whose probabilities the model learns from, besides the labels (`critic "
        "distill TEACHER` sets it); several, comma-separated, trained with --fold 1/N … N/N: out of fold",
        resume=True,
    )
    teacher_share: float = setting(
        0.5, "with a teacher: weight of the teacher's term in the loss (the labels' term weighs the rest)", resume=True
    )
    teacher_temperature: float = setting(2.0, "with a teacher: temperature that softens its probabilities", resume=True)
    teacher_windows: bool = setting(
        True,
        "with a teacher: it reads each review whole through overlapping windows, while the student reads its window",
        resume=True,
    )

    def check(self) -> None:
        if not 0 <= self.teacher_share <= 1:
            raise ValueError(f"teacher_share {self.teacher_share} is outside [0, 1]")
        if self.teacher_temperature <= 0:
            raise ValueError(f"teacher_temperature must be positive, got {self.teacher_temperature}")


@dataclass
class SelectionSettings:
    """Validation, the weights kept, and early stopping."""

    TITLE: typing.ClassVar[str] = "validation and selection"  # its settings' heading in --help

    eval_every: int = setting(0, "also validate every N steps (0: once per epoch)", resume=False)
    patience: int = setting(0, "stop after N validations without improvement (0: never stop early)", resume=False)
    select: str = setting("best", "which weights to keep: best (by --metric on validation) or last", resume=True)
    metric: str = setting(
        "accuracy", "validation metric for selection and early stopping: accuracy, auc or loss", resume=True
    )

    def check(self) -> None:
        if self.select not in ("best", "last"):
            raise ValueError(f"select '{self.select}': choose best or last")
        if self.metric not in ("accuracy", "auc", "loss"):
            raise ValueError(f"metric '{self.metric}': choose accuracy, auc or loss")


@dataclass
class FinishSettings:
    """What the end of a run adds to the model."""

    TITLE: typing.ClassVar[str] = "what the end of a run adds"  # its settings' heading in --help

    calibrate: bool = setting(
        True,
        "fit a temperature (with a class bias, or for two classes an increasing map of the margin, where that measures "
        "better) on the validation split after training and fold it into the classification head, so every consumer "
        "reads calibrated probabilities",
        resume=False,
    )
    cascade: bool = setting(
        True,
        "after training, fit a cheap stage (TF-IDF + logistic regression on the training split) that answers the "
        "reviews it is sure of, where it keeps within 0.1 points of the model's validation accuracy with 95% "
        "confidence; predict and serve use it unless --cascade off",
        resume=False,
    )


def setting_groups(kind: type) -> list[tuple[str, list[dataclasses.Field]]]:
    """A config's settings by concern, each under its heading, in the order `--help` shows them: the loop's, each
    concern the config has, then its own."""
    owners = [LoopConfig, *(concern for concern in CONCERNS if issubclass(kind, concern)), kind]
    fields = {f.name: f for f in dataclasses.fields(kind)}
    groups = []
    for owner in dict.fromkeys(owners):  # a setting a config declares again (another default) stays where it was
        own = [fields.pop(name) for name in inspect.get_annotations(owner) if name in fields]
        if own:
            groups.append((owner.TITLE, own))
    return groups


# What fine-tuning adds to the loop's settings, by concern, in the order `critic train --help` shows them.
CONCERNS = (
    DataSettings,
    FewLabelSettings,
    TextSettings,
    RegularisationSettings,
    DistillationSettings,
    SelectionSettings,
    FinishSettings,
)


# The bases last to first: a dataclass takes its bases' fields in reverse order, so the loop's come first.
@dataclass
class TrainConfig(
    FinishSettings,
    SelectionSettings,
    DistillationSettings,
    RegularisationSettings,
    TextSettings,
    FewLabelSettings,
    DataSettings,
    LoopConfig,
):
    """Fine-tuning an encoder into a classifier (`critic train`, `critic distill`, `critic tune`): the loop's settings
    and those of each concern above, read as one flat set (the flags and TOML keys name them alone)."""

    TITLE: typing.ClassVar[str] = "presets"  # its settings' heading in --help

    preset: str = setting(
        "auto",
        "auto (gpu with a GPU, else cpu), gpu, best (the most accurate measured: "
        "MPNet), cpu or notebook (the starting notebook's settings)",
        resume=False,
    )
    notes: list[str] = setting([], "what a preset gave up, printed and saved with the model", resume=False)

    def __post_init__(self):
        super().__post_init__()  # the loop's
        for concern in CONCERNS:
            if hasattr(concern, "check"):
                concern.check(self)

    @classmethod
    def from_values(cls, values: dict):
        """The preset's settings under `values` (a cpu preset's run notes what it gave up)."""
        preset = resolve_preset(values.get("preset", "auto"))
        job = super().from_values({**PRESETS[preset], **values, "preset": preset})
        if job.preset == "cpu" and "notes" not in values:
            job.notes = [cpu_preset_note(job)]
        if "batch_size" in values and "small_split_batch" not in values:
            job.small_split_batch = 0  # the batch size asked for stands
        return job

    def kept_layers(self, layers: int) -> int:
        """How many of a model's `layers` (from the bottom, with the embeddings) stay as pretrained: --frozen-layers,
        or the preset's choice. The cpu preset keeps the lowest third (presets.lowest_third): on 2 AMD EPYC Zen 3
        cores in fp32 its recipe trained in 279 s against 398 with every layer learning, at the same accuracy within
        a seed's spread (87.2 / 88.8 / 87.5% on 1,000 IMDB test reviews against 86.6 / 87.5 / 88.4%, three seeds;
        2026-12-07, docs/benchmarks.md)."""
        if self.frozen_layers is not None:
            return self.frozen_layers
        return lowest_third(layers) if self.preset == "cpu" else 0


@dataclass
class PretrainConfig(LoopConfig):
    """In-domain masked-language-model training of an encoder (`critic pretrain`): only the training split's text
    is read, never validation or test text; the label column is read only to split the file as `critic train`
    does."""

    TITLE: typing.ClassVar[str] = "pre-training"  # its settings' heading in --help
    TOML_TABLE: typing.ClassVar[str] = "pretrain"

    max_length: int = setting(
        256,
        "sequence length in tokens; longer reviews are cut into several sequences, so every token is read",
        resume=True,
    )
    epochs: int = setting(1, "passes over the training text", resume=True)
    adam_eps: float = setting(1e-6, "AdamW epsilon", resume=True)
    output: str = setting(
        "runs/minilm-imdb-mlm",
        "folder for the encoder, its log and checkpoint (a run there resumes); `critic train --model FOLDER` takes it",
        resume=False,
    )
    mask_probability: float = setting(
        0.15, "share of tokens masked (BERT: 15%; of those 80% [MASK], 10% a random token, 10% unchanged)", resume=True
    )
    whole_word: bool = setting(False, "mask whole words: all pieces of a word or none", resume=True)
    head_warmup: float = setting(
        0.0,
        "share of the steps that train only what the checkpoint lacks (a new masked-LM head: all-MiniLM-L6-v2 has "
        "none), the encoder held still, before everything trains with the learning-rate warm-up started again: a "
        "random head's first gradients would reshape the encoder",
        resume=True,
    )
    holdout: float = setting(
        0.02, "share of sequences held out to measure the masked-token loss after each epoch", resume=True
    )

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.mask_probability < 1:
            raise ValueError(f"mask_probability {self.mask_probability} is outside (0, 1)")
        if not 0 <= self.holdout < 0.5:
            raise ValueError(f"holdout {self.holdout} is outside [0, 0.5)")
        if not 0 <= self.head_warmup <= 1:
            raise ValueError(f"head_warmup {self.head_warmup} is outside [0, 1]")


@functools.cache
def field_types(kind: type = TrainConfig) -> dict[str, tuple[type, bool]]:
    """Each setting's type, None-able or not: `int | None` -> (int, True)."""
    hints = typing.get_type_hints(kind)
    types = {}
    for name, hint in hints.items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = type(None) in typing.get_args(hint)
        base = typing.get_origin(hint) or hint
        types[name] = (args[0] if optional else base, optional)
    return types


def parse_value(name: str, raw, config_class: type = TrainConfig):
    """A setting from the command line (a string) or TOML (typed), checked against the field's type."""
    kind, optional = field_types(config_class)[name]
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("none", "null") and optional):
        if not optional:
            raise ValueError(f"{name} cannot be empty")
        return None
    if kind is list:
        return list(raw) if isinstance(raw, (list, tuple)) else [raw]
    return _text_value(name, raw, kind) if isinstance(raw, str) else _typed_value(name, raw, kind)


def _typed_value(name: str, raw, kind: type):
    """A TOML value of the field's type (an integer where a number is asked; never a boolean for a number)."""
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if not isinstance(raw, kind) or (kind is int and isinstance(raw, bool)):
        raise ValueError(f"{name} must be {kind.__name__}, got {raw!r}")
    return raw


def _text_value(name: str, raw: str, kind: type):
    text = raw.strip().lower()
    if kind is bool:
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{name}: expected true or false, got {raw!r}")
        return text in ("true", "1", "yes")
    if kind in (int, float):
        try:
            number = float(text)  # a whole number may be written 1e4 or 2000.0, never 2.5
        except ValueError:
            number = None
        if number is not None and (kind is float or number.is_integer()):
            return number if kind is float else int(number)
        raise ValueError(f"{name}: expected a {'whole ' if kind is int else ''}number, got {raw!r}")
    return raw


def build(
    overrides: dict | None = None, toml_path: str | Path | None = None, config_class: type[LoopConfig] = TrainConfig
):
    """Defaults, then the preset (fine-tuning), then the TOML file, then `overrides` (already typed, or strings)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    from_file: dict = {}
    if toml_path:
        with open(toml_path, "rb") as f:
            from_file = tomllib.load(f)
        from_file = from_file.get(config_class.TOML_TABLE, from_file)
    return config_class.from_values({**from_file, **overrides})
