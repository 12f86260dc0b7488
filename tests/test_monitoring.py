"""Watching what a model sees: the unsure share, the class mix and the drift of reviews against its training
reviews, for a file (`critic monitor`) and for a server's traffic (`critic serve --watch`)."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import synthetic

from critic.cli import main
from critic.inference import monitoring


def unlike_the_training_reviews(count: int) -> pd.DataFrame:
    """Reviews of the toy's markup and filler words alone: nothing like its training reviews."""
    rng = random.Random(0)
    words = ["<", ">", "br", "/", "ever", "not", "!", "story"]
    return pd.DataFrame({"text": [" ".join(rng.choices(words, k=rng.randint(20, 40))) + f" {i}" for i in range(count)]})


def test_the_drift_score_tells_like_from_unlike():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(300, 16))
    assert monitoring.drift_score(reference, rng.normal(size=(200, 16))) < 0.6
    assert monitoring.drift_score(reference, rng.normal(0.5, 1, size=(200, 16))) > 0.9


def test_monitor_warns_on_reviews_unlike_the_training_reviews_and_not_on_like_ones(own_toy_model, tmp_path, capsys):
    synthetic.reviews(300, seed=7)[["text"]].to_csv(tmp_path / "like.csv", index=False)
    unlike_the_training_reviews(300).to_csv(tmp_path / "unlike.csv", index=False)
    like = monitoring.monitor_file(own_toy_model, tmp_path / "like.csv")
    assert like["drift_auc"] < monitoring.DRIFT_WARNING and like["warnings"] == []
    assert set(like["class_mix"]) == {"negative", "positive"} and abs(like["class_mix"]["positive"] - 0.5) < 0.15
    assert (own_toy_model / "monitor" / monitoring.REFERENCE_FILE).is_file()  # embedded once, kept
    assert main(["monitor", str(own_toy_model), str(tmp_path / "unlike.csv"), "--output", str(tmp_path / "out")]) == 0
    unlike = json.loads((tmp_path / "out" / "monitor.json").read_text())
    assert unlike["drift_auc"] > monitoring.DRIFT_WARNING and any(w.startswith("drift") for w in unlike["warnings"])
    assert "warning: drift" in capsys.readouterr().err


def test_a_watched_server_shows_unsure_share_class_mix_and_drift_in_metrics_and_at_v1_watch(own_toy_model, tmp_path):
    from fastapi.testclient import TestClient

    from critic.inference.predict import Classifier
    from critic.serve.app import create_app
    from critic.serve.settings import ServeSettings
    from critic.serve.watch import TrafficWatch

    classifier = Classifier.load(own_toy_model, backend="torch", precision="fp32")
    reference = monitoring.reference_embeddings(classifier, own_toy_model)
    # the toy's validation reviews cannot show 99%: every answer is unsure
    watch = TrafficWatch(classifier, min_accuracy=0.99, drift_every=60, reference=reference)
    with TestClient(create_app(classifier, ServeSettings(max_batch=8), watch=watch)) as client:
        quiet = client.get("/v1/watch").json()
        assert quiet["answers"] == 0 and quiet["drift_auc"] is None and quiet["warnings"] == []
        texts = unlike_the_training_reviews(60)["text"].tolist()
        assert client.post("/v1/predict", json={"texts": texts}).status_code == 200
        watch.join(60)
        seen = client.get("/v1/watch").json()
        metrics = client.get("/metrics").text
    assert seen["answers"] == 60 and seen["unsure_share"] == 1.0 and abs(sum(seen["class_mix"].values()) - 1) < 1e-9
    assert seen["drift_auc"] > monitoring.DRIFT_WARNING and any(w.startswith("drift") for w in seen["warnings"])
    assert "critic_unsure_share 1.0" in metrics and 'critic_answer_share{label="positive"}' in metrics
    assert f"critic_drift_auc {seen['drift_auc']}" in metrics
