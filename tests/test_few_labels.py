"""Few labels: the mean-pooling layer is the mean, the fitted head learns from a handful of reviews, and the folder
is a standard classifier that transformers.pipeline reads as critic does; bad few-label files are named."""

import json

import numpy as np
import pandas as pd
import pytest
import synthetic
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from critic import config, data
from critic.data import DataError
from critic.inference.predict import Classifier
from critic.modeling import abstention, mean_pooling
from critic.training import few_labels, train


def few_label_file(folder, per_class: int, validation: int = 100, test: int = 200):
    """`per_class` training reviews per class, then validation and test reviews, kept apart by a split column."""
    reviews = synthetic.reviews(2 * per_class + validation + test, seed=5)
    reviews["label"] = np.where(reviews["label"] == 1, "positive", "negative")
    reviews["split"] = ["train"] * (2 * per_class) + ["validation"] * validation + ["test"] * test
    path = folder / "few.csv"
    reviews.to_csv(path, index=False)
    return path, reviews[reviews["split"] == "test"]


def test_the_appended_layer_computes_the_layer_normed_mean_of_the_token_vectors(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    batch = tokenizer(["a great fun film and the plot", "dull"], padding=True, return_tensors="pt")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).eval()
    with torch.no_grad():
        tokens = AutoModel.from_pretrained(tiny_bert)(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        mean = (tokens * mask).sum(1) / mask.sum(1)  # padding left out, [CLS] and [SEP] in, as sentence encoders do
        mean_pooling.append_mean_layer(model)
        pooled = model.bert(**batch).pooler_output / mean_pooling.EPSILON
    assert model.config.num_hidden_layers == 3
    expected = torch.nn.functional.layer_norm(mean, (mean.shape[-1],))
    assert torch.allclose(pooled, expected, atol=0.02 * expected.abs().max())


def test_few_labels_fit_a_head_that_learns_and_every_consumer_reads(tmp_path, tiny_bert, monkeypatch):
    from transformers import pipeline

    monkeypatch.setattr(few_labels, "REGULARISATION", 1.0)  # weak enough to separate the 16 training reviews
    path, test = few_label_file(tmp_path, per_class=8)
    settings = dict(model=str(tiny_bert), data=str(path), max_length=48, output=str(tmp_path / "model"), device="cpu")
    folder = train.train(config.build(settings), progress=False)
    meta = json.loads((folder / "critic.json").read_text())
    assert meta["few_labels"]["labels_per_class"] == {"negative": 8, "positive": 8} and meta["complete"] is True
    assert "abstention" in meta and meta["calibration"]["rows"] == 100
    classifier = Classifier.load(folder, precision="fp32")
    trained_on = pd.read_csv(path).query("split == 'train'")
    # 16 reviews in the tiny model's 32 dimensions: the regression separates them, and the saved head does too (a
    # random tiny encoder's mean says little of new reviews; tests/test_integration.py measures MiniLM on IMDB)
    assert classifier.predict(trained_on["text"].tolist()) == trained_on["label"].tolist()
    texts = test["text"].tolist()[:5]
    theirs = pipeline("text-classification", model=str(folder), top_k=None, device="cpu")(texts)
    theirs = np.array([[next(s["score"] for s in row if s["label"] == n) for n in classifier.labels] for row in theirs])
    assert np.abs(classifier.predict_proba(texts) - theirs).max() < 1e-4
    off = train.train(
        config.build({**settings, "few_labels": "off", "output": str(tmp_path / "tuned")}), progress=False
    )
    fine_tuned = json.loads((off / "critic.json").read_text())
    assert "few_labels" not in fine_tuned  # --few-labels off fine-tunes
    assert fine_tuned["long_reviews"]["mode"] == "truncate"  # and a fine-tuned model cuts long reviews by default
    assert fine_tuned["long_reviews"]["pool"] == "max-confidence"  # (its pool where asked for windows)


def test_a_few_label_model_reads_long_reviews_whole_and_its_thresholds_are_measured_so(tmp_path, tiny_bert):
    path, _ = few_label_file(tmp_path, per_class=8)
    validation = pd.read_csv(path).query("split == 'validation'")
    settings = dict(model=str(tiny_bert), data=str(path), max_length=12, pair_epochs=0, device="cpu", precision="fp32")
    folder = train.train(config.build({**settings, "output": str(tmp_path / "model")}), progress=False)
    meta = json.loads((folder / "critic.json").read_text())
    assert meta["long_reviews"]["mode"] == "windows" and meta["long_reviews"]["pool"] == "mean-prob"
    windowed = Classifier.load(folder, precision="fp32")
    assert (windowed.long_reviews.mode, windowed.long_reviews.pool) == ("windows", "mean-prob")
    labels = np.array([windowed.labels.index(name) for name in validation["label"]])
    # most reviews are longer than 12 tokens: the windows' probabilities are not the truncated ones, and the curve
    # that --min-accuracy reads is the windows' (as `critic predict` answers by default)
    whole = abstention.record(windowed.predict_proba(validation["text"].tolist()), labels)["curve"]
    cut = Classifier.load(folder, precision="fp32", long_reviews="truncate").predict_proba(validation["text"].tolist())
    assert abstention.record(cut, labels)["curve"]["threshold"] != pytest.approx(whole["threshold"], abs=1e-4)
    assert meta["abstention"]["curve"]["threshold"] == pytest.approx(whole["threshold"], abs=1e-4)
    assert meta["abstention"]["curve"]["errors"] == whole["errors"]
    chosen = train.train(
        config.build(
            {**settings, "long_reviews": "truncate", "window_pool": "mean-logit", "output": str(tmp_path / "cut")}
        ),
        progress=False,
    )
    assert json.loads((chosen / "critic.json").read_text())["long_reviews"] == {
        "mode": "truncate",
        "stride": None,
        "pool": "mean-logit",
    }


def test_few_labels_by_themselves_only_with_a_sentence_encoder_and_by_the_data_not_train_size(
    tmp_path, tiny_bert, tiny_distilbert
):
    path, _ = few_label_file(tmp_path, per_class=8)
    distilbert = dict(model=str(tiny_distilbert), data=str(path), max_length=48, output=str(tmp_path / "d"))
    few = data.load(path)
    assert not few_labels.wanted(config.build(distilbert), few)  # no mean-pooling layer for it: fine-tuned as before
    toy = tmp_path / "toy.csv"
    synthetic.reviews(1000).to_csv(toy, index=False)  # 400 training reviews per class, 20 of them asked for
    assert not few_labels.wanted(config.build(dict(model=str(tiny_bert), data=str(toy), train_size=40)), data.load(toy))
    assert few_labels.wanted(config.build(dict(model=str(tiny_bert), data=str(path))), few)


def test_a_class_with_one_labelled_review_is_named(tmp_path, tiny_bert):
    path, _ = few_label_file(tmp_path, per_class=4)
    frame = pd.read_csv(path)
    frame = frame.drop(index=frame[(frame["split"] == "train") & (frame["label"] == "positive")].index[1:])
    frame.to_csv(path, index=False)
    settings = dict(model=str(tiny_bert), data=str(path), output=str(tmp_path / "model"), device="cpu")
    with pytest.raises(DataError, match="the class 'positive' has 1 labelled training review"):
        train.train(config.build(settings), progress=False)


def test_class_weights_weigh_the_few_label_regression_as_they_weigh_fine_tuning(tmp_path, tiny_bert):
    from critic.training.inputs import load_inputs
    from critic.training.step import Machine

    path, _ = few_label_file(tmp_path, per_class=8)

    def positives(class_weights: str) -> int:
        settings = dict(model=str(tiny_bert), data=str(path), max_length=48, device="cpu", precision="fp32")
        settings["class_weights"] = class_weights
        run = config.build(settings)
        inputs = load_inputs(run, say=lambda line: None)
        model, machine = inputs.model.eval(), Machine.choose(run, torch.device("cpu"))
        mean_pooling.append_mean_layer(model)
        weight, bias = few_labels.fit_head(model, inputs, machine)
        features = few_labels.pooled_features(model, inputs.train, inputs.encoder.pad_id, machine)
        return int(((features / mean_pooling.EPSILON @ weight.T + bias).argmax(axis=1) == 1).sum())

    assert positives("positive=20") == 16 > positives("none")  # all 16 training reviews called positive
