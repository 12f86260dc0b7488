"""Pair tuning (SetFit's contrastive stage, in the training loop): the objective, an encoder that learns from the
pairs of a few labelled reviews, and a stage that is not done twice when the fit after it fails."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_few_labels import few_label_file

from critic import config
from critic.training import few_labels, pair_tuning, train


def test_the_pair_objective_is_zero_for_classes_apart_and_counts_both_kinds_of_pair_alike():
    labels = {"labels": torch.tensor([0, 0, 1, 1])}
    apart = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])  # one class a direction, two orthogonal
    assert pair_tuning.pair_loss(apart, labels).item() == pytest.approx(0.0, abs=1e-6)
    together = torch.ones(4, 2)  # every cosine 1: the four pairs of two classes are all wrong, the two alike right
    assert pair_tuning.pair_loss(together, labels).item() == pytest.approx(0.5 * 1.0 * 4)  # half, times the rows
    one_class = pair_tuning.pair_loss(torch.randn(3, 2), {"labels": torch.tensor([1, 1, 1])})
    assert torch.isfinite(one_class)  # a batch without pairs of two classes


def within_minus_across(model_folder, path) -> float:
    """The mean cosine of two training reviews of one class minus that of two of different classes."""
    from critic.inference.predict import Classifier

    classifier = Classifier.load(model_folder, precision="fp32")
    frame = pd.read_csv(path).query("split == 'train'")
    scorer = classifier.model
    batch = classifier.tokenizer(frame["text"].tolist(), padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        pooled = torch.nn.functional.normalize(scorer.bert(**batch).pooler_output, dim=-1)
    cosine = (pooled @ pooled.T).numpy()
    same = frame["label"].to_numpy()[:, None] == frame["label"].to_numpy()[None, :]
    off_diagonal = ~np.eye(len(frame), dtype=bool)
    return float(cosine[same & off_diagonal].mean() - cosine[~same].mean())


def test_pair_tuning_draws_the_reviews_of_a_class_together(tmp_path, tiny_bert, monkeypatch):
    monkeypatch.setattr(pair_tuning, "LEARNING_RATE", 1e-3)  # a random tiny encoder in 20 steps: a tiny model's rate
    path, _ = few_label_file(tmp_path, per_class=8)
    settings = dict(model=str(tiny_bert), data=str(path), max_length=48, device="cpu")
    frozen = train.train(
        config.build({**settings, "pair_epochs": 0, "output": str(tmp_path / "frozen")}), progress=False
    )
    tuned = train.train(
        config.build({**settings, "pair_epochs": 20, "output": str(tmp_path / "tuned")}), progress=False
    )
    record = json.loads((tuned / "critic.json").read_text())["few_labels"]
    assert record["method"] == "logistic regression on the pair-tuned mean embedding"
    losses = record["pair_tuning"]["pair_loss_per_epoch"]
    assert len(losses) == 20 and losses[-1] < 0.7 * losses[0]
    assert within_minus_across(tuned, path) > within_minus_across(frozen, path) + 0.05
    assert "pair_tuning" not in json.loads((frozen / "critic.json").read_text())["few_labels"]
    assert not (tuned / pair_tuning.FOLDER).exists()  # its encoder is the model's now


def test_a_fit_that_fails_after_the_pair_stage_keeps_the_stage_for_the_next_run(tmp_path, tiny_bert, monkeypatch):
    path, _ = few_label_file(tmp_path, per_class=8)
    settings = dict(model=str(tiny_bert), data=str(path), max_length=48, device="cpu", pair_epochs=2)
    run = config.build({**settings, "output": str(tmp_path / "model")})
    fit_head = few_labels.fit_head

    def failing(*args):
        raise MemoryError("the disk or the memory ran out")

    monkeypatch.setattr(few_labels, "fit_head", failing)
    first = []
    with pytest.raises(MemoryError):
        train.train(run, log=first.append, progress=False)
    assert any(line.startswith("pair stage: lr 5e-05 (not 0.0001)") for line in first)  # the override is said
    stage = tmp_path / "model" / pair_tuning.FOLDER
    assert (stage / pair_tuning.ENCODER_FILE).is_file()
    monkeypatch.setattr(few_labels, "fit_head", fit_head)
    said = []
    folder = train.train(run, log=said.append, progress=False)
    assert any("holds a finished run" in line for line in said) and not any("pair tuning:" in line for line in said)
    assert json.loads((folder / "critic.json").read_text())["few_labels"]["pair_tuning"]["steps"] == 2


def test_an_encoder_without_the_mean_layer_is_named_before_the_pair_stage(tmp_path, tiny_distilbert):
    path, _ = few_label_file(tmp_path, per_class=4)
    settings = dict(model=str(tiny_distilbert), data=str(path), few_labels="on", output=str(tmp_path / "m"))
    with pytest.raises(ValueError, match="is a distilbert encoder; few-label training needs a BERT-architecture"):
        train.train(config.build(settings), progress=False)
    assert not (tmp_path / "m" / pair_tuning.FOLDER / "checkpoint").exists()  # no step taken
