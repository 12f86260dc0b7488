"""Real weights, real data: MiniLM fetched through pip, fine-tuned on IMDB on the CPU."""

import json

import pytest

import critic
from critic import config
from critic.training import train


@pytest.mark.integration
def test_real_minilm_learns_imdb(tmp_path, real_cache):
    settings = dict(
        model="minilm",
        data="imdb",
        preset="cpu",
        train_size=2000,
        eval_size=500,
        max_length=128,
        epochs=1,
        batch_size=16,
        lr=1e-4,
        warmup_ratio=0.1,
        output=str(tmp_path / "minilm"),
    )
    out = train.train(config.build(settings), progress=False)
    summary = critic.evaluate_model(out, "imdb", "test", size=500)
    print(
        f"real MiniLM, 2,000 IMDB reviews, 128 tokens, 1 epoch: test accuracy {summary['accuracy']:.4f} "
        f"(ROC AUC {summary['roc_auc']:.4f}) on 500 held-out reviews"
    )
    assert summary["accuracy"] >= 0.80
    base = summary["baseline"]
    print(
        f"TF-IDF baseline on the same 2,000 training reviews: {base['accuracy']:.4f}; calibration "
        f"{summary['calibration']}"
    )
    assert base["train_rows"] == 2000 and 0.75 < base["accuracy"] < 0.95
    assert summary["calibration"]["ece_after"] <= summary["calibration"]["ece_before"] + 0.01
    meta = json.loads((out / "critic.json").read_text())
    assert meta["manifest"]["splits"]["test"]["rows"] == 4986  # the full deterministic IMDB split
    assert critic.Classifier.load(out).predict(
        [
            "One of the best films I have seen: moving and beautifully acted.",
            "A dull, lifeless mess. I want my two hours back.",
        ]
    ) == ["positive", "negative"]
