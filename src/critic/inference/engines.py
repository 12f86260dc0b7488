"""The scoring backends by name, and where each engine's files lie in a model folder: plain data, so that the
CLI builds its help without importing torch."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Engine:
    folder: str  # under the model folder
    file: str
    package: str  # what runs it
    extra: str  # the optional extra that installs it: critic[extra]


ENGINES = {
    "onnx": Engine("onnx", "model.onnx", "onnxruntime", "onnx"),
    "onnx-int8": Engine("onnx", "model.int8.onnx", "onnxruntime", "onnx"),
    "openvino": Engine("openvino", "model.xml", "openvino", "openvino"),
    "openvino-int8": Engine("openvino", "model.int8.xml", "openvino", "openvino"),
}
BACKENDS = ("auto", "torch", *ENGINES)
