import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from critic.evaluation import metrics, rendering
from critic.modeling import calibration


def test_metrics_from_probabilities():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    summary = metrics.measure(
        labels, probs, ["negative", "positive"], texts=["a", "b", "c", "d"], token_lengths=[10, 200, 300, 600]
    )
    assert summary["accuracy"] == 0.75
    assert summary["roc_auc"] == 1.0  # the probabilities rank every positive above every negative
    assert summary["confusion_matrix"] == [[1, 1], [0, 2]]
    assert summary["per_class"]["positive"]["precision"] == pytest.approx(2 / 3)
    assert summary["confident_mistakes"][0]["text"] == "b" and summary["confident_mistakes"][0]["confidence"] == 0.6
    assert [b["tokens"] for b in summary["accuracy_by_length"]] == ["0–128", "129–256", "257–512", "> 512"]
    assert [b["accuracy"] for b in summary["accuracy_by_length"]] == [1.0, 0.0, 1.0, 1.0]


def test_ece_of_calibrated_and_overconfident_models():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20000)
    correct = rng.uniform(size=20000) < confidence
    predicted = np.ones(20000, dtype=int)
    labels = np.where(correct, 1, 0)
    assert calibration.expected_calibration_error(labels, confidence, predicted) < 0.02
    assert calibration.expected_calibration_error(labels, np.full(20000, 0.99), predicted) > 0.2


def test_bootstrap_interval_contains_accuracy():
    correct = np.array([1] * 90 + [0] * 10, dtype=bool)
    low, high = metrics.bootstrap_accuracy(correct)
    assert low < 0.9 < high and high - low < 0.15


def test_report_files(tmp_path):
    labels = np.array([0, 1] * 50)
    probs = np.column_stack([1 - np.linspace(0.01, 0.99, 100), np.linspace(0.01, 0.99, 100)])
    summary = metrics.measure(labels, probs, ["negative", "positive"], texts=[f"t{i}" for i in range(100)])
    json_path, html_path = rendering.write(summary, tmp_path, "Evaluation", "toy")
    saved = json.loads(json_path.read_text())
    assert saved["rows"] == 100 and "_roc" not in saved
    assert html_path.read_text().count("<svg") == 5  # confusion heat map, ROC, PR, reliability, confidence


def test_ece_is_the_standard_fifteen_bins_over_zero_to_one():
    # 0.94 and 0.96 share the bin (14/15, 1]: one wrong, one right -> |0.5 - 0.95| = 0.45
    assert calibration.expected_calibration_error(
        np.array([0, 1]), np.array([0.94, 0.96]), np.array([1, 1])
    ) == pytest.approx(0.45)
    # bins are closed on the right: 1/15 shares (0, 1/15] with 0.06 -> |0.5 - 0.0633|
    assert calibration.expected_calibration_error(
        np.array([1, 0]), np.array([1 / 15, 0.06]), np.array([1, 1])
    ) == pytest.approx(abs(0.5 - (1 / 15 + 0.06) / 2))


def test_slices_put_the_worst_value_of_a_column_first_in_the_terminal_and_the_report(toy_model, tmp_path):
    import critic
    from critic import data
    from critic.evaluation.rendering import print_summary

    frame = pd.read_csv(toy_model.parent / "toy.csv").head(300)
    frame["product"] = ["films", "series"] * 150
    frame.loc[:39, "product"] = "flipped"
    frame.loc[:39, "label"] = 1 - frame.loc[:39, "label"]  # labels the model must get wrong
    frame.to_csv(tmp_path / "sliced.csv", index=False)
    summary = critic.evaluate_model(
        toy_model, tmp_path / "sliced.csv", "all", output=tmp_path / "ev", baseline=False, slice_by="product"
    )
    found = summary["slices"]["slices"]
    assert [row["value"] for row in found][0] == "flipped" and found[0]["accuracy"] < 0.3
    assert sum(row["reviews"] for row in found) == 300 and {row["value"] for row in found} == {
        "flipped",
        "films",
        "series",
    }
    low, high = found[0]["ci95"]
    assert low <= found[0]["accuracy"] <= high
    assert "By product, the worst first" in Path(summary["files"][1]).read_text()
    console = Console(record=True, width=120)
    print_summary(summary, console)
    assert "by product, the worst first" in console.export_text()
    with pytest.raises(data.DataError, match="no column 'stars' to slice by; the columns are: text, label, product"):
        critic.evaluate_model(toy_model, tmp_path / "sliced.csv", "all", baseline=False, slice_by="stars")
