"""Few labels: a classifier from a sentence encoder's mean embedding, tuned on pairs, and a logistic regression.

With a few dozen labelled reviews, fine-tuning a transformer learns little (16 per class: 54.2% on IMDB with the cpu
preset, 61.0% with 10 epochs), while the mean of a sentence encoder's token vectors already separates the classes.
SetFit's recipe, done here at a fraction of its cost: the encoder is first tuned so that reviews of one class lie
close together (pair_tuning.py, through the training loop), then a logistic regression on its mean embedding becomes
the classification head (bench/few_labels.py, docs/benchmarks.md). The mean is computed by a layer appended to the
encoder (modeling/mean_pooling.py), the regression is fitted on that model's own pooled features, and the folder is
a standard classifier: calibrated and given its --min-accuracy curve on the validation split like any critic model,
read by every consumer. `--pair-epochs 0` keeps the encoder as it is: seconds instead of minutes, fewer points.

`critic train` takes this path by itself below FEW_LABELS_PER_CLASS labelled training reviews in the rarest class
of the data's training split, with a BERT-architecture encoder (`--few-labels auto`); `on` and `off` choose. The
model reads long reviews whole, through windows, unless `--long-reviews truncate` says otherwise (LONG_REVIEWS).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from critic import data, modeling
from critic.config import TrainConfig
from critic.data import catalogue
from critic.modeling import mean_pooling
from critic.training import final_save, pair_tuning
from critic.training.inputs import Inputs, load_inputs, run_record
from critic.training.processes import Distributed, speaker
from critic.training.step import Machine

# Below this many labelled training reviews in the rarest class, `--few-labels auto` fits a logistic regression on
# the mean embedding instead of fine-tuning. bench/few_labels.py --fine-tune on IMDB (1 seed, 1,000 test reviews):
# at 128 per class 71.7% against fine-tuning's 58.9%, at 256 72.7% against 78.7%; the lines cross near 200.
FEW_LABELS_PER_CLASS = 200
# scikit-learn's C, on layer-normed mean embeddings (norm ~sqrt(384) for MiniLM). Against C=1 on the same frozen
# features, 5 seeds, 1,000 test reviews (2 AMD EPYC cores, 2026-12-02; bench/results/2026-12-02-cpu/
# few-labels-regularisation.txt): IMDB 8/16/32/64 per class -0.3/+0.4/+0.6/+2.0 points, drugs -0.4/+0.2/+1.0/+2.7
# before calibration, and a lower validation log-loss at nearly every size (C=1 was overconfident: 1.6 on drugs).
REGULARISATION = 0.01
# How the few-label model reads reviews longer than its window by default (`--long-reviews`, `--window-pool`
# choose): whole, through overlapping windows. IMDB at 64 per class, 5 seeds, 1,000 test reviews, 2 AMD EPYC Zen 4
# cores, 2026-12-03: 82.56% with long reviews cut (head+tail, 256 tokens), through windows 83.20% with the mean of
# their probabilities, 83.16% with the most confident window (critic's usual pool), for 2.2x the scoring compute.
# The mean ranks confidence better (seeds 0 and 4: the validation curve shows 90% accuracy on 50% and 60% of the
# reviews, 50% and 50% cut, where the most confident window shows it on none).
LONG_REVIEWS = "windows"
LONG_REVIEW_POOL = "mean-prob"


def labels_per_class(config: TrainConfig, dataset: data.Dataset) -> np.ndarray:
    """Labelled reviews per class in the data's whole training split (--train-size chooses to use fewer of them;
    it does not make the data few); an error naming a class too rare to learn."""
    counts = np.bincount(dataset.split("train")["label"].to_numpy(), minlength=len(dataset.labels))
    for name, count in zip(dataset.labels, counts):
        if count < 2:
            raise data.DataError(
                f"{config.data}: the class {name!r} has {count} labelled training review(s); a classifier needs "
                f"at least 2 per class in the training split (label more, or leave the class out with --labels)"
            )
    return counts


def considered(config: TrainConfig) -> bool:
    """Whether `wanted` has a choice to make (not --few-labels off, not distillation)."""
    return config.few_labels != "off" and not config.teacher


def wanted(config: TrainConfig, dataset: data.Dataset) -> bool:
    """Whether this run fits the few-label classifier: `on`, or `auto` with too few labels to fine-tune well.
    `dataset` is the run's data as `data.load` reads it (`train` reads it once, for either path)."""
    if not considered(config):
        return False
    rarest = int(labels_per_class(config, dataset).min())
    if config.few_labels == "on":
        return True
    return rarest < FEW_LABELS_PER_CLASS and sentence_encoder(config.model)


