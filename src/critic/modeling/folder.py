"""Build, load and save a classifier: a standard Hugging Face folder (config, safetensors, tokenizer) plus
critic.json (cleaning, truncation, labels, metrics, data manifest, versions) and a model card (README.md)."""

from __future__ import annotations

import json
import os
import platform
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from critic import data, sources
from critic.kernels import use_rowwise_attention
from critic.text import Ragged, keep_normalizer, pad, sorted_batches

META_FILE = "critic.json"


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
        encoder_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, dtype=torch.float32, **overrides)
    tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    return model, tokenizer


def load(folder: str | Path, device: str | torch.device = "cpu"):
    """(model, tokenizer, meta) from a folder written by `save`, or from any Hugging Face sequence classifier's
    folder (its labels from its config, no cleaning, its tokenizer's own limit: what transformers.pipeline does)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(folder)
    finish_saving(folder)  # a save that was cut short while moving its files in
    critic_made = (folder / META_FILE).is_file()
    if not critic_made and not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: not a critic model (no {META_FILE}) nor a Hugging Face model folder (no "
                                f"config.json); train one with `critic train`")
    quiet_transformers()
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    meta = json.loads((folder / META_FILE).read_text()) if critic_made else foreign_meta(model, tokenizer, folder)
    return model, tokenizer, meta


def foreign_meta(model, tokenizer, folder: Path) -> dict:
    """What critic needs to know of a classifier it did not train, read from the model's own config."""
    config = model.config
    if config.problem_type == "multi_label_classification" or config.num_labels < 2:
        raise ValueError(f"{folder}: a {'multi-label' if config.num_labels >= 2 else 'regression'} model; critic "
                         f"scores single-label classifiers (softmax over two or more classes)")
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    limit = tokenizer.model_max_length if tokenizer.model_max_length < 100_000 else config.max_position_embeddings
    return {"name": folder.name, "labels": labels, "cleaning": "none", "foreign": True, "base_model": str(folder),
            "truncation": {"max_length": int(limit), "strategy": "head", "head": int(limit)},
            "long_reviews": {"mode": "truncate"}}


