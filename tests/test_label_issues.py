"""critic profile --label-issues: the labels flipped on purpose are found, each with its line in the file."""

import csv
import json

import numpy as np
import pandas as pd
import pytest
import synthetic

from critic import data as critic_data
from critic.cli import main


def test_flipped_labels_are_found_with_their_lines(tmp_path, capsys):
    reviews = synthetic.reviews(600, seed=3).drop_duplicates("text").reset_index(drop=True)
    flipped = np.random.default_rng(0).choice(len(reviews), size=len(reviews) // 20, replace=False)  # 5%
    reviews.loc[flipped, "label"] = 1 - reviews.loc[flipped, "label"]
    path = tmp_path / "reviews.csv"
    reviews.to_csv(path, index=False)
    out = tmp_path / "profile"

    assert main(["profile", str(path), "--tokenizer", "none", "--label-issues", "--output", str(out)]) == 0
    found = pd.read_csv(out / "label_issues.csv", dtype={"line": str})
    line_of = {row["text"]: str(i + 2) for i, row in reviews.iterrows()}  # line 1 is the header
    assert list(found["line"]) == [line_of[text] for text in found["text"]]
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    for line, text, given in zip(found["line"], found["text"], found["given"]):
        assert rows[int(line) - 1] == [text, {"negative": "0", "positive": "1"}[given]]  # that line of the file
    caught = set(found["text"]) & set(reviews.loc[flipped, "text"])
    recall, precision = len(caught) / len(flipped), len(caught) / max(len(found), 1)
    assert recall >= 0.8 and precision >= 0.6, (recall, precision, len(found))
    assert found["score"].is_monotonic_increasing  # the most suspicious first
    assert set(found["suggested"]) <= {"negative", "positive"} and (found["suggested"] != found["given"]).all()
    summary = json.loads((out / "profile.json").read_text())
    assert summary["label_issues"]["rows"] == len(found)
    assert "Labels that look wrong" in (out / "profile.html").read_text()
    assert "labels that look wrong" in capsys.readouterr().out


def test_evaluate_flags_the_test_labels_the_model_contradicts(own_toy_model, tmp_path, capsys):
    reviews = pd.read_csv(own_toy_model.parent / "toy.csv")
    test_texts = set(critic_data.load(own_toy_model.parent / "toy.csv").split("test")["text"])
    in_test = reviews.index[reviews["text"].isin(test_texts)]
    flipped = in_test[:10]  # ten test labels wrong on purpose; the texts, and so the split, are the same
    reviews.loc[flipped, "label"] = 1 - reviews.loc[flipped, "label"]
    path = tmp_path / "flipped.csv"
    reviews.to_csv(path, index=False)
    out = tmp_path / "evaluation"
    assert (
        main(["evaluate", str(own_toy_model), str(path), "--label-issues", "--no-baseline", "--output", str(out)]) == 0
    )
    found = pd.read_csv(out / "label_issues.csv", dtype={"line": str})
    assert set(found["line"]) == {str(i + 2) for i in flipped}  # each with its line in the file (1: the header)
    assert "Labels that look wrong" in (out / "evaluation.html").read_text()
    assert "labels that look wrong: 10" in capsys.readouterr().out
    assert main(["evaluate", str(own_toy_model), "--split", "train", "--label-issues"]) == 2  # it learned those


def test_critic_models_trained_on_folds_find_the_training_labels_flipped(tiny_bert, tmp_path, monkeypatch):
    """`profile --label-issues --model`: critic models trained with --fold 1/2 and 2/2 on a file with 5% of its
    training labels flipped each score the fold they held out; the flips are found, each with its line."""
    from critic import config
    from critic.training import train

    monkeypatch.setenv("CRITIC_CACHE", str(tmp_path / "cache"))
    reviews = synthetic.reviews(1200, seed=4).drop_duplicates("text").reset_index(drop=True)
    in_train = reviews.index[critic_data.splits.assign_splits(reviews["text"]) == "train"]
    flipped = np.random.default_rng(1).choice(in_train, size=len(in_train) // 20, replace=False)
    reviews.loc[flipped, "label"] = 1 - reviews.loc[flipped, "label"]
    path = tmp_path / "reviews.csv"
    reviews.to_csv(path, index=False)
    common = dict(
        model=str(tiny_bert),
        data=str(path),
        preset="gpu",
        max_length=32,
        epochs=4,
        batch_size=16,
        lr=3e-3,
        device="cpu",
    )
    folds = [
        str(train.train(config.build({**common, "fold": f"{k}/2", "output": str(tmp_path / f"f{k}")}), progress=False))
        for k in (1, 2)
    ]
    out = tmp_path / "profile"
    arguments = ["profile", str(path), "--tokenizer", "none", "--label-issues", "--output", str(out)]
    assert main([*arguments, "--model", ",".join(folds)]) == 0
    found = pd.read_csv(out / "label_issues.csv", dtype={"line": str})
    assert set(found["text"]) <= set(reviews.loc[in_train, "text"])  # the training split's rows only
    assert list(found["line"]) == [str(reviews.index[reviews["text"] == t][0] + 2) for t in found["text"]]
    caught = set(found["text"]) & set(reviews.loc[flipped, "text"])
    recall, precision = len(caught) / len(flipped), len(caught) / max(len(found), 1)
    assert recall >= 0.5 and precision >= 0.4, (recall, precision, len(found))  # the targets
    summary = json.loads((out / "profile.json").read_text())["label_issues"]
    assert summary["scanned"] == len(in_train) and summary["method"].startswith("2 critic models trained with --fold")
    with pytest.raises(SystemExit, match="add --label-issues"):
        main(["profile", str(path), "--tokenizer", "none", "--model", folds[0]])
