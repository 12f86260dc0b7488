"""The cascade: a cheap stage answers the reviews it is sure of within a margin of the model's accuracy, and
everything else is the model's answer, exactly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from critic.cli import main
from critic.inference import cascade
from critic.inference.predict import Classifier
from critic.modeling.record import ModelRecord


def test_the_threshold_keeps_the_cascade_within_the_margin_with_confidence():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 4000)
    model = np.eye(2)[labels] * 0.9 + 0.05  # the model is always right
    confidence = rng.uniform(0.5, 1.0, 4000)
    right = rng.uniform(size=4000) < np.where(confidence > 0.9, 0.9995, 0.7)  # sure: almost always right
    predicted = np.where(right, labels, 1 - labels)
    cheap = np.zeros((4000, 2))
    cheap[np.arange(4000), predicted] = confidence
    cheap[np.arange(4000), 1 - predicted] = 1 - confidence
    chosen = cascade.choose_threshold(cheap, model, labels, margin=0.002)
    assert 0.89 <= chosen["threshold"] and 0.1 < chosen["coverage"] <= 0.21  # the sure ones, few beyond
    assert chosen["model_accuracy"] - chosen["cascade_accuracy"] <= 0.002 and chosen["lost_bound"] <= 0.002
    assert chosen["cheap_accuracy"] < chosen["model_accuracy"] == 1.0
    always_wrong = np.eye(2)[1 - labels] * 0.98 + 0.01
    assert cascade.choose_threshold(always_wrong, model, labels)["threshold"] is None


def test_a_model_that_the_cheap_stage_outscores_is_told_so():
    weak = cascade.weaker_than_cheap({"cheap_accuracy": 0.9184, "model_accuracy": 0.8763}, 39717)
    assert weak.startswith("note: the cheap stage alone (TF-IDF on 39,717 training reviews) scores 91.84%")
    assert "the model's 87.63%" in weak
    assert cascade.weaker_than_cheap({"cheap_accuracy": 0.9, "model_accuracy": 0.93}, 39717) is None


def test_the_cheap_stage_kept_as_arrays_answers_as_scikit_learn_does(tmp_path):
    import synthetic
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    frame = synthetic.stars(300, seed=1)
    texts, labels = frame["review"].tolist(), frame["stars"].to_numpy() - 1
    stage = cascade.CheapStage.fit(texts, labels, 5)
    stage.threshold = 0.8
    stage.save(tmp_path / "cascade", {})
    again = cascade.CheapStage.load(tmp_path / "cascade")
    reference = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_df=0.95, sublinear_tf=True),
        LogisticRegression(C=10.0, max_iter=1000),
    ).fit(texts, labels)
    assert np.allclose(again.predict_proba(texts[:50]), reference.predict_proba(texts[:50]), atol=1e-4)
    assert again.threshold == 0.8
    assert again.vectorizer() is again.vectorizer()  # its vocabulary checked once, not at every batch


def test_with_a_cascade_every_answer_is_one_stages_and_without_it_the_model_alone_exactly(own_toy_model, capsys):
    chosen = cascade.fit(own_toy_model, margin=0.05)
    assert chosen["threshold"] is not None and chosen["coverage"] > 0
    assert json.loads((own_toy_model / "critic.json").read_text())["cascade"]["threshold"] == chosen["threshold"]
    texts = review_texts(own_toy_model)
    alone = Classifier.load(own_toy_model, backend="torch", precision="fp32", cascade=False)
    both = Classifier.load(own_toy_model, backend="torch", precision="fp32")  # where there is one, by default
    assert alone.cheap_stage is None and both.cheap_stage is not None
    model = alone.predict_proba(texts)
    probs, cheap = both.answer(texts)
    assert np.array_equal(probs[~cheap], model[~cheap])  # the rest: the model's, exactly
    assert np.allclose(probs[cheap], both.cheap_stage.predict_proba([texts[i] for i in np.flatnonzero(cheap)]))
    assert 0 < cheap.sum() < len(texts) and (probs[cheap].max(axis=1) >= chosen["threshold"]).all()
    assert main(["predict", str(own_toy_model), *texts[170:190], "--backend", "torch"]) == 0
    assert "(cheap stage)" in capsys.readouterr().out
    assert main(["predict", str(own_toy_model), *texts[170:190], "--backend", "torch", "--cascade", "off"]) == 0
    assert "(cheap stage)" not in capsys.readouterr().out


def review_texts(model_dir) -> list[str]:
    texts = pd.read_csv(model_dir.parent / "toy.csv")["text"].tolist()[:180]
    return texts + [f"the film was a movie and it is the story {i}" for i in range(20)]  # no sentiment: not sure


def test_a_file_the_server_and_min_accuracy_answer_through_the_cascade(own_toy_model, tmp_path):
    from fastapi.testclient import TestClient

    from critic.inference.files import predict_file
    from critic.modeling import abstention
    from critic.serve.app import create_app
    from critic.serve.settings import ServeSettings

    cascade.fit(own_toy_model, margin=0.05)
    both = Classifier.load(own_toy_model, backend="torch", precision="fp32")
    texts = review_texts(own_toy_model)
    probs, cheap = both.answer(texts)
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "in.csv", index=False)
    predict_file(both, tmp_path / "in.csv", tmp_path / "out.csv", chunk=64, progress=False, min_accuracy=0.9)
    scored = pd.read_csv(tmp_path / "out.csv")
    assert np.allclose(scored[["p_negative", "p_positive"]].to_numpy(), probs, atol=1e-6)
    assert scored["stage"].tolist() == ["cheap" if by_cheap else "model" for by_cheap in cheap]  # which one answered
    # the guarantee is chosen on the cascade's own answers to the validation split, not on the model's
    kept = both.cheap_stage.abstention
    assert both.threshold(0.9) == abstention.threshold(kept["curve"], 0.9, kept["level"])
    expected = abstention.answers(probs, both.labels, both.unsure_below(0.9))
    assert scored["label"].tolist() == expected == both.predict(texts, min_accuracy=0.9)
    with TestClient(create_app(both, ServeSettings(max_batch=1))) as client:
        stages = [
            client.post("/v1/predict", json={"text": text}).json()["predictions"][0]["stage"] for text in texts[170:]
        ]
        upload = pd.DataFrame({"text": texts[170:]}).to_csv(index=False)
        sheet = client.post("/v1/score-csv", content=upload, headers={"content-type": "text/csv"}).text
        metrics = client.get("/metrics").text
    assert stages == ["cheap" if by_cheap else "model" for by_cheap in cheap[170:]]
    assert pd.read_csv(io.StringIO(sheet))["stage"].tolist() == stages  # the upload says it too
    assert 0 < cheap[170:].sum() < 30  # both stages answered
    assert f'critic_answers_total{{stage="cheap"}} {float(2 * cheap[170:].sum())}' in metrics
    assert f'critic_answers_total{{stage="model"}} {float(2 * (30 - cheap[170:].sum()))}' in metrics


def test_the_server_answers_what_the_cheap_stage_is_sure_of_while_the_model_is_busy(own_toy_model, monkeypatch):
    """A review the cheap stage answers does not queue behind the model's batch: here the model is held on a hard
    review, and a sure one is still answered (before, it waited in the micro-batcher until its 504)."""
    import threading

    from fastapi.testclient import TestClient

    from critic.serve.app import create_app
    from critic.serve.settings import ServeSettings

    cascade.fit(own_toy_model, margin=0.05)
    both = Classifier.load(own_toy_model, backend="torch", precision="fp32")
    texts = review_texts(own_toy_model)
    _, cheap = both.answer(texts)
    sure, hard = texts[int(np.flatnonzero(cheap)[0])], texts[int(np.flatnonzero(~cheap)[0])]
    scoring, release = threading.Event(), threading.Event()
    model_proba = both.model_proba

    def held(batch, *args, **kwargs):
        scoring.set()
        release.wait(timeout=30)
        return model_proba(batch, *args, **kwargs)

    monkeypatch.setattr(both, "model_proba", held)
    with TestClient(create_app(both, ServeSettings(timeout_s=10.0))) as client:
        answers = {}
        waiting = threading.Thread(
            target=lambda: answers.setdefault("hard", client.post("/v1/predict", json={"text": hard}))
        )
        waiting.start()
        assert scoring.wait(timeout=30)
        quick = client.post("/v1/predict", json={"text": sure})
        release.set()
        waiting.join(timeout=30)
    assert quick.status_code == 200 and quick.json()["predictions"][0]["stage"] == "cheap"
    assert answers["hard"].status_code == 200 and answers["hard"].json()["predictions"][0]["stage"] == "model"


def test_a_cascade_made_from_other_weights_is_not_used(own_toy_model):
    cascade.fit(own_toy_model, margin=0.05)
    weights = own_toy_model / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # written again: a new time; the same bytes keep it
    assert cascade.load_for(own_toy_model) is not None
    (own_toy_model / cascade.FOLDER / "source-weights.json").write_text(
        json.dumps({"sha256": "0" * 64, "stat": [0, 0]})
    )
    assert cascade.load_for(own_toy_model) is None


def test_export_says_in_a_line_that_a_model_has_no_cascade(own_toy_model, capsys):
    assert main(["export", str(own_toy_model), "--backends", "onnx", "--reviews", "50"]) == 0
    assert "has no cascade for its present weights" in capsys.readouterr().err


def a_cheap_stage_sure_of_every_review_and_wrong_about_each(model: Path) -> None:
    """A cascade for `model` through which every answer is wrong: what reads the model through it scores about 0%."""
    cascade.fit(model, margin=0.05)
    folder = model / cascade.FOLDER
    arrays = dict(np.load(folder / "arrays.npz"))
    np.savez(folder / "arrays.npz", **{**arrays, "coef": -arrays["coef"], "intercept": -arrays["intercept"]})
    record = json.loads((folder / "cascade.json").read_text())
    (folder / "cascade.json").write_text(json.dumps({**record, "threshold": 0.0}))
    assert cascade.load_for(model) is not None


def test_export_measures_and_checks_each_engine_alone_not_through_the_cascade(own_toy_model):
    """Through the cascade, every backend was timed and checked on the reviews the cheap stage passed on only, and
    PyTorch's accuracy was the cascade's (the quickstart MiniLM: 87.83% on validation, 87.23% alone)."""
    from critic.inference.export import export

    a_cheap_stage_sure_of_every_review_and_wrong_about_each(own_toy_model)
    checked = export(own_toy_model, ["onnx-int8"])["backends"]["checked"]
    validation = ModelRecord.read(own_toy_model).rows("validation")
    alone = Classifier.load(own_toy_model, backend="torch", long_reviews="truncate", cascade=False)
    expected = float((alone.predict_proba(validation["text"].tolist()).argmax(1) == validation["label"]).mean())
    assert checked["accuracy"]["torch"] == pytest.approx(expected, abs=0.02) and expected > 0.9
    assert checked["accuracy"]["onnx-int8"] > 0.9


def test_a_teacher_and_the_final_validation_score_with_the_model_alone_not_its_cascade(
    own_toy_model, tmp_path, monkeypatch
):
    """A teacher's cascade taught its student the cheap stage's answers for the reviews it was sure of; a finished
    run saved again measured validation through the cascade of its own weights, fitted on those probabilities."""
    import torch

    from critic.training.distill import teacher_probabilities
    from critic.training.final_save import windowed_probabilities
    from critic.training.step import Machine

    monkeypatch.setenv("CRITIC_CACHE", str(tmp_path / "cache"))
    a_cheap_stage_sure_of_every_review_and_wrong_about_each(own_toy_model)
    validation = ModelRecord.read(own_toy_model).rows("validation")
    texts, labels = validation["text"].tolist(), validation["label"].to_numpy()
    taught = teacher_probabilities(str(own_toy_model), texts, False, lambda line: None, progress=False)
    assert (taught.argmax(1) == labels).mean() > 0.9
    machine = Machine(torch.device("cpu"), "fp32", 1, False)
    measured = windowed_probabilities(own_toy_model, texts, machine, lambda line: None, progress=False)
    assert (measured.argmax(1) == labels).mean() > 0.9


@pytest.mark.parametrize("margin", [0.0])
def test_no_cascade_where_no_threshold_keeps_the_margin(own_toy_model, margin, capsys):
    said = []
    chosen = cascade.fit(own_toy_model, margin=margin, say=said.append)
    assert chosen["threshold"] is None and said and said[0].startswith("no cascade")
    assert not (own_toy_model / cascade.FOLDER).exists()


def test_evaluate_shows_the_model_the_cheap_stage_and_the_cascade_side_by_side(own_toy_model, tmp_path):
    from rich.console import Console

    import critic
    from critic.evaluation.rendering import print_summary

    cascade.fit(own_toy_model, margin=0.05)
    texts = review_texts(own_toy_model)  # toy reviews the cheap stage is sure of, and some the model must answer
    frame = pd.DataFrame(
        {"text": texts, "label": [*pd.read_csv(own_toy_model.parent / "toy.csv")["label"][:180]] + [1] * 20}
    )
    frame.to_csv(tmp_path / "some.csv", index=False)
    summary = critic.evaluate_model(own_toy_model, tmp_path / "some.csv", "all", output=tmp_path / "ev", baseline=False)
    stages = summary["cascade"]["stages"]
    assert stages["model"]["accuracy"] == summary["accuracy"]  # the headline figures stay the model's own
    both = Classifier.load(own_toy_model, backend="torch", precision="fp32")
    probs, cheap = both.answer(frame["text"].tolist())
    assert summary["cascade"]["cheap_share"] == cheap.mean() and 0 < cheap.mean() < 1
    assert abs(stages["cascade"]["accuracy"] - (probs.argmax(1) == frame["label"].to_numpy()).mean()) < 1e-9
    console = Console(record=True, width=120)
    print_summary(summary, console)
    assert "the cascade's cheap stage answered" in console.export_text()
    assert "The cascade" in Path(summary["files"][1]).read_text()


def test_ray_says_which_stage_answered_each_row_and_runs_the_model_alone_with_the_cascade_off(own_toy_model):
    """What each Ray actor runs on a batch (no cluster needed): the stage column beside the scores, empty for a row
    it rejects; with the cascade off, the model's probabilities and no stage column."""
    import pyarrow as pa

    from critic.inference.scale import Scorer, _run_record

    cascade.fit(own_toy_model, margin=0.05)
    texts = review_texts(own_toy_model)[170:]  # reviews both stages answer
    scored = Scorer(str(own_toy_model), None, "cpu", "torch")(pa.table({"text": [*texts, ""]}))
    _, cheap = Classifier.load(own_toy_model, backend="torch").answer(texts)
    assert 0 < cheap.sum() < len(texts)
    assert scored["stage"].tolist()[:-1] == ["cheap" if by_cheap else "model" for by_cheap in cheap]
    assert pd.isna(scored["stage"].iloc[-1])  # the empty text, rejected
    alone = Scorer(str(own_toy_model), None, "cpu", "torch", cascade=False)(pa.table({"text": texts}))  # --cascade off
    model = Classifier.load(own_toy_model, backend="torch", cascade=False)
    assert "stage" not in alone and np.allclose(alone[["p_negative", "p_positive"]], model.predict_proba(texts))
    assert "cascade" in _run_record(own_toy_model, None, "torch", "parquet")  # a rerun the other way scores again
    assert "cascade" not in _run_record(own_toy_model, None, "torch", "parquet", cascade_on=False)
