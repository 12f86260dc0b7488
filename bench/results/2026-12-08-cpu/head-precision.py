"""Why `critic export` found PyTorch 0.6 points more accurate on the validation split than training recorded
(quickstart MiniLM: 87.83% against 87.23% on the same 4,879 reviews, both "bf16"). Training scores validation
under autocast (an fp32 model, its matrix products in bf16) and applies the calibration's map in float64 to the
head's inputs; the Classifier casts the weights to bf16 once (`modeling.inference_model`) and runs the map folded
into the head. Each body below, with its head as it runs and with the map in float64 on its head inputs.

Found (head-precision.txt, 2 cores of an AMD EPYC Zen 4, 2026-12-08): 87.19-87.23% every way, at most 8 answers
of 4,879 apart, so not the precision: the export had scored through the cascade (87.83% is the cascade's). Fixed
in `critic export` (each engine measured alone).

    python head-precision.py MODEL_FOLDER
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

from critic import modeling
from critic.modeling import calibration
from critic.text import Encoder, Truncation, prepare

folder = Path(sys.argv[1])
model, tokenizer, record = modeling.load(folder, "cpu")
frame = record.rows("validation")
labels = frame["label"].to_numpy()
encoder = Encoder(tokenizer)
reviews = prepare(frame["text"], encoder, record.cleaning, Truncation(**record.truncation))
cpu = torch.device("cpu")


def scored(net, precision):
    """Logits and the head's inputs (float64) of `net` over the validation reviews."""
    dense, _ = calibration.tanh_head(net)
    captured = []
    hook = dense.register_forward_hook(lambda layer, args, output: captured.append(args[0].float()))
    forward = modeling.torch_forward(net, cpu, precision)
    started = time.perf_counter()
    out = modeling.logits(
        lambda batch: torch.cat([forward(batch), captured.pop()], dim=1),
        reviews,
        encoder.pad_id,
        2 + dense.in_features,
    )
    hook.remove()
    print(f"  scored in {time.perf_counter() - started:.0f} s", flush=True)
    return out[:, :2], out[:, 2:].astype(np.float64)


def exact_head(inputs):
    """The folded head in float64 on the fp32 weights: the calibration's map itself."""
    dense, out = calibration.tanh_head(model)
    hidden = np.tanh(inputs @ dense.weight.detach().double().numpy().T + dense.bias.detach().double().numpy())
    return hidden @ out.weight.detach().double().numpy().T + out.bias.detach().double().numpy()


def answers(logits):
    return (logits[:, 1] - logits[:, 0] > 0).astype(int)


curve = record.abstention["curve"]
print(f"recorded by training: {1 - curve['errors'][-1] / curve['rows']:.4%} on {curve['rows']:,}")
bodies = {}
print("training's body (autocast bf16 over fp32 weights)")
bodies["autocast"] = scored(model, "bf16")
print("the Classifier's body (weights cast to bf16, row-wise attention)")
deployed, _ = modeling.inference_model(model, "bf16", cpu)
bodies["bf16 weights"] = scored(deployed, "fp32")
reference = answers(exact_head(bodies["autocast"][1]))
for body, (logits, inputs) in bodies.items():
    for head, got in (("head as it runs", logits), ("map in float64", exact_head(inputs))):
        print(
            f"{body:>13}, {head:>15}: accuracy {(answers(got) == labels).mean():.4%}, "
            f"answers unlike training's {int((answers(got) != reference).sum())}"
        )
