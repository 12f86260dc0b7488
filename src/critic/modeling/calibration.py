"""Calibrated probabilities: the standard ECE, temperature scaling fitted on held-out logits, and the temperature
folded into the classification head, so that every consumer of the saved folder (critic, ONNX, transformers.pipeline)
reads calibrated probabilities without knowing of it."""

from __future__ import annotations

import numpy as np
import torch

from critic.modeling import softmax


def expected_calibration_error(
    labels: np.ndarray, confidence: np.ndarray, predicted: np.ndarray, bins: int = 15
) -> float:
    """The standard ECE (Guo et al. 2017): the confidence of the predicted class in `bins` equal-width bins over
    [0, 1], each (lower, upper]; the gap between mean confidence and accuracy, weighted by the bin's share."""
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    correct = predicted == labels
    gap = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(gap)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    from scipy.special import log_softmax

    return float(-log_softmax(logits / temperature, axis=1)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 that minimises the negative log-likelihood of
    softmax(logits / T) on held-out rows. One parameter, so the ranking (accuracy, AUC) cannot change."""
    from scipy.optimize import minimize_scalar

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    fitted = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(fitted.x))


def calibration_summary(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """ECE and NLL of `logits` before and after dividing them by `temperature`."""

    def ece(t: float) -> float:
        probs = softmax(np.asarray(logits, dtype=np.float64) / t)
        return expected_calibration_error(labels, probs.max(axis=1), probs.argmax(axis=1))

    return {
        "temperature": temperature,
        "rows": int(len(labels)),
        "ece_before": ece(1.0),
        "ece_after": ece(temperature),
        "nll_before": negative_log_likelihood(logits, labels),
        "nll_after": negative_log_likelihood(logits, labels, temperature),
    }


def classification_layer(model) -> torch.nn.Linear:
    """The head's last linear layer, the one that writes the logits (`classifier` in BERT and DistilBERT,
    `classifier.out_proj` in RoBERTa and MPNet): the last Linear with one output per label."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    classes = model.config.num_labels
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == classes]
    if not layers:
        raise ValueError(f"{type(model).__name__}: no linear layer with {classes} outputs to calibrate")
    return layers[-1]


@torch.no_grad()
def fold_temperature(model, temperature: float) -> None:
    """Divide the logits by `temperature` for good: the last layer's weight and bias scaled by 1 / T."""
    layer = classification_layer(model)
    layer.weight.div_(temperature)
    if layer.bias is not None:
        layer.bias.div_(temperature)
