"""Export a trained model to ONNX for CPU inference with ONNX Runtime: fp32, and int8 by dynamic quantization.

The files go into MODEL/onnx/ (model.onnx, model.int8.onnx) with the sha256 of the weights they were made from;
`critic predict` uses them only with those weights, and a new save of the model removes them. Parity with PyTorch is
checked on the spot and recorded in critic.json.
"""

from __future__ import annotations

import json

import time
from pathlib import Path

import numpy as np
import torch

from critic import model as modelling
from critic.text import Encoder, Ragged, Truncation, pad, prepare

ONNX_DIR = "onnx"
FP32 = "model.onnx"
INT8 = "model.int8.onnx"
PARITY_TEXTS = [
    "A moving, beautifully shot film with a superb cast.",
    "Dull, lifeless and far too long. I want my two hours back.",
    "Not bad at all, though the second half drags.",
    "The worst sequel ever made.",
]


class _Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def onnx_forward(path: Path, threads: int | None = None):
    """A function from a padded batch to logits, running an ONNX Runtime session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(batch: dict[str, torch.Tensor]) -> np.ndarray:
        feeds = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
        return session.run(["logits"], feeds)[0]

    return forward


def export(model_dir: str | Path, int8: bool = True, log=None) -> dict:
    """Write MODEL/onnx/model.onnx (and model.int8.onnx); return and record the parity figures."""
    import logging

    model_dir = Path(model_dir)
    model, tokenizer, meta = modelling.load(model_dir, "cpu")
    folder = model_dir / ONNX_DIR
    folder.mkdir(exist_ok=True)
    (folder / modelling.EXPORT_RECORD).unlink(missing_ok=True)  # written again last: a cut-short export is not used
    encoder = Encoder(tokenizer)
    max_length = meta["truncation"]["max_length"]
    # A padded example, so that the exporter traces the attention mask for real.
    example = pad(Ragged(np.arange(2, 20, dtype=np.int32) % 100 + 1000, np.array([0, 12, 18])), [0, 1], encoder.pad_id)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=max_length)
    started = time.perf_counter()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    program = torch.onnx.export(_Logits(model).eval(), (example["input_ids"], example["attention_mask"]), dynamo=True,
                                input_names=["input_ids", "attention_mask"], output_names=["logits"],
                                dynamic_shapes={"input_ids": {0: batch, 1: length},
                                                "attention_mask": {0: batch, 1: length}}, verbose=False)
    program.save(str(folder / FP32))
    report = {"fp32": FP32, "export_seconds": round(time.perf_counter() - started, 1)}
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Per-channel scales: per-tensor ones cost MiniLM 1.65 accuracy points on IMDB, per-channel none
        # (docs/benchmarks.md).
        quantize_dynamic(folder / FP32, folder / INT8, weight_type=QuantType.QInt8, per_channel=True)
        report["int8"] = INT8

    framed = prepare(PARITY_TEXTS, encoder, meta["cleaning"], Truncation(**meta["truncation"]))
    reference = modelling.softmax(modelling.logits(modelling.torch_forward(model, torch.device("cpu")), framed,
                                                   encoder.pad_id, model.config.num_labels))
    for name in ("fp32", "int8"):
        if name in report:
            probs = modelling.softmax(modelling.logits(onnx_forward(folder / report[name]), framed, encoder.pad_id,
                                                       model.config.num_labels))
            report[f"{name}_max_abs_diff"] = float(np.abs(probs - reference).max())
    modelling.tie_to_weights(folder, model_dir)
    if meta.get("foreign"):  # a classifier critic did not train: its own README stays as it is
        modelling.write_text_atomic(model_dir / modelling.META_FILE, json.dumps({**meta, "onnx": report}, indent=2))
    else:
        modelling.update_meta(model_dir, onnx=report)
    if log:
        log(f"exported {folder / FP32}" + (f" and {folder / INT8}" if int8 else "") +
            f"; largest probability difference from PyTorch: fp32 {report['fp32_max_abs_diff']:.1e}" +
            (f", int8 {report['int8_max_abs_diff']:.1e}" if int8 else ""))
    return report
