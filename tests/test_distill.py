import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from critic import config, data
from critic.cli import main
from critic.training import fine_tuning, inputs, train
from critic.training.distill import fold_teachers, out_of_fold_probabilities, teacher_probabilities


def test_objective_mixes_labels_and_softened_teacher():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.2]])
    labels = torch.tensor([0, 1])
    hard = F.cross_entropy(logits, labels, reduction="sum")
    assert torch.allclose(fine_tuning.ClassificationLoss()(logits, {"labels": labels}), hard)
    # a teacher that agrees with the student exactly adds nothing
    same = F.softmax(logits / 2.0, dim=-1)
    mixed = fine_tuning.ClassificationLoss(teacher_share=0.5, temperature=2.0)(
        logits, {"labels": labels, "teacher": same}
    )
    assert torch.allclose(mixed, 0.5 * hard, atol=1e-6)
    # the teacher's term alone, scaled by T^2
    other = torch.tensor([[0.1, 0.9], [0.9, 0.1]])
    only = fine_tuning.ClassificationLoss(teacher_share=1.0, temperature=2.0)(
        logits, {"labels": labels, "teacher": other}
    )
    expected = (other * (other.log() - F.log_softmax(logits / 2.0, dim=-1))).sum() * 4
    assert torch.allclose(only, expected, atol=1e-5)


def test_soften_is_the_teachers_logits_over_t():
    logits = np.array([[3.0, -1.0, 0.5]])
    probs = np.exp(logits) / np.exp(logits).sum()
    expected = np.exp(logits / 3.0) / np.exp(logits / 3.0).sum()
    assert np.allclose(inputs.soften(probs, 3.0), expected, atol=1e-6)


def test_student_learns_from_a_teacher_and_its_scores_are_cached(toy_model, tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("CRITIC_CACHE", str(tmp_path / "cache"))
    data = toy_model.parent / "toy.csv"
    cfg = config.build(
        dict(
            model=str(tiny_bert),
            data=str(data),
            preset="gpu",
            max_length=32,
            epochs=2,
            batch_size=32,
            lr=3e-3,
            output=str(tmp_path / "student"),
            device="cpu",
            teacher=str(toy_model),
            teacher_share=1.0,
            teacher_temperature=2.0,
        )
    )
    said = []
    student = train.train(cfg, log=said.append, progress=False)  # the front takes a run with a teacher to distill
    meta = json.loads((student / "critic.json").read_text())
    agreement = next(line for line in said if "agrees with" in line)  # the toy teacher learned its labels
    assert float(agreement.split("agrees with ")[1].split("%")[0]) > 98 and "--fold 1/N" in agreement
    assert meta["history"][-1]["val_accuracy"] > 0.9  # from the teacher alone: the labels' share is 0
    assert meta["distilled_from"] == {"teacher": str(toy_model), "share": 1.0, "temperature": 2.0, "windows": True}
    cached = list((tmp_path / "cache" / "teachers").glob("*.npy"))
    assert len(cached) == 1
    probs = np.load(cached[0])
    assert probs.shape == (meta["train_rows"], 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    lines = []
    texts = ["placeholder"]  # another text set: another cache entry, not the first one's
    teacher_probabilities(str(toy_model), texts, True, lines.append, progress=False)
    assert len(list((tmp_path / "cache" / "teachers").glob("*.npy"))) == 2
    teacher_probabilities(str(toy_model), texts, True, lines.append, progress=False)
    assert lines[-1].startswith("teacher probabilities from")


def test_distill_verb(toy_model, tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("CRITIC_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "student"
    assert (
        main(
            [
                "distill",
                str(toy_model),
                "--model",
                str(tiny_bert),
                "--data",
                str(toy_model.parent / "toy.csv"),
                "--preset",
                "gpu",
                "--max-length",
                "32",
                "--epochs",
                "1",
                "--lr",
                "3e-3",
                "--device",
                "cpu",
                "--no-teacher-windows",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "critic.json").read_text())["distilled_from"]["windows"] is False
    assert (
        main(
            [
                "distill",
                str(tmp_path / "nothing"),
                "--model",
                str(tiny_bert),
                "--data",
                str(toy_model.parent / "toy.csv"),
                "--preset",
                "gpu",
                "--device",
                "cpu",
                "--output",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )


def test_teachers_trained_on_folds_each_score_the_reviews_they_did_not_train_on(
    toy_model, tiny_bert, tmp_path, monkeypatch
):
    monkeypatch.setenv("CRITIC_CACHE", str(tmp_path / "cache"))
    data_file = toy_model.parent / "toy.csv"
    common = dict(
        model=str(tiny_bert),
        data=str(data_file),
        preset="gpu",
        max_length=32,
        epochs=1,
        batch_size=32,
        lr=3e-3,
        device="cpu",
    )
    teachers = [
        str(train.train(config.build({**common, "fold": f"{k}/2", "output": str(tmp_path / f"t{k}")}), progress=False))
        for k in (1, 2)
    ]
    assert fold_teachers(teachers[::-1]) == teachers  # ordered by fold, whatever the order given
    texts = pd.read_csv(data_file)["text"].tolist()[:200]
    fold = data.fold_of(pd.Series(texts), 2)
    oof = out_of_fold_probabilities(teachers, texts, ["negative", "positive"], False, lambda line: None, False)
    for k, teacher in enumerate(teachers):  # fold k's reviews: the teacher that held fold k out
        rows = np.flatnonzero(fold == k)
        own = teacher_probabilities(teacher, [texts[i] for i in rows], False, lambda line: None, False)
        assert 0 < len(rows) < len(texts) and np.allclose(oof[rows], own, atol=1e-6)
    assert not np.allclose(oof, teacher_probabilities(teachers[0], texts, False, lambda line: None, False))

    out = tmp_path / "student"
    assert (
        main(
            [
                "distill",
                *teachers,
                "--model",
                str(tiny_bert),
                "--data",
                str(data_file),
                "--preset",
                "gpu",
                "--max-length",
                "32",
                "--epochs",
                "2",
                "--batch-size",
                "32",
                "--lr",
                "3e-3",
                "--device",
                "cpu",
                "--no-teacher-windows",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    meta = json.loads((out / "critic.json").read_text())
    assert meta["distilled_from"]["teacher"] == ",".join(teachers) and meta["history"][-1]["val_accuracy"] > 0.9

    with pytest.raises(ValueError, match="was not trained on a fold"):
        fold_teachers([teachers[0], str(toy_model)])
    with pytest.raises(ValueError, match="one model for each of 1/2 … 2/2"):
        fold_teachers([teachers[0], teachers[0]])
