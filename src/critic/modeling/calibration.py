"""Calibrated probabilities: the standard ECE, temperature scaling (with a bias per class where it measures better)
fitted on held-out logits, and the scaling folded into the classification head, so that every consumer of the saved
folder (critic, ONNX, transformers.pipeline) reads calibrated probabilities without knowing of it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from critic.modeling.runtime import softmax


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


@dataclass(frozen=True)
class Scaling:
    """Logits mapped to scale * logits + bias, class by class. Temperature scaling is one scale 1/T for every class
    and no bias; temperature and bias add a bias per class (a model that leans to one class); vector scaling
    (Guo et al. 2017) a scale per class too."""

    method: str
    scale: tuple[float, ...]
    bias: tuple[float, ...]

    def apply(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits, dtype=np.float64) * np.array(self.scale) + np.array(self.bias)

    def after(self, first: Scaling) -> Scaling:
        """This scaling applied to the logits that `first` gives: one scaling, as a second fit on a calibrated head
        composes with the first."""
        scale, bias = np.array(self.scale), np.array(self.bias)
        return Scaling(
            self.method if first.method == "temperature" else first.method,
            tuple(float(v) for v in scale * np.array(first.scale)),
            tuple(float(v) for v in scale * np.array(first.bias) + bias),
        )

    @property
    def temperature(self) -> float:
        """1 / the mean scale: the temperature itself where every class has the same scale."""
        return float(1.0 / np.mean(self.scale))


def fit_scaling(logits: np.ndarray, labels: np.ndarray, method: str = "temperature") -> Scaling:
    """The scaling that minimises the negative log-likelihood of softmax(scale * logits + bias) on held-out rows.
    The first class's bias stays 0 (softmax ignores a shift shared by every class); scales lie in [1/20, 20]."""
    from scipy.optimize import minimize

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    classes = logits.shape[1]
    scales = classes if method == "vector" else 1
    biases = 0 if method == "temperature" else classes - 1

    def unpack(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scale = np.broadcast_to(np.exp(params[:scales]), (classes,))
        return scale, np.concatenate([[0.0], params[scales:]]) if biases else np.zeros(classes)

    onehot = np.eye(classes)[labels]

    def loss_and_gradient(params: np.ndarray) -> tuple[float, np.ndarray]:
        scale, bias = unpack(params)
        scaled = logits * scale + bias
        error = (softmax(scaled) - onehot) / len(labels)  # d loss / d scaled logits
        by_scale = (error * logits * scale).sum(axis=0)  # d loss / d log scale, class by class
        gradient = np.concatenate([by_scale if scales > 1 else [by_scale.sum()], error.sum(axis=0)[1:][:biases]])
        return negative_log_likelihood(scaled, labels), gradient

    # The exact gradient and tight tolerances: the fit is then a function of the logits to 1e-9, so that runs
    # whose weights agree to float rounding (one process or two) fold the same scaling into their heads.
    bounds = [(np.log(0.05), np.log(20.0))] * scales + [(-20.0, 20.0)] * biases
    fitted = minimize(
        loss_and_gradient,
        np.zeros(scales + biases),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 1000},
    )
    scale, bias = unpack(fitted.x)
    return Scaling(method, tuple(float(v) for v in scale), tuple(float(v) for v in bias))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 that minimises the negative log-likelihood of
    softmax(logits / T) on held-out rows. One parameter, so the ranking (accuracy, AUC) cannot change."""
    return fit_scaling(logits, labels, "temperature").temperature


RICHER_MARGIN = 1e-3  # held-out log-loss; the quickstart model's class bias buys 0.016 (0.317 -> 0.301)


def choose_scaling(logits: np.ndarray, labels: np.ndarray, folds: int = 5) -> tuple[Scaling, dict]:
    """Temperature scaling, or the richer scaling (temperature and bias for two classes, vector scaling for more)
    where it calibrates better on rows it was not fitted on: each is fitted on 4/5 of the validation rows and
    measured on the fifth left out, five times, and the richer one is kept where its held-out log-loss is lower by
    more than RICHER_MARGIN (on rows a model separates perfectly both are near 0, and the bias is then arbitrary).
    The log-loss decides, not the ECE: the ECE of the top class can fall while a class is systematically too likely
    (the others' errors cancel in it), and it is the noisier of the two. Returns the kept scaling fitted on every
    row, and the held-out figures of each scaling and of the logits as they are (`none`: nothing fitted)."""
    from sklearn.model_selection import StratifiedKFold

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    richer = "temperature+bias" if logits.shape[1] == 2 else "vector"
    if np.bincount(labels, minlength=logits.shape[1]).min() < folds:
        return fit_scaling(logits, labels), {}
    held_out = {method: np.zeros_like(logits) for method in ("temperature", richer)}
    for fit_rows, test_rows in StratifiedKFold(folds, shuffle=True, random_state=0).split(logits, labels):
        for method, scaled in held_out.items():
            scaled[test_rows] = fit_scaling(logits[fit_rows], labels[fit_rows], method).apply(logits[test_rows])
    figures = {method: scaled_figures(scaled, labels) for method, scaled in held_out.items()}
    figures["none"] = scaled_figures(logits, labels)
    better = figures[richer]["nll"] < figures["temperature"]["nll"] - RICHER_MARGIN
    return fit_scaling(logits, labels, richer if better else "temperature"), figures


def improves(summary: dict, held_out: dict) -> bool:
    """Whether a scaling is worth folding into the head: its log-loss on validation rows it was not fitted on
    (`choose_scaling`'s 5 folds) is below the unscaled logits'. A fit is judged on rows it has seen only where a
    class has too few rows for the folds: then neither the ECE nor the log-loss may rise. The held-out log-loss
    decides because a fit always lowers its own rows' log-loss, and the ECE of ~100 rows is noise: on 98 drugs
    reviews it rose in 8 of 15 few-label runs (16-64 per class) while their log-loss fell (1.03 -> 0.79 in one)."""
    if held_out:
        return held_out[summary["method"]]["nll"] < held_out["none"]["nll"]
    return summary["ece_after"] <= summary["ece_before"] and summary["nll_after"] <= summary["nll_before"]


def scaled_figures(logits: np.ndarray, labels: np.ndarray) -> dict:
    probs = softmax(logits)
    return {
        "nll": negative_log_likelihood(logits, labels),
        "ece": expected_calibration_error(labels, probs.max(axis=1), probs.argmax(axis=1)),
    }


def calibration_summary(logits: np.ndarray, labels: np.ndarray, scaling: Scaling | float) -> dict:
    """ECE and NLL of `logits` before and after the scaling (a temperature: logits / T), with the scaling."""
    if not isinstance(scaling, Scaling):
        scaling = Scaling("temperature", (1.0 / scaling,) * np.shape(logits)[1], (0.0,) * np.shape(logits)[1])
    before, after = scaled_figures(logits, labels), scaled_figures(scaling.apply(logits), labels)
    return {
        **as_record(scaling),
        "rows": int(len(labels)),
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "nll_before": before["nll"],
        "nll_after": after["nll"],
    }


def as_record(scaling: Scaling) -> dict:
    return {
        "method": scaling.method,
        "temperature": scaling.temperature,
        "scale": list(scaling.scale),
        "bias": list(scaling.bias),
    }


def from_record(record: dict, classes: int) -> Scaling:
    """The scaling a critic.json records; older records hold only a temperature."""
    if "scale" in record:
        return Scaling(record.get("method", "temperature"), tuple(record["scale"]), tuple(record["bias"]))
    return Scaling("temperature", (1.0 / record.get("temperature", 1.0),) * classes, (0.0,) * classes)


def describe(record: dict, labels: list[str]) -> str:
    """'temperature 1.234' or 'temperature 1.234 and a bias of +0.41 for positive' (against the first class)."""
    text = f"temperature {record['temperature']:.3f}"
    if record.get("method") == "vector":
        text = "a scale per class (" + ", ".join(f"{name} {s:.2f}" for name, s in zip(labels, record["scale"])) + ")"
    shifts = [f"{b:+.2f} for {name}" for name, b in zip(labels[1:], record.get("bias", [])[1:]) if abs(b) > 5e-3]
    return text + (f" and a bias of {', '.join(shifts)}" if shifts else "")


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
def fold_scaling(model, scaling: Scaling) -> None:
    """Apply `scaling` to the logits for good: the last layer's weight and bias scaled per class, then shifted."""
    layer = classification_layer(model)
    scale = torch.tensor(scaling.scale, dtype=layer.weight.dtype, device=layer.weight.device)
    layer.weight.mul_(scale[:, None])
    if layer.bias is None:
        if any(scaling.bias):
            raise ValueError(f"{type(model).__name__}: its head has no bias to fold a class bias into")
        return
    layer.bias.mul_(scale).add_(torch.tensor(scaling.bias, dtype=layer.bias.dtype, device=layer.bias.device))


def fold_temperature(model, temperature: float) -> None:
    """Divide the logits by `temperature` for good: the last layer's weight and bias scaled by 1 / T."""
    classes = classification_layer(model).out_features
    fold_scaling(model, Scaling("temperature", (1.0 / temperature,) * classes, (0.0,) * classes))
