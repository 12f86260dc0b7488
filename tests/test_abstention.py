""" "Not sure" with a guarantee: thresholds from the validation curve, checked against a model whose accuracy at
each confidence is known, and --min-accuracy through the Python API, the CLI, files and the server."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from critic import modeling
from critic.cli import main
from critic.inference.files import predict_file
from critic.inference.predict import Classifier
from critic.modeling import abstention
from critic.serve import ServeSettings, create_app


def calibrated_model(rows: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Confidences from 0.5 to 1, most of them near 1 (90% right overall), each answer right with probability its
    confidence: the accuracy at or above a threshold is then known."""
    confidence = 1 - 0.5 * rng.random(rows) ** 4
    return confidence, rng.random(rows) < confidence


def true_accuracy(threshold: float) -> float:
    """E[confidence | confidence >= threshold] for `calibrated_model`, exactly: u = (2 (1 - c)) ** (1/4)."""
    top = (2 * (1 - threshold)) ** 0.25  # the answers are those with u <= top
    return 1 - 0.5 * top**4 / 5


def test_the_threshold_meets_its_target_in_at_least_95_percent_of_validation_draws():
    rng = np.random.default_rng(0)
    kept_thresholds = []
    for _ in range(200):
        kept = abstention.curve(*calibrated_model(2000, rng))
        chosen = abstention.threshold(kept, 0.95)
        assert chosen["lower_bound"] >= 0.95 and chosen["accuracy"] >= chosen["lower_bound"]
        kept_thresholds.append(chosen["threshold"])
    met = np.array([true_accuracy(t) >= 0.95 for t in kept_thresholds])
    assert met.mean() >= 0.95  # the promise: at most 5% of validation draws give a threshold that misses
    # and not far more careful than it needs: answering 84.1% of the reviews meets 0.95 exactly (0.1 u^4 = 0.05)
    coverage = [(2 * (1 - t)) ** 0.25 for t in kept_thresholds]
    assert 0.6 < np.median(coverage) < 0.841


def test_curve_answers_ties_together_and_too_few_reviews_answer_nothing():
    confidence = np.array([0.99, 0.9, 0.9, 0.9, 0.8, 0.7])
    kept = abstention.curve(confidence, np.array([1, 1, 0, 1, 1, 0], dtype=bool), points=6)
    assert kept["answered"] == [1, 4, 5, 6] and kept["errors"] == [0, 1, 1, 2]
    assert kept["threshold"] == [0.99, 0.9, 0.8, 0.7]
    # 300 reviews all right show 98.0% at most (each of the 20 candidates is tested at 0.25%): 99% cannot be shown
    perfect = abstention.curve(np.linspace(0.9, 1.0, 300), np.ones(300, dtype=bool))
    assert abstention.threshold(perfect, 0.99)["threshold"] is None
    assert abstention.threshold(perfect, 0.97)["threshold"] == pytest.approx(0.9)
    probs = np.array([[0.2, 0.8], [0.45, 0.55]])
    assert abstention.answers(probs, ["negative", "positive"], np.inf) == ["unsure", "unsure"]
    assert abstention.answers(probs, ["negative", "positive"], 0.7) == ["positive", "unsure"]
    assert abstention.answers(probs, ["negative", "positive"]) == ["positive", "positive"]
    with pytest.raises(ValueError, match="between 0 and 1"):
        abstention.threshold(perfect, 97)


def test_min_accuracy_in_the_api_the_cli_a_file_and_the_server(own_toy_model, tmp_path, capsys):
    meta = json.loads((own_toy_model / "critic.json").read_text())
    record = meta["abstention"]  # written at the end of training, from the validation split
    assert record["curve"]["rows"] == meta["manifest"]["splits"]["validation"]["rows"]
    classifier = Classifier.load(own_toy_model, precision="fp32")
    texts = ["a great fun film", "dull", "the best story ever", "awful boring mess"]
    probs = classifier.predict_proba(texts)
    cut = classifier.unsure_below(0.9)
    assert cut == record["targets"]["0.9"]["threshold"]
    expected = [classifier.labels[p.argmax()] if p.max() >= cut else "unsure" for p in probs]
    assert classifier.predict(texts, min_accuracy=0.9) == expected
    assert main(["predict", str(own_toy_model), *texts, "--min-accuracy", "0.9"]) == 0
    printed = capsys.readouterr()
    assert [line.split("\t")[0] for line in printed.out.splitlines()] == expected
    # 103 validation reviews cannot show 99% (it takes 597 answered, all right): every answer is unsure
    assert classifier.predict(texts, min_accuracy=0.99) == ["unsure"] * len(texts)
    assert "answers reviews with confidence >=" in printed.err
    assert f"answered {len(texts) - expected.count('unsure')} of {len(texts)}" in printed.err
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n")
    predict_file(classifier, source, tmp_path / "out.csv", progress=False, min_accuracy=0.9)
    assert [line.split(",")[1] for line in (tmp_path / "out.csv").read_text().splitlines()[1:]] == expected
    with TestClient(create_app(classifier, ServeSettings())) as client:
        answer = client.post("/v1/predict", json={"texts": texts, "min_accuracy": 0.9}).json()
        assert [p["label"] for p in answer["predictions"]] == expected
        assert answer["min_accuracy"]["threshold"] == cut and answer["min_accuracy"]["target"] == 0.9
        assert client.post("/v1/predict", json={"text": "x", "min_accuracy": 1.5}).status_code == 422
        scored = client.post(
            "/v1/score-csv?min_accuracy=0.9",
            content="text\n" + "\n".join(texts) + "\n",
            headers={"content-type": "text/csv"},
        )
        assert [line.split(",")[1] for line in scored.text.splitlines()[1:]] == expected
    modeling.update_record(own_toy_model, abstention=None)  # a model trained before critic kept the record
    assert main(["predict", str(own_toy_model), "dull", "--min-accuracy", "0.9"]) == 2
    assert "no validation record to choose a confidence threshold from" in capsys.readouterr().err
    with TestClient(create_app(Classifier.load(own_toy_model, precision="fp32"), ServeSettings())) as client:
        refused = client.post("/v1/predict", json={"text": "dull", "min_accuracy": 0.9})
        assert refused.status_code == 422 and "no validation record" in refused.json()["detail"]
