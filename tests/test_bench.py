"""The GPU suite's smoke: every step of bench/gpu_suite.py, tiny, on the CPU, from its own packed artifacts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import synthetic

SUITE = Path(__file__).resolve().parents[1] / "bench" / "gpu_suite.py"


def test_gpu_suite_smoke_runs_every_step(tmp_path, tiny_bert):
    reviews = tmp_path / "reviews.csv"
    synthetic.reviews(1200).to_csv(reviews, index=False)
    out = tmp_path / "suite.json"
    result = subprocess.run([sys.executable, str(SUITE), "smoke", "--model", str(tiny_bert), "--data", str(reviews),
                             "--out", str(out)], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert json.loads(result.stdout) == report  # the one JSON object, printed
    steps = report["steps"]
    assert set(steps) == {"train_throughput", "recipe", "scoring", "fp16"}
    assert not [name for name, step in steps.items() if "error" in step]
    assert steps["train_throughput"]["critic"]["samples_per_s"] > 0 and steps["train_throughput"]["hf_trainer"]
    assert steps["recipe"]["test_accuracy"] > 0.8  # the tiny BERT learns the toy reviews
    # critic and the pipeline agree (both in fp32 in the smoke)
    assert steps["scoring"]["max_abs_probability_difference"] < 1e-5
    assert steps["fp16"]["precision"] == "fp16" and steps["fp16"]["finite_weights"]
    assert set(report["targets"]) == {"train_samples_per_s", "train_ratio_vs_trainer", "recipe_train_seconds",
                                      "scoring_reviews_per_s", "scoring_ratio_vs_pipeline"}
    assert report["machine"]["torch"] and report["machine"]["date"]
