"""Any label set: star ratings and three-way sentiment through the whole path, class weights, stratified splits, and
Hugging Face classifiers that critic did not train."""

import json

import numpy as np
import pandas as pd
import pytest
import synthetic
import torch

import critic
from critic import config, data
from critic.cli import main
from critic.data import Columns, DataError
from critic.inference.predict import Classifier
from critic.training import fine_tuning, inputs, train

THREE_WAY = "1=negative,2=negative,3=neutral,4=positive,5=positive"


@pytest.fixture(scope="module")
def stars_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("stars") / "stars.csv"
    synthetic.stars(1500).to_csv(path, index=False)
    return path


def fit(model, data_path, output, **extra):
    settings = dict(
        model=str(model),
        data=str(data_path),
        preset="gpu",
        max_length=32,
        epochs=4,
        batch_size=16,
        lr=5e-3,
        device="cpu",
        output=str(output),
    )
    return train.train(config.build({**settings, **extra}), progress=False)


@pytest.fixture(scope="module")
def five_star(tmp_path_factory, tiny_bert, stars_csv):
    return fit(tiny_bert, stars_csv, tmp_path_factory.mktemp("five") / "model")


@pytest.fixture(scope="module")
def three_way(tmp_path_factory, tiny_distilbert, stars_csv):
    # A tiny random BERT could sit at 60% validation accuracy for every epoch: its tanh pooler saturates, and every
    # review but the neutral ones maps to one point. Whether it did depended on the seed and the arithmetic (seed 42
    # left the plateau on a Zen 4 and never on a Zen 3; seeds 1, 4 and 7 stayed there on the Zen 3 at lr 1-3e-3,
    # with warm-up too). DistilBERT has no tanh pooler: at lr 2e-3 the tiny one reached 100% by the 3rd epoch for
    # seeds 42 and 1-12, with one thread and with two (AMD EPYC Zen 3, 2026-12-07).
    model = tmp_path_factory.mktemp("three") / "model"
    return fit(
        tiny_distilbert, stars_csv, model, label_map=THREE_WAY, class_weights="balanced", epochs=6, lr=2e-3, dropout=0.0
    )


# ------------------------------------------------------------------------------------------ reading labels


def test_star_ratings_are_classes_in_numeric_order(tmp_path):
    path = tmp_path / "r.csv"
    pd.DataFrame({"text": ["a", "b", "c", "d"], "rating": [10, 2, 1, 2]}).to_csv(path, index=False)
    frame, report = data.read_table(path, Columns(label="rating"))
    assert report.labels == ["1", "2", "10"] and frame["label"].tolist() == [2, 1, 0, 1]
    assert data.is_ordered(("1", "2", "10")) and not data.is_ordered(("negative", "neutral", "positive"))
    parquet = tmp_path / "r.parquet"
    pd.DataFrame({"text": ["a", "b"], "label": [4.0, 5.0]}).to_parquet(parquet)  # a float column reads as stars
    assert data.read_table(parquet)[1].labels == ["4", "5"]


