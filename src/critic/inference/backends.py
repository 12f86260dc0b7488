"""The engines a Classifier scores with on a CPU besides PyTorch: ONNX Runtime and OpenVINO, each in full precision
(OpenVINO runs bf16 where the chip has it) and in int8. Their files live in the model folder (onnx/, openvino/), tied
to the weights they were made from (critic.modeling.tie_to_weights). `critic export` measures every backend on this
machine and records it; `--backend auto` then takes the fastest that kept the accuracy (`measured_choice`)."""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path

import numpy as np
import torch

from critic import modeling
from critic.inference.engines import ENGINES


def computes_in(name: str, precision: str = "auto") -> str:
    """The arithmetic engine backend `name` runs when asked for `precision`: int8 for the int8 exports, fp32 for
    ONNX, and for OpenVINO bf16 where the chip has it unless fp32 is asked for (then its f32 hint)."""
    if name.endswith("-int8"):
        return "int8"
    if name == "openvino" and precision != "fp32" and modeling.cpu_has_bf16():
        return "bf16"
    return "fp32"


def honours(name: str, precision: str) -> bool:
    """Whether engine backend `name` computes in `precision` when asked to ("auto" asks for nothing)."""
    return precision == "auto" or computes_in(name, precision) == precision


def engine_path(model_dir: str | Path, name: str) -> Path:
    engine = ENGINES[name]
    return Path(model_dir) / engine.folder / engine.file


def installed(name: str) -> bool:
    return importlib.util.find_spec(ENGINES[name].package) is not None


def require(name: str) -> None:
    """An ImportError that says what to install when the engine's package is missing."""
    if not installed(name):
        engine = ENGINES[name]
        raise ImportError(f"backend {name} needs {engine.package}: pip install 'critic[{engine.extra}]'")


def forward(name: str, model_dir: str | Path, precision: str = "auto"):
    """A function from a padded batch (torch tensors) to logits (numpy), running the engine's exported model."""
    require(name)
    path = engine_path(model_dir, name)
    if ENGINES[name].package == "onnxruntime":
        return onnx_forward(path)
    return openvino_forward(path, f32=computes_in(name, precision) == "fp32")


def onnx_forward(path: Path, threads: int | None = None):
    """ONNX Runtime with every graph optimisation (its transformer fusions included)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(batch: dict[str, torch.Tensor]) -> np.ndarray:
        feeds = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
        return session.run(["logits"], feeds)[0]

    return run


def openvino_forward(path: Path, f32: bool = False):
    """OpenVINO's CPU plugin at its defaults: bf16 where the chip has AVX512-BF16 or AMX, f32 elsewhere (or with
    `f32`); int8 kernels (VNNI, AMX) for a quantized model; a latency-minded stream over all cores."""
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", **({"INFERENCE_PRECISION_HINT": "f32"} if f32 else {})}
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()

    def run(batch: dict[str, torch.Tensor]) -> np.ndarray:
        feeds = {
            "input_ids": batch["input_ids"].numpy().astype(np.int64),
            "attention_mask": batch["attention_mask"].numpy().astype(np.int64),
        }
        return request.infer(feeds)[0].copy()

    return run


def cpu_name() -> str:
    """The processor's model name, which a measurement is valid for."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measured_choice(record: dict | None, model_dir: Path, say=None, precision: str = "auto") -> str | None:
    """The fastest backend `critic export` measured on this kind of CPU that kept the accuracy, computes in
    `precision` when one is asked for, and can run here (its engine installed, its files there and made from these
    weights), or None without a measurement for it. `record`: the measurement critic.json keeps (`backends`); one
    it cannot read counts as none."""
    if not isinstance(record, dict) or record.get("cpu") != cpu_name() or not isinstance(record.get("ranking"), list):
        return None
    for name in record["ranking"]:
        if name != "torch" and name not in ENGINES:
            continue  # a name this version does not know (a record from another one, or edited)
        if name in ENGINES and not honours(name, precision):
            continue
        problem = unusable(name, model_dir) if name in ENGINES else None
        if problem is None:
            if say is not None:
                say(f"scoring with {name}, the fastest `critic export` measured on this CPU")
            return name
        if say is not None:
            say(f"not using {name}, measured fastest: {problem}")
    return None


def unusable(name: str, model_dir: Path) -> str | None:
    """Why the engine backend `name` cannot score with MODEL_DIR's weights here, or None when it can."""
    path = engine_path(model_dir, name)
    if not installed(name):
        return f"{ENGINES[name].package} is not installed"
    if not path.is_file():
        return f"{path} is missing"
    return modeling.export_mismatch(path.parent, model_dir)