def save(model, tokenizer, folder: str | Path, meta: dict) -> Path:
    """The model folder (weights, config, tokenizer, critic.json, the card), written as one set (`write_set`)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    model = getattr(model, "_orig_mod", model)  # torch.compile

    def write(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        keep_normalizer(tokenizer, staging)
        write_meta(staging, meta)

    return write_set(folder, write)


SAVING, COMPLETE = ".saving", "COMPLETE"
WEIGHTS = "model.safetensors"


def write_set(folder: str | Path, write: Callable[[Path], None]) -> Path:
    """Files that belong together, written so that a crash, a signal or a full disk at any moment leaves the
    folder with the previous set or the new one, never a truncated or mixed one: `write(staging)` writes them into
    FOLDER/.saving, they are flushed to disk and marked complete, then moved in (`finish_saving`; a move cut short
    is finished by the next save or load). Exports of other weights are removed (critic.export)."""
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
    write_text_atomic(export / EXPORT_RECORD, json.dumps({"sha256": sources.sha256_file(weights),
                                                          "stat": [stat.st_size, stat.st_mtime_ns]}))


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
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    _fsync(partial)
    os.replace(partial, path)


def write_meta(folder: Path, meta: dict) -> None:
    import transformers

    meta = {**meta, "versions": {"critic": _version(), "torch": torch.__version__,
                                 "transformers": transformers.__version__, "python": platform.python_version()}}
    write_text_atomic(folder / META_FILE, json.dumps(meta, indent=2, default=str))
    write_text_atomic(folder / "README.md", model_card(meta))


def update_meta(folder: str | Path, **changes) -> dict:
    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text())
    meta.update(changes)
    write_meta(folder, meta)
    return meta


def run_complete(folder: Path) -> bool:
    """Whether `critic train` finished writing this folder (its last step marks critic.json complete)."""
    meta = Path(folder) / META_FILE
    return meta.is_file() and json.loads(meta.read_text()).get("complete") is True


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("critic")
    except PackageNotFoundError:
        return "unknown"


HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "mpnet": "sentence-transformers/all-mpnet-base-v2"}
CARD_METRICS = {"accuracy": "accuracy", "f1_macro": "f1", "roc_auc": "roc_auc", "pr_auc": "pr_auc", "ece": "ece"}


def model_card(meta: dict) -> str:
    """The model card (README.md): metadata through huggingface_hub's ModelCardData (base model, dataset, and the
    evaluation as a model-index, as the hub and setfit read it), then what a reader needs in prose."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    base = meta.get("base_model") or ""
    hub_id = HUB_IDS.get(base, base if "/" in base and not Path(base).exists() else None)
    evaluation = meta.get("evaluation") or {}
    results = [EvalResult(task_type="text-classification", dataset_type="imdb" if meta.get("data") == "imdb" else
                          "custom", dataset_name=str(evaluation.get("data")), metric_type=metric,
                          metric_value=float(evaluation[key])) for key, metric in CARD_METRICS.items()
               if isinstance(evaluation.get(key), (int, float))]
    data = ModelCardData(library_name="transformers", pipeline_tag="text-classification", tags=["sentiment", "critic"],
                         base_model=hub_id, datasets=["imdb"] if meta.get("data") == "imdb" else None,
                         model_name=meta.get("name", "critic") if results else None, eval_results=results or None)
    truncation = meta.get("truncation", {})
    lines = [
        f"# {meta.get('name', 'critic sentiment classifier')}", "",
        f"A sentiment classifier fine-tuned with critic from `{base}` on {meta.get('data')}.",
        f"Labels: {', '.join(meta.get('labels', []))}.", "",
        "## Use", "", "```python", "from critic import Classifier",
        "clf = Classifier.load('PATH')", "clf.predict(['A moving, beautifully shot film.'])", "```", "",
        "The folder is a standard Hugging Face model: "
        "`transformers.pipeline('text-classification', model='PATH')` loads it too; its tokenizer carries critic's "
        "default cleaning (without critic's long-review handling).", "",
        "## Training", "",
        f"- cleaning: `{meta.get('cleaning')}`; window: {truncation.get('max_length')} tokens, "
        f"truncation `{truncation.get('strategy')}` (head {truncation.get('head')})",
        f"- training rows: {meta.get('train_rows')}; selected checkpoint: {meta.get('selected')}",
    ]
    for note in meta.get("notes", []):
        lines.append(f"- note: {note}")
    if evaluation:
        lines += ["", "## Evaluation", "", f"On {evaluation.get('data')} ({evaluation.get('rows')} reviews):", "",
                  "| metric | value |", "|---|---|"]
        for key in ("accuracy", "accuracy_ci95", "f1_macro", "roc_auc", "pr_auc", "ece"):
            if key in evaluation:
                value = evaluation[key]
                shown = f"{value[0]:.4f} – {value[1]:.4f}" if isinstance(value, list) else f"{value:.4f}"
                lines.append(f"| {key} | {shown} |")
        base = evaluation.get("baseline")
        if base:
            low, high = base["accuracy_ci95"]
            lines += ["", f"Baseline on the same reviews, trained on the same {base['train_rows']:,} training reviews: "
                          f"{base['model']}, accuracy {base['accuracy']:.4f} ({low:.4f} – {high:.4f})."]
    fitted = meta.get("calibration")
    if fitted and fitted.get("applied"):
        lines += ["", f"Calibrated: temperature {fitted['temperature']:.3f} (fitted on {fitted['rows']:,} validation "
                      f"reviews) is folded into the classification head; validation ECE {fitted['ece_before']:.4f} "
                      f"before, {fitted['ece_after']:.4f} after."]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(lines) + "\n"))