def test_labels_fix_the_order_and_refuse_other_values(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("text,label\na,low\nb,high\nc,mid\nd,huge\n")
    with pytest.raises(DataError) as error:
        data.read_table(path, Columns(labels=("low", "mid", "high")))
    assert f"{path}, line 5: unknown label 'huge' in column 'label' (expected one of: low, mid, high" in str(
        error.value
    )
    frame, report = data.read_table(path, Columns(labels=("low", "mid", "high")), drop_invalid=True)
    assert report.labels == ["low", "mid", "high"] and frame["label"].tolist() == [0, 2, 1]


def test_a_third_sentiment_class_is_named_not_guessed(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("text,label\na,positive\nb,neutral\nc,negative\n")
    with pytest.raises(DataError, match="unknown label 'neutral'.*--labels"):
        data.read_table(path)
    frame, report = data.read_table(path, data.columns_of({"labels": "negative,neutral,positive"}))
    assert report.labels == ["negative", "neutral", "positive"] and frame["label"].tolist() == [2, 1, 0]


def test_a_value_many_rows_hold_beside_binary_spellings_is_a_class_and_a_rare_one_an_error(tmp_path):
    path = tmp_path / "r.csv"
    rows = [("great", "good")] * 12 + [("awful", "bad")] * 12 + [("so-so", "mixed")] * 10
    path.write_text("text,label\n" + "".join(f"{text} {i},{label}\n" for i, (text, label) in enumerate(rows)))
    frame, report = data.read_table(path)
    assert report.labels == ["negative", "mixed", "positive"]
    assert frame["label"].tolist() == [2] * 12 + [0] * 12 + [1] * 10
    with path.open("a") as file:  # one row of 35 holds 'meh': a typo, not a class
        file.write("fine,meh\n")
    with pytest.raises(DataError, match=f"{path}, line 36: unknown label 'meh'"):
        data.read_table(path)
    numbered = tmp_path / "n.csv"
    numbered.write_text("text,label\n" + "".join(f"r{i},{i % 3}\n" for i in range(60)))
    frame, report = data.read_table(numbered)
    assert report.labels == ["0", "1", "2"] and frame["label"].tolist()[:3] == [0, 1, 2]


def test_three_way_map_from_stars_and_a_single_class_is_refused(tmp_path):
    path = tmp_path / "r.csv"
    synthetic.stars(50).to_csv(path, index=False)
    frame, report = data.read_table(path, Columns(label_map=data.parse_label_map(THREE_WAY)))
    assert report.labels == ["negative", "neutral", "positive"]
    raw = synthetic.stars(50)["stars"].to_numpy()
    assert frame["label"].tolist() == [0 if s <= 2 else 1 if s == 3 else 2 for s in raw]
    path.write_text("text,label\na,5\nb,5\n")
    with pytest.raises(DataError, match="needs at least two classes"):
        data.read_table(path)


def test_stratified_split_keeps_a_rare_class_in_every_split(tmp_path):
    path = tmp_path / "rare.csv"
    synthetic.stars(1000, shares=(0.47, 0.03, 0.0, 0.0, 0.5)).to_csv(path, index=False)
    dataset = data.load(path)
    assert dataset.labels == ("1", "2", "5")
    classes = {name: split["classes"] for name, split in dataset.manifest["splits"].items()}
    rare = sum(c["2"] for c in classes.values())
    for name in ("validation", "test"):
        assert classes[name]["2"] == pytest.approx(0.1 * rare, abs=1)
    summary = critic.profile_dataset(path, tokenizer=None)
    assert summary["label_balance"]["2"] == rare and summary["rare_classes"][0].startswith("class '2' has")


def test_class_weights():
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    balanced = inputs.class_weights("balanced", labels, ("a", "b", "c"))
    assert torch.allclose(balanced, torch.tensor([100 / 240, 100 / 45, 100 / 15]))
    assert inputs.class_weights("none", labels, ("a", "b", "c")) is None
    assert inputs.class_weights("c=4", labels, ("a", "b", "c")).tolist() == [1, 1, 4]
    with pytest.raises(ValueError, match="no class 'd'; the classes are a, b, c"):
        inputs.class_weights("d=2", labels, ("a", "b", "c"))
    weighted = fine_tuning.ClassificationLoss(class_weights=torch.tensor([1.0, 3.0]))
    logits, target = torch.zeros(2, 2), torch.tensor([0, 1])
    assert torch.allclose(weighted(logits, {"labels": target}), torch.log(torch.tensor(2.0)) * 4)


# ------------------------------------------------------------------------------------------ the whole path


def test_five_star_model_trains_evaluates_predicts_and_explains(five_star, stars_csv, tmp_path):
    meta = json.loads((five_star / "critic.json").read_text())
    assert meta["labels"] == ["1", "2", "3", "4", "5"] and meta["ordered"] is True
    assert meta["history"][-1]["val_accuracy"] > 0.9 and 0.9 < meta["history"][-1]["val_auc"] <= 1
    summary = critic.evaluate_model(five_star, stars_csv, "test")
    assert summary["accuracy"] > 0.9 and summary["top2_accuracy"] >= summary["accuracy"]
    assert summary["within_one"] >= summary["accuracy"] and summary["mean_absolute_error"] < 0.2
    assert len(summary["confusion_matrix"]) == 5 and summary["roc_auc"] > 0.95
    assert np.allclose(np.asarray(summary["confusion_matrix_normalized"]).sum(1), 1)
    assert summary["baseline"]["accuracy"] > 0.5  # TF-IDF on the same rows, five classes
    html = (five_star / "evaluation" / "evaluation.html").read_text()
    assert "top-2 accuracy" in html and "one vs rest" in html and html.count("<svg") == 6
    assert "Accuracy against coverage" in html  # the sixth: what --min-accuracy would answer
    classifier = Classifier.load(five_star)
    assert classifier.predict(["the best superb film", "worst terrible hated it", "bad dull plot"]) == ["5", "1", "2"]
    assert classifier.predict_proba(["a good fun film"]).shape == (1, 5)
    from critic.inference.explain import explain

    towards_five = explain(classifier, "the best film", steps=8, target="5")
    assert towards_five.label == "5" and max(towards_five.words, key=lambda w: w["score"] or -9)["word"] == "best"
    with pytest.raises(ValueError, match="no class '6'"):
        explain(classifier, "the best film", steps=8, target="6")
    source = tmp_path / "in.csv"
    pd.DataFrame({"text": ["the best superb film", "bad dull"]}).to_csv(source, index=False)
    assert main(["predict", str(five_star), "--file", str(source)]) == 0
    scored = pd.read_csv(tmp_path / "in.scored.csv")
    assert [c for c in scored.columns if c.startswith("p_")] == ["p_1", "p_2", "p_3", "p_4", "p_5"]
    assert scored["label"].astype(str).tolist() == ["5", "2"]


def test_three_way_model_with_class_weights_serves(three_way, stars_csv):
    from fastapi.testclient import TestClient

    from critic.serve import ServeSettings, create_app

    meta = json.loads((three_way / "critic.json").read_text())
    assert meta["labels"] == ["negative", "neutral", "positive"] and meta["ordered"] is False
    assert meta["config"]["class_weights"] == "balanced" and meta["history"][-1]["val_accuracy"] > 0.9
    summary = critic.evaluate_model(three_way, stars_csv, "test", baseline=False)
    assert summary["per_class"]["neutral"]["recall"] > 0.8 and "within_one" not in summary
    with TestClient(create_app(Classifier.load(three_way), ServeSettings(max_batch=1))) as client:
        answer = client.post("/v1/predict", json={"text": "not ever ! film"}).json()["predictions"][0]
        assert answer["label"] == "neutral" and set(answer["probabilities"]) == {"negative", "neutral", "positive"}
        explained = client.post("/v1/explain", json={"text": "the best film", "label": "negative"})
        assert explained.status_code == 200 and explained.json()["label"] == "negative"
        assert client.post("/v1/explain", json={"text": "the best film", "label": "great"}).status_code == 422


# ------------------------------------------------------------------------------------------ foreign classifiers


@pytest.fixture(scope="module", params=[2, 3])
def foreign(request, tmp_path_factory, tiny_bert):
    """A Hugging Face classifier critic did not train: a tiny BERT with its own label names, no critic.json."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    names = {2: ["NEG", "POS"], 3: ["bad", "meh", "good"]}[request.param]
    folder = tmp_path_factory.mktemp(f"foreign-{request.param}")
    torch.manual_seed(request.param)
    model = BertForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    )
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    tokenizer.model_max_length = 24  # short, so that truncation is exercised
    tokenizer.save_pretrained(folder)
    return folder, names


def test_a_foreign_classifier_scores_as_the_pipeline_does(foreign, capsys):
    from transformers import pipeline

    folder, names = foreign
    texts = ["the film was great", " ".join(["a very boring plot and the acting was dull"] * 6), "fun <br /> film"]
    classifier = Classifier.load(folder, precision="fp32")
    assert classifier.labels == names and classifier.record.foreign and classifier.cleaning == "none"
    ours = classifier.predict_proba(texts)
    theirs = pipeline("text-classification", model=str(folder), top_k=None, device="cpu")(texts, truncation=True)
    theirs = np.array([[next(s["score"] for s in row if s["label"] == name) for name in names] for row in theirs])
    assert np.abs(ours - theirs).max() < 1e-5
    assert main(["predict", str(folder), "the film was great"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in names
    assert not (folder / "critic.json").exists()  # the user's folder is left as it was


def test_a_foreign_classifier_is_evaluated_on_its_own_labels(foreign, tmp_path):
    folder, names = foreign
    path = tmp_path / "labelled.csv"
    pd.DataFrame(
        {"text": [f"review {i}" for i in range(60)], "label": [names[i % len(names)] for i in range(60)]}
    ).to_csv(path, index=False)
    summary = critic.evaluate_model(folder, path, "all", output=tmp_path / "ev", baseline=False)
    assert summary["labels"] == names and summary["rows"] == 60
    assert not (folder / "critic.json").exists()


def test_a_multi_label_model_is_refused(tmp_path, tiny_bert):
    from transformers import BertForSequenceClassification

    BertForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=3, problem_type="multi_label_classification"
    ).save_pretrained(tmp_path / "m")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="a multi-label model"):
        Classifier.load(tmp_path / "m")
