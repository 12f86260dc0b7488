import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import synthetic
from critic import config, train
from critic.config import TrainConfig


def settings(model, data, output, **extra):
    base = dict(model=str(model), data=str(data), preset="gpu", max_length=48, epochs=2, batch_size=32, lr=3e-3,
                output=str(output), device="cpu")
    return config.build({**base, **extra})


@pytest.fixture(scope="module")
def toy_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "toy.csv"
    synthetic.reviews(1200).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert, toy_csv):
    out = tmp_path_factory.mktemp("run") / "model"
    return train.train(settings(tiny_bert, toy_csv, out, eval_every=10), progress=False)


def test_tiny_bert_learns_and_writes_everything(trained):
    meta = json.loads((trained / "critic.json").read_text())
    assert meta["history"][-1]["val_accuracy"] > 0.9
    assert meta["selected"].startswith("best accuracy")
    assert meta["truncation"] == {"max_length": 48, "strategy": "head+tail", "head": 12}  # a quarter
    assert meta["manifest"]["splits"]["train"]["rows"] == meta["train_rows"]
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "stats.csv",
                 "learning_curve.svg", "train_log.jsonl", "train_config.json", "checkpoint/state.pt"):
        assert (trained / name).is_file(), name
    events = [json.loads(line)["event"] for line in (trained / "train_log.jsonl").read_text().splitlines()]
    assert events.count("eval") == len(meta["history"]) and "train" in events
    assert json.loads((trained / "train_config.json").read_text())["eval_every"] == 10


def test_distilbert_trains(tmp_path, tiny_distilbert, toy_csv):
    out = train.train(settings(tiny_distilbert, toy_csv, tmp_path / "d", epochs=3), progress=False)
    meta = json.loads((out / "critic.json").read_text())
    assert meta["history"][-1]["val_accuracy"] > 0.8


def test_same_seed_same_weights_other_seed_differs(tmp_path, tiny_bert, toy_csv):
    runs = [train.train(settings(tiny_bert, toy_csv, tmp_path / name, epochs=1, select="last", seed=seed),
                        progress=False) for name, seed in (("a", 1), ("b", 1), ("c", 2))]
    weights = [load_file(run / "model.safetensors") for run in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_early_stopping(tmp_path, tiny_bert, toy_csv):
    # lr 0 never improves after the first evaluation: patience 2 stops at the third.
    out = train.train(settings(tiny_bert, toy_csv, tmp_path / "s", lr=1e-12, epochs=5, eval_every=5, patience=2),
                      progress=False)
    history = json.loads((out / "critic.json").read_text())["history"]
    assert len(history) == 3


def test_resume_after_kill_gives_same_weights(tmp_path, tiny_bert, toy_csv):
    """Kill a run (SIGKILL) mid-epoch after a checkpoint, resume it, compare with an uninterrupted run."""
    args = dict(epochs=4, eval_every=3, select="last", lr=1e-3)
    reference = train.train(settings(tiny_bert, toy_csv, tmp_path / "ref", **args), progress=False)

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "critic.cli", "train", "--model", str(tiny_bert), "--data", str(toy_csv),
               "--preset", "gpu", "--max-length", "48", "--epochs", "4", "--batch-size", "32", "--lr", "1e-3",
               "--eval-every", "3", "--select", "last", "--device", "cpu", "--output", str(out)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    killed_at = None
    for line in process.stderr:  # validation lines arrive as the run goes, between progress-bar updates
        step = re.search(r"critic: step (\d+)/", line)
        if step and int(step[1]) >= 9:
            process.send_signal(signal.SIGKILL)
            killed_at = int(step[1])
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL and killed_at is not None
    state = torch.load(out / train.CHECKPOINT, weights_only=False)["state"]
    total = json.loads((reference / "critic.json").read_text())["history"][-1]["step"]
    # Killed mid-run; the checkpoint is step 9's, or step 6's when the kill landed while step 9's was being
    # written (the save is atomic, so the older one is intact).
    assert state["step"] in (6, 9, 12) and state["step"] < total

    resumed = train.train(settings(tiny_bert, toy_csv, out, **args), progress=False)
    a, b = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()
             if json.loads(line)["event"] == "eval"]
    assert steps == sorted(set(steps))  # no duplicated log lines after resuming


def test_checkpoint_of_other_settings_is_refused(tmp_path, tiny_bert, toy_csv):
    train.train(settings(tiny_bert, toy_csv, tmp_path / "r", epochs=1), progress=False)
    with pytest.raises(ValueError, match="belongs to a run with other settings"):
        train.train(settings(tiny_bert, toy_csv, tmp_path / "r", epochs=1, lr=1e-2), progress=False)


def test_torchrun_two_processes_gloo(tmp_path, tiny_bert, toy_csv):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
               "-m", "critic.cli", "train", "--model", str(tiny_bert), "--data", str(toy_csv), "--preset", "gpu",
               "--max-length", "48", "--epochs", "2", "--batch-size", "16", "--lr", "3e-3", "--device", "cpu",
               "--output", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((out / "critic.json").read_text())
    # Each step takes 16 reviews on each of the 2 processes: half the steps of one process with batch 16.
    assert meta["history"][-1]["step"] == 2 * (meta["train_rows"] // 16 // 2)
    assert meta["history"][-1]["val_accuracy"] > 0.8


def test_presets_and_overrides(tmp_path):
    notebook = config.build({"preset": "notebook"})
    assert (notebook.max_length, notebook.truncation, notebook.batch_size, notebook.lr, notebook.epochs,
            notebook.warmup_ratio, notebook.select, notebook.cleaning) == (256, "head", 16, 3e-5, 3, 0.0, "last",
                                                                           "notebook")
    toml = tmp_path / "job.toml"
    toml.write_text('[train]\npreset = "cpu"\nepochs = 2\nlr = 1e-4\n')
    job = config.build({"epochs": "4", "compile": "true"}, toml)
    assert (job.preset, job.epochs, job.lr, job.train_size, job.compile) == ("cpu", 4, 1e-4, 2000, True)
    with pytest.raises(ValueError, match="unknown setting\\(s\\): colour"):
        config.build({"colour": "red", "preset": "cpu"})
    with pytest.raises(ValueError, match="truncation 'middle'"):
        TrainConfig(truncation="middle")
    with pytest.raises(ValueError, match="lr 5.0 is outside"):
        config.build({"lr": "5", "preset": "cpu"})


def test_linear_schedule():
    factor = train.linear_schedule(warmup=2, total=10)
    assert [round(factor(s), 3) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