def autocast(device: torch.device, precision: str):
    """Mixed precision: matrix products in bf16/fp16, weights and the loss in fp32."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: bf16 on GPUs that have it (else fp16), bf16 on CPUs with native bf16 (AVX512-BF16 or AMX; measured
    1.9x faster training and 2.4x faster inference for MiniLM on 2 such cores), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


def cpu_has_bf16() -> bool:
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def pad_multiple(device: torch.device) -> int:
    """Batch widths are rounded up to multiples of 8 on GPUs, whose tensor cores like them; a CPU only pays for the
    extra tokens."""
    return 8 if device.type == "cuda" else 1


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def inference_model(model, precision: str, device: torch.device):
    """A copy of `model` for scoring: weights cast to bf16/fp16 once when computing in it (autocast would cast them
    again for every batch); on a CPU the row-wise attention, on a GPU PyTorch's fused attention (SDPA).
    Returns (model, autocast precision)."""
    import copy

    model = copy.deepcopy(model).eval()
    if precision in ("bf16", "fp16"):
        model, precision = model.to(torch.bfloat16 if precision == "bf16" else torch.float16), "fp32"
    if device.type == "cpu":
        use_rowwise_attention(model)
    elif getattr(model, "_supports_sdpa", False):
        model.set_attn_implementation("sdpa")
    return model, precision


# Architectures whose forward takes a ready 4-D attention mask as it is (transformers' masking_utils, 5.17 to 5.24;
# tests/test_model.py checks each against the mask transformers builds).
READY_MASK_MODELS = frozenset({"bert", "roberta", "distilbert", "mpnet"})


def ready_mask(model, attention_mask: torch.Tensor | None, padded: bool) -> torch.Tensor | None:
    """The 2-D padding mask in the form transformers would build from it, built without reading it on the host.

    Given a 2-D mask, transformers first asks whether any token is padded (`mask.all()`), a value read back from
    the GPU at every forward: the host waits for the GPU to finish everything queued, then queues the rest of the
    step while the GPU waits for it. That was the only host read in a training step (found with a dispatch-mode
    probe); on one H200 the card was busy 43-58% of the time. The host already knows the answer (`padded`, from its
    own copy): no padding gives no mask (SDPA may then take its flash kernel), padding the 4-D mask — booleans for
    SDPA, additive for eager attention (MPNet). Other architectures get their 2-D mask."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    implementation = model.config._attn_implementation
    if attention_mask is None or model.config.model_type not in READY_MASK_MODELS \
            or implementation not in ("sdpa", "eager"):
        return attention_mask
    if not padded:
        return None
    keep = attention_mask[:, None, None, :].bool()
    if implementation == "sdpa":
        return keep
    return torch.zeros(keep.shape, dtype=model.dtype, device=keep.device).masked_fill_(~keep,
                                                                                      torch.finfo(model.dtype).min)


def device_batch(model, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A padded batch (host tensors) on `device`. On a GPU it is copied from pinned memory without blocking, and
    its padding mask arrives in the form that spares a host read at every forward (`ready_mask`)."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    moved = {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    if "attention_mask" in batch:
        padded = not bool(batch["attention_mask"].all())  # the host's copy: no wait for the GPU
        moved["attention_mask"] = ready_mask(model, moved["attention_mask"], padded)
        if moved["attention_mask"] is None:
            del moved["attention_mask"]
    return moved


def torch_forward(model, device: torch.device, precision: str = "fp32"):
    """A function from a padded batch (torch tensors) to logits, for `logits`. On a GPU the batch is copied from
    pinned memory without blocking and the logits stay on the GPU, so the host prepares the next batch meanwhile."""
    model.eval()

    @torch.inference_mode()
    def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast(device, precision):
            return model(**device_batch(model, batch, device)).logits.float()

    return forward


def logits(forward, inputs: Ragged, pad_id: int, num_labels: int, max_tokens: int = 16384,
           progress=None, pad_multiple: int = 1) -> np.ndarray:
    """Logits for every row of `inputs`, in input order. Batches are length-sorted and sized by a token budget,
    so short reviews are not padded to the longest one. `forward` maps a padded batch to logits: numpy (ONNX), or
    torch tensors, which are gathered and read once at the end (reading each would make a GPU wait)."""
    order, results = [], []
    for rows in sorted_batches(inputs.lengths, max_tokens):
        order.append(rows)
        results.append(forward(pad(inputs, rows, pad_id, pad_multiple)))
        if progress is not None:
            progress.update(len(rows))
    out = np.zeros((len(inputs), num_labels), dtype=np.float32)
    if not results:
        return out
    values = torch.cat(results).cpu().numpy() if isinstance(results[0], torch.Tensor) else np.concatenate(results)
    out[np.concatenate(order)] = values
    return out


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = values - values.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
