import json

import numpy as np
import pandas as pd
import pytest

import critic
import synthetic
from critic import config, train
from critic.cli import main
from critic.predict import Classifier, predict_file


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_bert):
    folder = tmp_path_factory.mktemp("predict")
    synthetic.reviews(1000).to_csv(folder / "toy.csv", index=False)
    settings = dict(model=str(tiny_bert), data=str(folder / "toy.csv"), preset="gpu", max_length=32, epochs=2,
                    batch_size=32, lr=3e-3, output=str(folder / "model"), device="cpu")
    return train.train(config.build(settings), progress=False)


def test_predict_and_proba(model_dir):
    clf = Classifier.load(model_dir)
    assert clf.labels == ["negative", "positive"]
    probs = clf.predict_proba(["a great fun film", "awful boring mess", "the plot was superb and brilliant"])
    assert probs.shape == (3, 2) and np.allclose(probs.sum(axis=1), 1)
    assert clf.predict(["a great fun film", "awful boring mess"]) == ["positive", "negative"]


def test_batched_equals_one_by_one(model_dir):
    clf = Classifier.load(model_dir, precision="fp32")
    texts = synthetic.reviews(40, seed=5, max_words=60)["text"].tolist()
    together = clf.predict_proba(texts)
    alone = np.vstack([clf.predict_proba([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)


def test_bad_input_names_the_row(model_dir):
    clf = Classifier.load(model_dir)
    with pytest.raises(ValueError, match="text 1: empty text"):
        clf.predict(["fine film", "   "])
    with pytest.raises(ValueError, match="text 0: expected a string, got int"):
        clf.predict([3])


def test_same_probabilities_through_transformers_pipeline(model_dir):
    from transformers import pipeline

    clf = Classifier.load(model_dir, precision="fp32")
    texts = ["a great fun film", "awful boring mess and the worst plot", "the acting was good"]
    ours = clf.predict_proba(texts)
    theirs = pipeline("text-classification", model=str(model_dir), top_k=None, device="cpu")(texts)
    for row, scores in zip(ours, theirs):
        by_label = {s["label"]: s["score"] for s in scores}
        assert np.allclose(row, [by_label["negative"], by_label["positive"]], atol=1e-5)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".txt"])
def test_predict_file_formats(model_dir, tmp_path, suffix):
    texts = ["a great fun film", "awful boring mess", "the plot was superb"]
    source = tmp_path / f"in{suffix}"
    if suffix == ".csv":
        pd.DataFrame({"id": [1, 2, 3], "review": texts}).to_csv(source, index=False)
    elif suffix == ".jsonl":
        source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    elif suffix == ".parquet":
        pd.DataFrame({"text": texts}).to_parquet(source)
    else:
        source.write_text("\n".join(texts) + "\n")
    target = tmp_path / f"out{'.csv' if suffix == '.txt' else suffix}"
    assert predict_file(Classifier.load(model_dir), source, target, chunk=2, progress=False) == 3
    scored = {".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True),
              ".parquet": pd.read_parquet}[target.suffix](target)
    assert scored["label"].tolist() == ["positive", "negative", "positive"]
    assert np.allclose(scored["p_negative"] + scored["p_positive"], 1, atol=1e-5)


def test_predict_file_empty_row_is_named(model_dir, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "good"}\n{"text": ""}\n')
    with pytest.raises(ValueError, match=r"in.jsonl, row 2: empty or missing text"):
        predict_file(Classifier.load(model_dir), source, tmp_path / "out.jsonl", progress=False)


def test_evaluate_model_and_cli(model_dir, tmp_path, capsys):
    data = model_dir.parent / "toy.csv"
    summary = critic.evaluate_model(model_dir, data, "test")
    assert summary["accuracy"] > 0.9
    card = (model_dir / "README.md").read_text()
    assert "## Evaluation" in card and f"{summary['accuracy']:.4f}" in card
    assert main(["predict", str(model_dir), "a great fun film"]) == 0
    assert capsys.readouterr().out.startswith("positive\t")
    assert main(["evaluate", str(model_dir), str(data), "--output", str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / "evaluation.html").is_file()
    assert main(["predict", str(tmp_path / "nothing"), "x"]) == 2
    assert "not a critic model" in capsys.readouterr().err
