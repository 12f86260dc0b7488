"""Where and how a model runs: the device, the precision (autocast), batch widths, the attention mask each
architecture wants without a host read, and batched scoring of tokenized reviews into logits."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from critic.modeling.attention import use_rowwise_attention
from critic.text import Ragged, pad, sorted_batches


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


def uncompiled(model):
    """The model itself, from under torch.compile's wrapper where it has one."""
    return getattr(model, "_orig_mod", model)


def ready_mask(model, attention_mask: torch.Tensor | None, padded: bool) -> torch.Tensor | None:
    """The 2-D padding mask in the form transformers would build from it, built without reading it on the host.

    Given a 2-D mask, transformers first asks whether any token is padded (`mask.all()`), a value read back from
    the GPU at every forward: the host waits for the GPU to finish everything queued, then queues the rest of the
    step while the GPU waits for it. That was the only host read in a training step (found with a dispatch-mode
    probe); on one H200 the card was busy 43-58% of the time. The host already knows the answer (`padded`, from its
    own copy): no padding gives no mask (SDPA may then take its flash kernel), padding the 4-D mask — booleans for
    SDPA, additive for eager attention (MPNet). Other architectures get their 2-D mask."""
    model = uncompiled(model)
    implementation = model.config._attn_implementation
    if (
        attention_mask is None
        or model.config.model_type not in READY_MASK_MODELS
        or implementation not in ("sdpa", "eager")
    ):
        return attention_mask
    if not padded:
        return None
    keep = attention_mask[:, None, None, :].bool()
    if implementation == "sdpa":
        return keep
    return torch.zeros(keep.shape, dtype=model.dtype, device=keep.device).masked_fill_(
        ~keep, torch.finfo(model.dtype).min
    )


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


def logits(
    forward, inputs: Ragged, pad_id: int, num_labels: int, max_tokens: int = 16384, progress=None, pad_multiple: int = 1
) -> np.ndarray:
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