def sentence_encoder(model: str) -> bool:
    """Whether the encoder can take the mean-pooling layer (BERT architecture); others are fine-tuned."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(catalogue.resolve_model(model))).model_type == "bert"


def fit(
    config: TrainConfig,
    log: Callable[[str], None] | None = None,
    dataset: data.Dataset | None = None,
    progress: bool = True,
) -> Path:
    """Build, fit and save the few-label classifier as `config` says; returns its folder. Launched as several
    processes (torchrun), all of them tune the encoder on pairs (the training loop), then the first fits the
    regression and the others wait for it: seconds of work, not worth sharing. Where the first fails, every process
    stops with its error (none is left waiting)."""
    dist = Distributed(config.device)
    say = speaker(log, dist.main)
    output = Path(config.output)
    try:
        dist.open_output(output, say)
        if modeling.run_complete(output):
            say(
                f"{output} holds a finished model; nothing to do. Use another --output, or delete the folder to "
                "run again"
            )
            return output
        tuned = pair_tuning.tune(config, log, dataset, progress) if config.pair_epochs else None
        failure = None
        if dist.main:
            try:
                fit_once(config, say, dataset, tuned, progress)
            except Exception as error:
                failure = error
        first_failure = dist.gather(None if failure is None else f"{type(failure).__name__}: {failure}")[0]
        if failure is not None:
            raise failure
        if first_failure is not None:
            raise RuntimeError(f"the first process could not fit the few-label classifier ({first_failure})")
    finally:
        dist.close()
    return output


def fit_once(
    config: TrainConfig,
    say: Callable[[str], None],
    dataset: data.Dataset | None,
    tuned: Path | None,
    progress: bool = False,
) -> None:
    """The fit itself, in one process: inputs, the tuned encoder (`tuned`: the pair stage's folder), the mean layer,
    the regression as the head, save, calibrate."""
    started = time.perf_counter()
    output = Path(config.output)
    config.save(output / "train_config.json")
    inputs = load_inputs(config, say, dataset=dataset)
    mean_pooling.require(inputs.model, config.model)
    counts = np.bincount(inputs.targets["labels"].numpy(), minlength=len(inputs.dataset.labels))
    body = "the tuned" if tuned else "the"
    reads = config.long_reviews or LONG_REVIEWS
    say(
        f"few labels ({', '.join(f'{n} {name}' for name, n in zip(inputs.dataset.labels, counts))}): a logistic "
        f"regression on {body} {config.model}'s mean embedding instead of fine-tuning ("
        + (f"below {FEW_LABELS_PER_CLASS} per class; " if config.few_labels == "auto" else "--few-labels on; ")
        + "--few-labels off fine-tunes); "
        + (
            "it reads long reviews whole, through windows (--long-reviews truncate: half the scoring compute)"
            if reads == "windows"
            else "it cuts long reviews to the window"
        )
    )
    stage = pair_tuning.load_tuned(inputs.model, tuned) if tuned else None
    machine = Machine.choose(config, modeling.resolve_device(config.device))
    model = inputs.model.to(machine.device).eval()
    mean_pooling.append_mean_layer(model)
    weight, bias = fit_head(model, inputs, machine)
    mean_pooling.set_head(model, torch.from_numpy(weight).float(), torch.from_numpy(bias).float())
    seconds = time.perf_counter() - started + ((stage or {}).get("seconds") or 0.0)
    method = {
        "method": "logistic regression on the " + ("pair-tuned " if tuned else "") + "mean embedding",
        "labels_per_class": {name: int(n) for name, n in zip(inputs.dataset.labels, counts)},
        "regularisation": REGULARISATION,
        "threshold_per_class": FEW_LABELS_PER_CLASS,
        **({"pair_tuning": stage} if stage else {}),
    }
    record = dataclasses.replace(
        run_record(config, inputs, long_reviews=LONG_REVIEWS, pool=LONG_REVIEW_POOL),
        few_labels=method,
        selected="fitted (few labels)",
        train_seconds=seconds,
    )
    modeling.save(model, inputs.tokenizer, output, record)
    probs, labels = final_save.calibrate_and_record(config, output, inputs, machine, say, progress)
    accuracy = float((probs.argmax(axis=1) == labels).mean())
    modeling.update_record(output, validation={"accuracy": accuracy, "rows": len(labels)}, complete=True)
    if tuned:  # its encoder is in the model now; its record in critic.json
        shutil.rmtree(tuned, ignore_errors=True)
    say(f"fitted in {seconds:.0f} s; validation accuracy {accuracy:.4f} on {len(labels):,} reviews; model in {output}")


def fit_head(model, inputs: Inputs, machine: Machine) -> tuple[np.ndarray, np.ndarray]:
    """The logistic regression on the model's own pooled features of the training reviews, as a head's weight and
    bias: one row per class (scikit-learn keeps one row for two classes, the second class's logit against 0)."""
    from sklearn.linear_model import LogisticRegression

    features = pooled_features(model, inputs.train, inputs.encoder.pad_id, machine)
    labels = inputs.targets["labels"].numpy()
    weights = None if inputs.class_weights is None else inputs.class_weights.numpy()[labels]  # --class-weights
    regression = LogisticRegression(C=REGULARISATION, max_iter=5000)
    fitted = regression.fit(features / mean_pooling.EPSILON, labels, sample_weight=weights)
    if len(fitted.classes_) == 2:
        return np.vstack([np.zeros_like(fitted.coef_), fitted.coef_]), np.array([0.0, fitted.intercept_[0]])
    return fitted.coef_, fitted.intercept_


def pooled_features(model, reviews, pad_id: int, machine: Machine) -> np.ndarray:
    """What the classification head reads, review by review (the pooler's output)."""
    scorer, autocast = modeling.inference_model(model, machine.precision, machine.device)

    @torch.inference_mode()
    def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with modeling.autocast(machine.device, autocast):
            return scorer.bert(**modeling.device_batch(scorer, batch, machine.device)).pooler_output.float()

    return modeling.logits(forward, reviews, pad_id, model.config.hidden_size, pad_multiple=machine.multiple)
