"""The model folder: build, load and save a classifier as a standard Hugging Face folder (config, safetensors,
tokenizer) plus critic.json (cleaning, truncation, labels, metrics, data manifest, versions) and a model card
(README.md), written as one set; the exports tied to its weights."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from critic import data
from critic.data import sources
from critic.modeling.card import model_card
from critic.modeling.record import FILE as META_FILE
from critic.modeling.record import ModelRecord
from critic.modeling.runtime import uncompiled
from critic.text import keep_normalizer


def quiet_transformers() -> None:
    """transformers 5 prints a load report for every new head; we say what matters ourselves."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout")


def build(encoder_path: str | Path, labels: tuple[str, ...] = data.LABEL_NAMES, dropout: float | None = None):
    """A pretrained encoder with a new classification head (and, if given, its dropout rates set to `dropout`)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    overrides = {}
    if dropout is not None:
        encoder_config = AutoConfig.from_pretrained(encoder_path)
        overrides = {name: dropout for name in DROPOUT_FIELDS if hasattr(encoder_config, name)}
    # fp32 master weights whatever the folder stores (transformers 5 would keep an fp16 copy's dtype)
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        dtype=torch.float32,
        **overrides,
    )
    tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    return model, tokenizer


def load(folder: str | Path, device: str | torch.device = "cpu", writer: bool = False):
    """(model, tokenizer, record) from a folder written by `save`, or from any Hugging Face sequence classifier's
    folder (its labels from its config, no cleaning, its tokenizer's own limit: what transformers.pipeline does).

    Loading never changes the folder: a save that was cut short while moving its files in is finished only by a
    `writer` (train, export); anyone else is told. (Finishing it on every load let a folder someone handed over swap
    in other weights than the ones a user had checked.)"""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(folder)
    if writer:
        finish_saving(folder)
    elif (folder / SAVING / COMPLETE).is_file():
        raise ValueError(
            f"{folder / SAVING} holds a save that was cut short while moving in; `critic export {folder}` finishes "
            f"it (loading a model never writes to its folder)"
        )
    critic_made = (folder / META_FILE).is_file()
    if not critic_made and not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder}: not a critic model (no {META_FILE}) nor a Hugging Face model folder (no "
            f"config.json); train one with `critic train`"
        )
    quiet_transformers()
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    record = ModelRecord.read(folder) if critic_made else foreign_record(model, tokenizer, folder)
    return model, tokenizer, record


def foreign_record(model, tokenizer, folder: Path) -> ModelRecord:
    """What critic needs to know of a classifier it did not train, read from the model's own config."""
    config = model.config
    if config.problem_type == "multi_label_classification" or config.num_labels < 2:
        raise ValueError(
            f"{folder}: a {'multi-label' if config.num_labels >= 2 else 'regression'} model; critic "
            f"scores single-label classifiers (softmax over two or more classes)"
        )
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    limit = tokenizer.model_max_length if tokenizer.model_max_length < 100_000 else config.max_position_embeddings
    return ModelRecord(
        name=folder.name,
        labels=labels,
        cleaning="none",
        foreign=True,
        base_model=str(folder),
        truncation={"max_length": int(limit), "strategy": "head", "head": int(limit)},
    )


def save(model, tokenizer, folder: str | Path, record: ModelRecord) -> Path:
    """The model folder (weights, config, tokenizer, critic.json, the card), written as one set (`write_set`)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    model = uncompiled(model)

    def write(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        keep_normalizer(tokenizer, staging)
        write_record(staging, record)

    return write_set(folder, write)


SAVING, COMPLETE = ".saving", "COMPLETE"
WEIGHTS = "model.safetensors"


def write_set(folder: str | Path, write: Callable[[Path], None]) -> Path:
    """Files that belong together, written so that a crash, a signal or a full disk at any moment leaves the
    folder with the previous set or the new one, never a truncated or mixed one: `write(staging)` writes them into
    FOLDER/.saving, they are flushed to disk and marked complete, then moved in (`finish_saving`; a move cut short
    is finished by the next save or load). Exports of other weights are removed (critic.inference.export)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    finish_saving(folder, discard_incomplete=True)
    staging = folder / SAVING
    staging.mkdir()
    write(staging)
    for path in staging.iterdir():
        _fsync(path)
    (staging / COMPLETE).write_text("")
    _fsync(staging / COMPLETE)
    _fsync(staging)
    if (staging / WEIGHTS).is_file():
        drop_stale_exports(folder, staging / WEIGHTS)
    finish_saving(folder)
    return folder


def finish_saving(folder: Path, discard_incomplete: bool = False) -> None:
    """Move a complete staged set into `folder` (critic.json last); with `discard_incomplete`, remove a set whose
    writing never completed (only the writer does: a reader may be looking while a save is under way)."""
    staging = folder / SAVING
    if not staging.is_dir():
        return
    if not (staging / COMPLETE).is_file():
        if discard_incomplete:
            shutil.rmtree(staging)
        return
    for path in sorted(staging.iterdir(), key=lambda p: p.name == META_FILE):
        if path.name != COMPLETE:
            try:
                os.replace(path, folder / path.name)
            except FileNotFoundError:  # another process finishing the same move
                pass
    (staging / COMPLETE).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    _fsync(folder)


# An export (critic export's onnx/) records the weights it was made from: it is used only with those weights.
EXPORT_RECORD = "source-weights.json"


def weights_file(model_dir: Path) -> Path:
    """The file that holds (or, sharded, indexes) a model folder's weights."""
    for name in (WEIGHTS, "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"):
        if (Path(model_dir) / name).is_file():
            return Path(model_dir) / name
    raise FileNotFoundError(f"{model_dir}: no weights ({WEIGHTS} or pytorch_model.bin)")


def tie_to_weights(export: Path, model_dir: Path) -> None:
    """Record in `export` the sha256 (and size and time) of MODEL_DIR's weights."""
    weights = weights_file(model_dir)
    stat = weights.stat()
    write_text_atomic(
        export / EXPORT_RECORD,
        json.dumps({"sha256": sources.sha256_file(weights), "stat": [stat.st_size, stat.st_mtime_ns]}),
    )


def export_mismatch(export: Path, model_dir: Path) -> str | None:
    """Why the export in `export` cannot be used with MODEL_DIR's weights, or None when it was made from them (a
    file of the same size and time is taken as the same; otherwise the weights are hashed)."""
    record = Path(export) / EXPORT_RECORD
    if not record.is_file():
        return f"{export} does not record the weights it was made from (made before critic tied exports to weights)"
    tied = json.loads(record.read_text())
    weights = weights_file(model_dir)
    stat = weights.stat()
    if tied["stat"] == [stat.st_size, stat.st_mtime_ns]:
        return None
    if tied["sha256"] == sources.sha256_file(weights):
        try:  # the same weights written again: remember their new size and time, so the next load needs no hash
            write_text_atomic(record, json.dumps({**tied, "stat": [stat.st_size, stat.st_mtime_ns]}))
        except OSError:
            pass
        return None
    return f"{export} was made from other weights than {weights} (the model was saved again since)"


def drop_stale_exports(folder: Path, new_weights: Path) -> None:
    """Remove the exports in `folder` made from weights other than `new_weights`."""
    tied = [sub for sub in folder.iterdir() if (sub / EXPORT_RECORD).is_file()]
    digest = sources.sha256_file(new_weights) if tied else None
    for export in tied:
        if json.loads((export / EXPORT_RECORD).read_text())["sha256"] != digest:
            shutil.rmtree(export)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text_atomic(path: Path, text: str) -> None:
    """A whole file or the previous one, never a truncated one."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, content: bytes) -> None:
    """A whole file or the previous one, never a truncated one."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(content)
    _fsync(partial)
    os.replace(partial, path)


def write_record(folder: Path, record: ModelRecord) -> None:
    """critic.json, with the versions that write it, and the model card (README.md): the one place they are
    written, each whole or not at all. A classifier critic did not train keeps its own README."""
    import transformers

    versions = {
        "critic": _version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    record = dataclasses.replace(record, versions=versions)
    write_text_atomic(folder / META_FILE, json.dumps(record.to_dict(), indent=2, default=str))
    if not record.foreign:
        write_text_atomic(folder / "README.md", model_card(record))


def update_record(folder: str | Path, **changes) -> ModelRecord:
    """The folder's record with `changes` (its fields: another name is an error), written back."""
    record = dataclasses.replace(ModelRecord.read(folder), **changes)
    write_record(Path(folder), record)
    return record


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("critic")
    except PackageNotFoundError:
        return "unknown"
