import argparse
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import synthetic
import torch
from ports import free_port
from safetensors.torch import load_file

from critic import config, data
from critic.config import TrainConfig
from critic.training import final_save, fine_tuning, inputs, train
from critic.training.batches import plan_batches
from critic.training.checkpoint import CHECKPOINT, atomic_save, checkpoint_settings, truncate_log
from critic.training.processes import Distributed
from critic.training.step import Machine, freeze_lowest, layers_apart, linear_schedule, parameter_groups


def settings(model, data, output, **extra):
    base = dict(
        model=str(model),
        data=str(data),
        preset="gpu",
        max_length=48,
        epochs=2,
        batch_size=32,
        lr=3e-3,
        output=str(output),
        device="cpu",
    )
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
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "README.md",
        "stats.csv",
        "learning_curve.svg",
        "train_log.jsonl",
        "train_config.json",
        "checkpoint/state.pt",
    ):
        assert (trained / name).is_file(), name
    events = [json.loads(line)["event"] for line in (trained / "train_log.jsonl").read_text().splitlines()]
    assert events.count("eval") == len(meta["history"]) and "train" in events
    assert json.loads((trained / "train_config.json").read_text())["eval_every"] == 10


def test_distilbert_trains(tmp_path, tiny_distilbert, toy_csv):
    out = train.train(settings(tiny_distilbert, toy_csv, tmp_path / "d", epochs=3), progress=False)
    meta = json.loads((out / "critic.json").read_text())
    assert meta["history"][-1]["val_accuracy"] > 0.8


def test_same_seed_same_weights_other_seed_differs(tmp_path, tiny_bert, toy_csv):
    runs = [
        train.train(settings(tiny_bert, toy_csv, tmp_path / name, epochs=1, select="last", seed=seed), progress=False)
        for name, seed in (("a", 1), ("b", 1), ("c", 2))
    ]
    weights = [load_file(run / "model.safetensors") for run in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_early_stopping(tmp_path, tiny_bert, toy_csv):
    # lr 0 never improves after the first evaluation: patience 2 stops at the third.
    out = train.train(
        settings(tiny_bert, toy_csv, tmp_path / "s", lr=1e-12, epochs=5, eval_every=5, patience=2), progress=False
    )
    history = json.loads((out / "critic.json").read_text())["history"]
    assert len(history) == 3


@pytest.mark.slow  # starts processes or exports to every engine: tens of seconds
def test_resume_after_kill_gives_same_weights(tmp_path, tiny_bert, toy_csv):
    """Kill a run (SIGKILL) mid-epoch after a checkpoint, resume it, compare with an uninterrupted run."""
    args = dict(epochs=4, eval_every=3, select="last", lr=1e-3)
    reference = train.train(settings(tiny_bert, toy_csv, tmp_path / "ref", **args), progress=False)

    out = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "critic.cli",
        "train",
        "--model",
        str(tiny_bert),
        "--data",
        str(toy_csv),
        "--preset",
        "gpu",
        "--max-length",
        "48",
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--lr",
        "1e-3",
        "--eval-every",
        "3",
        "--select",
        "last",
        "--device",
        "cpu",
        "--output",
        str(out),
    ]
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
    state = torch.load(out / CHECKPOINT, weights_only=False)["state"]
    total = json.loads((reference / "critic.json").read_text())["history"][-1]["step"]
    # Killed mid-run; the checkpoint is step 9's, or step 6's when the kill landed while step 9's was being
    # written (the save is atomic, so the older one is intact).
    assert state["step"] in (6, 9, 12) and state["step"] < total

    resumed = train.train(settings(tiny_bert, toy_csv, out, **args), progress=False)
    a, b = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [
        json.loads(line)["step"]
        for line in (out / "train_log.jsonl").read_text().splitlines()
        if json.loads(line)["event"] == "eval"
    ]
    assert steps == sorted(set(steps))  # no duplicated log lines after resuming


def test_checkpoint_of_other_settings_is_refused(tmp_path, tiny_bert, toy_csv):
    train.train(settings(tiny_bert, toy_csv, tmp_path / "r", epochs=1), progress=False)
    with pytest.raises(ValueError, match="belongs to a run with other settings"):
        train.train(settings(tiny_bert, toy_csv, tmp_path / "r", epochs=1, lr=1e-2), progress=False)


def torchrun(model, data, out, *extra):
    """`critic train` under torchrun: 2 processes on the CPU (gloo), one thread each."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        "-m",
        "critic.cli",
        "train",
        "--model",
        str(model),
        "--data",
        str(data),
        "--preset",
        "gpu",
        "--max-length",
        "48",
        "--batch-size",
        "16",
        "--lr",
        "3e-3",
        "--device",
        "cpu",
        "--output",
        str(out),
        *map(str, extra),
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def finished(process, timeout=300):
    _, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]


def weights(folder):
    return load_file(folder / "model.safetensors")


@pytest.fixture(scope="module")
def tiny_bert_without_dropout(tmp_path_factory, tiny_bert):
    """The tiny BERT with dropout off: two processes and one then see exactly the same arithmetic."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((tiny_bert / name).read_bytes())
    config = BertConfig.from_pretrained(tiny_bert, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertModel.from_pretrained(tiny_bert, config=config)
    model.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_same_global_batches(tmp_path, tiny_bert_without_dropout, toy_csv):
    """2 gloo processes with 16 reviews each take the same steps as one process with 32: same global batches, and
    the gradients averaged by DDP are the one process's. Weights agree to float rounding (1e-6, fp32)."""
    args = ("--epochs", "2", "--select", "last", "--precision", "fp32")
    ddp = torchrun(tiny_bert_without_dropout, toy_csv, tmp_path / "ddp", *args)
    single = train.train(
        settings(
            tiny_bert_without_dropout,
            toy_csv,
            tmp_path / "one",
            epochs=2,
            select="last",
            precision="fp32",
            batch_size=32,
        ),
        progress=False,
    )
    finished(ddp)
    one, two = weights(single), weights(tmp_path / "ddp")
    assert set(one) == set(two)
    for name in one:
        if name.endswith("key.bias"):
            # Softmax ignores a bias shared by all keys: its true gradient is 0, and Adam turns the rounding noise
            # in its place into lr-sized steps. Only the size of that noise can be compared.
            assert two[name].abs().max() < 1e-3 and one[name].abs().max() < 1e-3
            continue
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-6, msg=name)
    one_meta, two_meta = (json.loads((f / "critic.json").read_text()) for f in (single, tmp_path / "ddp"))
    assert [h["step"] for h in one_meta["history"]] == [h["step"] for h in two_meta["history"]]
    assert two_meta["processes"] == 2 and one_meta["processes"] == 1
    assert abs(one_meta["history"][-1]["val_loss"] - two_meta["history"][-1]["val_loss"]) < 1e-4


@pytest.mark.slow
def test_ddp_dropout_differs_across_processes_and_sigterm_resume_gives_same_weights(tmp_path, tiny_bert, toy_csv):
    """A DDP run stopped by SIGTERM mid-epoch and started again ends with the weights of an uninterrupted one:
    every process's random state (its own dropout) is in the checkpoint."""
    args = ("--epochs", "4", "--eval-every", "5", "--log-every", "1", "--select", "last", "--lr", "1e-3")
    reference = torchrun(tiny_bert, toy_csv, tmp_path / "ref", *args)
    finished(reference)
    saved = torch.load(tmp_path / "ref" / CHECKPOINT, weights_only=False)
    first, second = (process["torch"] for process in saved["rng"]["processes"])
    assert not torch.equal(first, second)  # each process draws its own dropout masks

    out = tmp_path / "stopped"
    process = torchrun(tiny_bert, toy_csv, out, *args)
    for line in process.stderr:
        step = re.search(r"critic: step (\d+)/", line)
        if step and int(step[1]) >= 10:
            process.send_signal(signal.SIGTERM)  # torchrun passes it on to both processes
            break
    process.communicate(timeout=120)
    assert process.returncode != 0
    state = torch.load(out / CHECKPOINT, weights_only=False)["state"]
    total = json.loads((tmp_path / "ref" / "critic.json").read_text())["history"][-1]["step"]
    assert 10 <= state["step"] < total

    finished(torchrun(tiny_bert, toy_csv, out, *args))
    a, b = weights(tmp_path / "ref"), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_few_label_run_under_torchrun_is_fitted_once(tmp_path, tiny_bert):
    """The few-label fit takes seconds: under torchrun the first process fits and saves, the others wait for it
    (before, every process fitted and wrote the same folder at once)."""
    reviews = synthetic.reviews(16 + 60, seed=5)
    reviews["split"] = ["train"] * 16 + ["validation"] * 60
    reviews.to_csv(tmp_path / "few.csv", index=False)
    _, stderr = torchrun(tiny_bert, tmp_path / "few.csv", tmp_path / "few").communicate(timeout=300)
    assert stderr.count("critic: few labels (") == 1 and stderr.count("critic: fitted in") == 1, stderr[-3000:]
    assert json.loads((tmp_path / "few" / "critic.json").read_text())["complete"] is True


@pytest.mark.slow
def test_a_few_label_fit_failing_in_the_first_process_stops_every_process(tmp_path, tiny_distilbert):
    """Only the first process fits; where it fails (here: a DistilBERT body, which takes no mean layer), every
    process stops with its error. torchrun's agent would stop the others without a word; a launcher without one
    (srun, mpirun) would leave them waiting at a barrier for gloo's timeout, 30 minutes."""
    reviews = synthetic.reviews(16 + 60, seed=5)
    reviews["split"] = ["train"] * 16 + ["validation"] * 60
    reviews.to_csv(tmp_path / "few.csv", index=False)
    # without the pair stage, which every process runs (and where each would stop with the same error)
    few = ("--few-labels", "on", "--pair-epochs", "0")
    process = torchrun(tiny_distilbert, tmp_path / "few.csv", tmp_path / "few", *few)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode != 0
    expected = "the first process could not fit the few-label classifier (ValueError: --few-labels:"
    assert expected in stderr, stderr[-3000:]


@pytest.mark.slow
def test_two_processes_tune_the_encoder_on_pairs_then_the_first_fits(tmp_path, tiny_bert):
    """The pair stage under torchrun: each process takes its share of every batch (DDP, the unread pooler left
    out of the reduction), then the first fits the regression on the tuned encoder."""
    reviews = synthetic.reviews(32 + 60, seed=5)
    reviews["split"] = ["train"] * 32 + ["validation"] * 60
    reviews.to_csv(tmp_path / "few.csv", index=False)
    finished(torchrun(tiny_bert, tmp_path / "few.csv", tmp_path / "few", "--few-labels", "on", "--pair-epochs", "2"))
    record = json.loads((tmp_path / "few" / "critic.json").read_text())["few_labels"]["pair_tuning"]
    assert record["steps"] == 2 and len(record["pair_loss_per_epoch"]) == 2  # a global batch of 32 an epoch, 16 each


def test_fp16_with_loss_scaling_recovers_from_overflow(tmp_path, tiny_bert, toy_csv, monkeypatch):
    """fp16 (GPUs without bf16) scales the loss. A scale far too large makes the first steps overflow: they are
    skipped and counted, the scale comes down, and the model still learns, with finite weights."""
    monkeypatch.setattr("critic.training.step.FP16_INIT_SCALE", 2.0**40)
    out = train.train(
        settings(tiny_bert, toy_csv, tmp_path / "fp16", precision="fp16", epochs=3, log_every=5), progress=False
    )
    meta = json.loads((out / "critic.json").read_text())
    assert meta["precision"] == "fp16"
    assert 1 <= meta["fp16_skipped_steps"] < 30
    assert meta["history"][-1]["val_accuracy"] > 0.8
    assert all(torch.isfinite(w).all() for w in weights(out).values())
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    trained = [entry for entry in logged if entry["event"] == "train"]
    assert trained[-1]["loss_scale"] < 2.0**30  # came down from 2**40
    assert trained[-1]["skipped_steps"] == meta["fp16_skipped_steps"]  # logged as it happened


def test_token_budget_plan(tmp_path):
    lengths = np.random.default_rng(0).integers(5, 300, size=2000)
    cfg = TrainConfig(batch_size=8, max_length=256, batching="tokens", epochs=2)
    plan = plan_batches(lengths, cfg, world=2, by_tokens=True, multiple=8)
    for epoch in plan.epochs:
        rows = np.concatenate(epoch)
        assert sorted(rows.tolist()) == list(range(2000))  # every review once an epoch
    for batch in plan.steps:
        assert 2 <= len(batch) <= 4 * 8 * 2
        width = -(-lengths[batch].max() // 8) * 8
        assert len(batch) * width <= 8 * 256 * 2  # the two processes' budgets together
    sizes = [len(b) for b in plan.steps]
    assert max(sizes) > 3 * min(sizes)  # short reviews travel in larger batches
    assert plan.epoch_ends == [len(plan.epochs[0]), plan.total]
    assert plan.epoch_at(len(plan.epochs[0]) // 2) == pytest.approx(0.5, abs=0.05)


def test_batches_read_ahead_in_order_the_producers_error_reaches_the_step_and_a_step_that_stops_stops_it():
    import threading

    from critic.training.batches import read_ahead

    assert list(read_ahead(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise OSError("the disk went away")

    ahead = read_ahead(failing(), depth=2)
    assert next(ahead) == 1
    with pytest.raises(OSError, match="the disk went away"):
        next(ahead)

    produced = []

    def counting():
        for item in range(1000):
            produced.append(item)
            yield item

    before = set(threading.enumerate())
    ahead = read_ahead(counting(), depth=2)
    assert next(ahead) == 0
    (producer,) = [t for t in threading.enumerate() if t.name == "critic-batches" and t not in before]
    ahead.close()  # the loop stopped (an error, an interrupt): the thread ends instead of reading all 1,000
    producer.join(timeout=10)
    assert not producer.is_alive() and len(produced) <= 5


def test_the_cpu_preset_takes_batches_of_8_on_a_small_training_split_unless_a_batch_size_is_given(tmp_path, tiny_bert):
    reviews = tmp_path / "reviews.csv"
    synthetic.reviews(300).to_csv(reviews, index=False)
    settings = dict(
        preset="cpu", model=str(tiny_bert), data=str(reviews), few_labels="off", max_length=32, cascade=False
    )
    out = train.train(config.build({**settings, "output": str(tmp_path / "small")}), progress=False)
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["batch_size"] == 8 and "batches of 8 instead of 16" in saved["notes"][-1]
    more = tmp_path / "more.csv"
    synthetic.reviews(1500).to_csv(more, index=False)
    for given, path in (({"batch_size": 16}, reviews), ({}, more)):  # asked for, or 1,000 training reviews or more
        chosen = fine_tuning.for_small_split(config.build({**settings, **given}), data.load(str(path)))
        assert chosen.batch_size == 16 and not any("batches of 8" in note for note in chosen.notes)
    assert config.build({"preset": "gpu"}).small_split_batch == 0


def test_presets_and_overrides(tmp_path):
    notebook = config.build({"preset": "notebook"})
    assert (
        notebook.max_length,
        notebook.truncation,
        notebook.batch_size,
        notebook.lr,
        notebook.epochs,
        notebook.warmup_ratio,
        notebook.select,
        notebook.cleaning,
    ) == (256, "head", 16, 3e-5, 3, 0.0, "last", "notebook")
    cpu, smaller = config.build({"preset": "cpu"}), config.build({"preset": "cpu", "train_size": "1000", "epochs": "2"})
    assert "2,000 training reviews" in cpu.notes[0] and "1 epoch instead of 3" in cpu.notes[0]
    assert "1,000 training reviews" in smaller.notes[0] and "2 epochs instead of 3" in smaller.notes[0]  # as run
    best, gpu = config.build({"preset": "best"}), config.build({"preset": "gpu"})
    assert (gpu.model, gpu.batch_size, gpu.lr) == ("minilm", 64, 1e-4)  # half the steps: the batch-64 row
    assert (best.model, best.batch_size, best.lr) == ("mpnet", 32, 2e-5)  # the mpnet row
    assert {k: v for k, v in best.to_dict().items() if k not in ("model", "batch_size", "lr", "preset")} == {
        k: v for k, v in gpu.to_dict().items() if k not in ("model", "batch_size", "lr", "preset")
    }
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


def test_settings_are_parsed_by_their_declared_type(tmp_path):
    typed = config.build(
        {
            "preset": "cpu",
            "train_size": "1e4",
            "head_tokens": "none",
            "lr": "3e-5",
            "drop_invalid": "yes",
            "model": "1e4",
        }
    )
    assert (typed.train_size, typed.head_tokens, typed.lr, typed.drop_invalid, typed.model) == (
        10000,
        None,
        3e-5,
        True,
        "1e4",
    )  # a string field keeps what looks like a number
    with pytest.raises(ValueError, match="train_size: expected a whole number, got '2.5'"):
        config.build({"preset": "cpu", "train_size": "2.5"})
    with pytest.raises(ValueError, match="epochs: expected a whole number, got .none."):
        config.build({"preset": "cpu", "epochs": "none"})
    with pytest.raises(ValueError, match="compile: expected true or false, got 'maybe'"):
        config.build({"preset": "cpu", "compile": "maybe"})
    toml = tmp_path / "job.toml"
    toml.write_text('epochs = "three"\n')
    with pytest.raises(ValueError, match="epochs: expected a whole number, got 'three'"):
        config.build({"preset": "cpu"}, toml)
    toml.write_text("epochs = 2.5\nlr = 1\n")
    with pytest.raises(ValueError, match="epochs must be int, got 2.5"):
        config.build({"preset": "cpu"}, toml)


def test_train_help_is_written_beside_each_setting():
    from critic.cli import build_parser

    parser = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    helps = {action.dest: action.help for action in train_parser._actions if action.help != argparse.SUPPRESS}
    for f in dataclasses.fields(TrainConfig):
        if f.name != "notes":
            assert helps[f.name].startswith(f.metadata["help"].replace("%", "%%")), f.name  # argparse's escape
    assert "(default: 512)" in helps["max_length"]
    assert [name for name, text in helps.items() if text.count("(default: ") > 1] == []  # said once, in words
    assert train_parser.parse_args(["--no-calibrate"]).calibrate == "false"
    assert config.build({"preset": "cpu", "calibrate": "false"}).calibrate is False


def test_every_setting_says_whether_a_resume_must_match_it():
    """A new setting that changes the weights, left unmarked, would resume a checkpoint silently mixed: each setting
    of every config must declare it, and the fine-tuning and pre-training configs share the loop's settings."""
    from critic.config import LoopConfig, PretrainConfig

    for kind in (LoopConfig, TrainConfig, PretrainConfig):
        for f in dataclasses.fields(kind):
            assert f.metadata.get("resume") in (True, False), f"{kind.__name__}.{f.name}"
    shared = {f.name for f in dataclasses.fields(LoopConfig)}
    assert shared <= {f.name for f in dataclasses.fields(TrainConfig)}
    assert shared <= {f.name for f in dataclasses.fields(PretrainConfig)}
    job = TrainConfig(lr=3e-5, log_every=7)
    assert job.resume_settings()["lr"] == 3e-5 and "log_every" not in job.resume_settings()
    assert checkpoint_settings(job, 2, "bf16") == {**job.resume_settings(), "precision": "bf16", "processes": 2}


def test_linear_schedule():
    factor = linear_schedule(warmup=2, total=10)
    assert [round(factor(s), 3) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]


def test_layer_decay_slows_the_lower_layers(tiny_bert):
    from critic import modeling

    net, _ = modeling.build(tiny_bert, dropout=0.3)
    assert net.config.hidden_dropout_prob == 0.3 and net.config.attention_probs_dropout_prob == 0.3
    groups = parameter_groups(net, weight_decay=0.01, layer_decay=0.5, lr=1e-3)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(net.named_parameters())
    assert rate[id(named["classifier.weight"])] == 1e-3
    assert rate[id(named["bert.encoder.layer.1.output.dense.weight"])] == 5e-4
    assert rate[id(named["bert.encoder.layer.0.output.dense.weight"])] == 2.5e-4
    assert rate[id(named["bert.embeddings.word_embeddings.weight"])] == 1.25e-4
    assert decay[id(named["bert.encoder.layer.0.output.dense.weight"])] == 0.01
    assert decay[id(named["bert.encoder.layer.0.output.dense.bias"])] == 0.0
    assert len(rate) == len(named)  # every parameter in exactly one group
    flat = parameter_groups(net, 0.01, 1.0, 1e-3)
    assert {g["lr"] for g in flat} == {1e-3}


def test_frozen_layers_keep_the_embeddings_and_the_lowest_layers_as_pretrained(tmp_path, tiny_bert, toy_csv):
    out = train.train(settings(tiny_bert, toy_csv, tmp_path / "f", epochs=1, frozen_layers=1), progress=False)
    before, after = load_file(tiny_bert / "model.safetensors"), load_file(out / "model.safetensors")
    kept = [name for name in before if name.startswith(("embeddings.", "encoder.layer.0."))]
    learnt = [name for name in before if name.startswith("encoder.layer.1.")]
    assert kept and learnt
    assert all(torch.equal(before[name], after[f"bert.{name}"]) for name in kept)
    assert all(not torch.equal(before[name], after[f"bert.{name}"]) for name in learnt)
    assert (
        "the embeddings and the lowest layer of 2 kept as pretrained"
        in json.loads((out / "critic.json").read_text())["notes"]
    )
    assert "lowest layer of 2 kept as pretrained" in (out / "README.md").read_text()  # the model card says so
    with pytest.raises(ValueError, match="has 2 layers; keep one to learn"):
        train.train(settings(tiny_bert, toy_csv, tmp_path / "g", epochs=1, frozen_layers=2), progress=False)


def test_the_cpu_preset_keeps_the_lowest_third_of_the_layers_unless_told():
    cpu = config.build(dict(preset="cpu"))
    assert [cpu.kept_layers(layers) for layers in (2, 3, 6, 12)] == [0, 1, 2, 4]
    assert config.build(dict(preset="cpu", frozen_layers=0)).kept_layers(6) == 0
    assert config.build(dict(preset="gpu")).kept_layers(6) == 0
    assert config.build(dict(preset="gpu", frozen_layers=1)).kept_layers(6) == 1


def test_modernberts_layers_are_told_apart_and_kept():
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
    small = dict(vocab_size=40, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
    modern = ModernBertForSequenceClassification(ModernBertConfig(**small, **ids))  # its layers: model.layers.N
    assert layers_apart(modern) and freeze_lowest(modern, 1) < sum(p.numel() for p in modern.parameters())
    layers = modern.model.layers
    assert not layers[0].attn.Wqkv.weight.requires_grad and layers[1].attn.Wqkv.weight.requires_grad


def test_frozen_layers_compute_their_pretrained_features_without_dropout(tiny_bert):
    from critic.modeling import folder

    model, _ = folder.build(tiny_bert, dropout=0.3)
    freeze_lowest(model, 1)
    model.train()
    dropouts = {name: m.p for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert {p for name, p in dropouts.items() if ".layer.0." in name or "embeddings" in name} == {0.0}
    assert {p for name, p in dropouts.items() if ".layer.1." in name or name == "dropout"} == {0.3}
    ids = torch.randint(5, 40, (2, 12))
    frozen = model.bert.encoder.layer[0]
    first, second = (frozen(model.bert.embeddings(ids))[0] for _ in range(2))
    assert torch.equal(first, second)  # in training mode, as at inference
    learning = model.bert.encoder.layer[1]
    assert not torch.equal(learning(first)[0], learning(first)[0])  # the layers above still draw their dropout


@pytest.mark.parametrize(
    "extra", [{}, {"eval_size": 100_000}, {"eval_size": 50}, {"fold": "2/3"}, {"fold": "2/3", "eval_size": 50}]
)
def test_the_final_validation_texts_are_the_reviews_calibration_reads(tmp_path, tiny_bert, toy_csv, extra):
    from critic.text import prepare

    run = settings(tiny_bert, toy_csv, tmp_path / "v", **extra)
    loaded = inputs.load_inputs(run, lambda line: None)
    texts, reviews, labels = final_save.final_validation(run, loaded, lambda line: None)
    whole = inputs.split_frames(run, loaded.dataset, None)[1]
    assert len(texts) == len(reviews) == len(labels) == len(whole)  # all of them, whatever the run validated on
    again = prepare(texts, loaded.encoder, run.cleaning, loaded.truncation)
    assert np.array_equal(again.offsets, reviews.offsets) and np.array_equal(again.ids, reviews.ids)
    assert list(labels) == list(whole["label"])


def test_cross_validation_fold_validates_inside_the_training_split(tmp_path, tiny_bert, toy_csv):
    from critic import data

    out = train.train(
        settings(tiny_bert, toy_csv, tmp_path / "f", epochs=1, fold="2/3", layer_decay=0.9), progress=False
    )
    meta = json.loads((out / "critic.json").read_text())
    train_split = data.load(str(toy_csv)).split("train")
    held = (data.fold_of(train_split["text"], 3) == 1).sum()
    assert meta["train_rows"] == len(train_split) - held and 0.2 < held / len(train_split) < 0.45
    assert meta["config"]["fold"] == "2/3"
    with pytest.raises(ValueError, match="fold '4/3': need N >= 2 and 1 <= K <= N"):
        TrainConfig(fold="4/3")


def kill_tree(process: subprocess.Popen) -> None:
    """A torchrun and its workers (torchrun starts each worker in a session of its own)."""
    try:
        root = psutil.Process(process.pid)
        for member in [root, *root.children(recursive=True)]:
            member.kill()
    except psutil.NoSuchProcess:
        pass
    process.communicate()


@pytest.fixture
def machines(tiny_bert, toy_csv):
    """Starts one of two machines of a torchrun --nnodes 2 run: one process each, its own cache, a c10d rendezvous
    on this host (the first machine hosts it), one shared OUTPUT. Whatever is still running at the end is killed."""
    started = []

    def start(out, cache, *extra, port, host, shared_store=False):
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--nproc-per-node",
            "1",
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            f"127.0.0.1:{port}",
            "--rdzv-id",
            "two-machines",
            "--rdzv-conf",
            f"is_host={str(host).lower()}",
            "--max-restarts",
            "3",
            "-m",
            "critic.cli",
            "train",
            "--model",
            str(tiny_bert),
            "--data",
            str(toy_csv),
            "--preset",
            "gpu",
            "--max-length",
            "48",
            "--batch-size",
            "16",
            "--lr",
            "3e-3",
            "--device",
            "cpu",
            "--output",
            str(out),
            *map(str, extra),
        ]
        started.append(
            subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env={
                    **os.environ,
                    "OMP_NUM_THREADS": "1",
                    "CRITIC_CACHE": str(cache),
                    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": str(int(not shared_store)),
                },
            )
        )
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            kill_tree(process)


def test_two_machines_train_as_one_and_resume_after_losing_one(tmp_path, tiny_bert, toy_csv, machines):
    """torchrun --nnodes 2: the same weights as two processes on one machine. One machine is then killed mid-run
    (SIGKILL to its torchrun and worker); the survivor's torchrun restarts its worker and waits at the rendezvous;
    the lost machine's command started again rejoins, and the run resumes from the shared checkpoint to the
    weights of the uninterrupted run."""
    args = ("--epochs", "4", "--eval-every", "5", "--select", "last")
    finished(torchrun(tiny_bert, toy_csv, tmp_path / "one-machine", *args))
    caches = tmp_path / "cache-a", tmp_path / "cache-b"
    together = tmp_path / "two-machines"
    port = free_port()
    first = machines(together, caches[0], *args, port=port, host=True, shared_store=True)
    second = machines(together, caches[1], *args, port=port, host=False, shared_store=True)
    logs = first.communicate(timeout=300)[1] + second.communicate(timeout=300)[1]
    assert first.returncode == second.returncode == 0, logs[-3000:]
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 on every machine" in logs  # with torchrun's default, rank 0 warns
    assert all(
        torch.equal(a, b) for a, b in zip(weights(tmp_path / "one-machine").values(), weights(together).values())
    )
    assert json.loads((together / "critic.json").read_text())["processes"] == 2

    out = tmp_path / "lost"
    port = free_port()
    first = machines(out, caches[0], *args, port=port, host=True)
    second = machines(out, caches[1], *args, port=port, host=False)
    checkpoint = out / CHECKPOINT
    deadline = time.monotonic() + 240
    while not checkpoint.is_file() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    assert checkpoint.is_file(), "no checkpoint was written"
    kill_tree(second)  # the second machine is gone, its worker with it
    state = torch.load(checkpoint, weights_only=False)["state"]
    total = json.loads((together / "critic.json").read_text())["history"][-1]["step"]
    assert first.poll() is None and state["step"] < total  # the run had not finished
    again = machines(out, caches[1], *args, port=port, host=False)  # the lost machine's command, started again
    logs = again.communicate(timeout=300)[1] + first.communicate(timeout=300)[1]
    assert again.returncode == 0 and first.returncode == 0, logs[-3000:]  # the survivor restarted its worker
    resumed_at = int(re.search(r"resuming from step (\d+) of", logs)[1])
    assert state["step"] <= resumed_at < total  # (rank 0 may have finished writing a later one as the other died)
    assert all(torch.equal(a, b) for a, b in zip(weights(tmp_path / "one-machine").values(), weights(out).values()))


def _check_shared_in_process(rank: int, store_file: str, folders: list[str], errors) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK="0")
    torch.distributed.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=2)
    try:
        Distributed("cpu").check_shared(Path(folders[rank]))
    except RuntimeError as error:
        errors.put((rank, str(error)))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # starts processes or exports to every engine: tens of seconds
def test_an_output_folder_that_is_not_shared_stops_every_process(tmp_path):
    """Two processes whose OUTPUT is not the same folder (as on machines without a shared filesystem) both stop
    with an error naming the process that cannot see rank 0's files; the same folder passes."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for folders, expected in (([tmp_path / "a", tmp_path / "a"], 0), ([tmp_path / "a", tmp_path / "b"], 2)):
        for folder in folders:
            folder.mkdir(exist_ok=True)
        errors = context.Queue()
        store = tmp_path / f"store-{expected}"
        processes = [
            context.Process(target=_check_shared_in_process, args=(rank, str(store), list(map(str, folders)), errors))
            for rank in (0, 1)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(120)
        found = [errors.get(timeout=5) for _ in range(expected)]
        assert all(process.exitcode == 0 for process in processes)
        assert sorted(rank for rank, _ in found) == list(range(expected))
        assert all(f"rank 1 on {socket.gethostname()} cannot see" in message for _, message in found)
        assert not list((tmp_path / "a").iterdir())  # the marker is cleaned up


@pytest.mark.rowwise_attention
def test_an_mpnet_encoder_trains_with_its_own_attention(tmp_path, tiny_bert, toy_csv):
    """MPNet (the teacher of the accuracy recipe) has relative position bias in its attention: critic's CPU
    row-wise attention must leave it alone, and the tiny MPNet must learn the toy reviews."""
    from transformers import AutoConfig, MPNetConfig, MPNetModel

    from critic.modeling.attention import use_rowwise_attention

    folder = tmp_path / "tiny-mpnet"
    folder.mkdir()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((tiny_bert / name).read_bytes())
    torch.manual_seed(0)
    encoder = MPNetModel(
        MPNetConfig(
            vocab_size=AutoConfig.from_pretrained(tiny_bert).vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=130,
        )
    )
    encoder.save_pretrained(folder)
    assert not use_rowwise_attention(encoder)
    out = train.train(settings(folder, toy_csv, tmp_path / "run", epochs=2), progress=False)
    assert json.loads((out / "critic.json").read_text())["history"][-1]["val_accuracy"] > 0.9


@pytest.mark.parametrize(
    "command",
    [
        "fetch",
        "profile",
        "train",
        "pretrain",
        "tune",
        "distill",
        "evaluate",
        "predict",
        "export",
        "explain",
        "serve",
        "quickstart",
    ],
)
def test_every_command_explains_itself(command, capsys):
    from critic.cli import main

    with pytest.raises(SystemExit) as done:  # a help text argparse cannot format raises instead (a % once did)
        main([command, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: critic {command}")


# ------------------------------------------------------------------ the final save (security review 2 and 5)


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_full_disk_during_the_final_save_keeps_the_last_good_model_and_a_rerun_completes_it(
    tmp_path, tiny_bert, toy_csv, monkeypatch
):
    """The disk fills while calibration writes the final model: the folder keeps the best model as it was saved at
    validation (not a mix, not a truncated file), and running the same command again finishes the run."""
    from critic import modeling

    out = tmp_path / "run"
    real_calibrate, real_write_record = final_save.calibrate, modeling.write_record
    before = {}

    def calibrate(output, *args):
        before["weights"] = sha256(output / "model.safetensors")
        return real_calibrate(output, *args)

    def full_disk(folder, record):
        if record.calibration is not None:
            raise OSError(28, "No space left on device")
        return real_write_record(folder, record)

    monkeypatch.setattr(final_save, "calibrate", calibrate)
    monkeypatch.setattr(modeling.folder, "write_record", full_disk)
    with pytest.raises(OSError, match="No space left"):
        train.train(settings(tiny_bert, toy_csv, out, epochs=1), progress=False)
    assert sha256(out / "model.safetensors") == before["weights"]
    meta = json.loads((out / "critic.json").read_text())
    assert meta["selected"].startswith("best") and "calibration" not in meta and "complete" not in meta
    modeling.load(out)

    monkeypatch.setattr(modeling.folder, "write_record", real_write_record)
    assert train.train(settings(tiny_bert, toy_csv, out, epochs=1), progress=False) == out
    meta = json.loads((out / "critic.json").read_text())
    assert meta["complete"] is True and "applied" in meta["calibration"] and meta["history"]
    assert (out / "stats.csv").is_file() and not (out / ".saving").exists()


SIGTERM_IN_THE_FINAL_SAVE = """
import json, os, signal, sys
from critic import config, modeling
from critic.training import train

real = modeling.folder.write_record

def write_record(folder, record):
    if record.calibration is not None:  # calibration is writing the final model
        os.kill(os.getpid(), signal.SIGTERM)
    return real(folder, record)

modeling.folder.write_record = write_record
train.train(config.build(json.loads(sys.argv[1])), progress=False)
"""


@pytest.mark.slow  # starts processes or exports to every engine: tens of seconds
def test_sigterm_during_the_final_save_keeps_the_last_model_and_a_rerun_completes_it(tmp_path, tiny_bert, toy_csv):
    from critic import modeling

    out = tmp_path / "run"
    options = dict(
        model=str(tiny_bert),
        data=str(toy_csv),
        preset="gpu",
        max_length=48,
        epochs=1,
        batch_size=32,
        lr=3e-3,
        output=str(out),
        device="cpu",
        select="last",
    )
    script = tmp_path / "killed.py"
    script.write_text(SIGTERM_IN_THE_FINAL_SAVE)
    killed = subprocess.run([sys.executable, str(script), json.dumps(options)], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGTERM, killed.stderr
    last = torch.load(out / "checkpoint" / "state.pt", weights_only=True)["model"]
    saved = load_file(out / "model.safetensors")
    assert all(torch.equal(saved[name], last[name]) for name in saved)  # the last model, whole, uncalibrated
    assert "complete" not in json.loads((out / "critic.json").read_text())
    modeling.load(out)
    assert train.train(config.build(options), progress=False) == out
    meta = json.loads((out / "critic.json").read_text())
    assert meta["complete"] is True and "applied" in meta["calibration"]


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, tiny_bert, toy_csv):
    """Anyone who can write the output folder (a shared one, on several machines) could put a pickle there that
    runs code when the run resumes: the checkpoint is loaded as tensors and plain values only."""
    out = tmp_path / "run"
    proof = tmp_path / "code-ran"
    (out / "checkpoint").mkdir(parents=True)

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {proof}",))

    torch.save({"model": Payload()}, out / "checkpoint" / "state.pt")
    with pytest.raises(ValueError, match="not a checkpoint critic wrote .*loads only tensors and plain values"):
        train.train(settings(tiny_bert, toy_csv, out, epochs=1), progress=False)
    assert not proof.exists()


def test_a_model_answering_one_class_for_nearly_every_review_is_named():
    names = ("negative", "neutral", "positive")
    labels = np.array([2] * 64 + [0] * 26 + [1] * 10)
    predicted = np.full(100, 2)
    predicted[64:67] = 0  # three of the negatives found, everything else called positive
    note = final_save.one_sided(predicted, labels, names)
    assert "answers 'positive' for 97% of the validation reviews, of which 64% are" in note
    assert "balanced accuracy 0.37, 0.33 by chance" in note
    assert note.endswith("label more reviews of the other classes")
    # fine-tuned in few steps (600 IMDB labels in batches of 16: 34 steps), the advice is to train in more
    few = final_save.one_sided(predicted, labels, names, trained_steps=34)
    assert few.endswith("it trained in 34 steps: train in more (smaller batches, --batch-size 8, or more --epochs)")
    assert final_save.one_sided(predicted, labels, names, trained_steps=500).endswith("of the other classes")
    assert final_save.one_sided(labels, labels, names) is None  # a model that is right
    assert final_save.one_sided(np.full(100, 2), np.full(100, 2), names) is None  # data that is one class


def test_a_compiled_run_pads_to_few_widths():
    """torch.compile specialises on batch widths: compiled, a run's widths are multiples of 64 (at most 4 at 256
    tokens), where eager batches round to 8 on a GPU and not at all on a CPU."""
    compiled = config.build({"preset": "gpu", "compile": "true", "max_length": "256"})
    eager = config.build({"preset": "gpu", "max_length": "256"})
    cuda = torch.device("cuda")
    assert Machine.choose(compiled, cuda).multiple == 64
    assert Machine.choose(eager, cuda).multiple == 8
    lengths = np.minimum(np.random.default_rng(0).lognormal(5.3, 0.6, 3000).astype(int) + 10, 256)

    def shapes(job) -> set:
        multiple = Machine.choose(job, cuda).multiple
        batches = plan_batches(lengths, job, 1, True, multiple).epochs[0]
        return {(len(rows), -(-int(lengths[rows].max()) // multiple) * multiple) for rows in batches}

    assert {width for _, width in shapes(compiled)} <= {64, 128, 192, 256}
    print(f"batch shapes in an epoch: {len(shapes(eager))} eager, {len(shapes(compiled))} compiled")
    assert len(shapes(compiled)) * 3 < len(shapes(eager))


def test_a_log_line_cut_short_and_a_failed_checkpoint_write_leave_a_run_that_resumes(tmp_path, monkeypatch):
    """Before: a crash in the middle of a train_log.jsonl write broke every resume (JSONDecodeError), and a failed
    checkpoint write left state.partial behind."""
    import json

    log = tmp_path / "train_log.jsonl"
    log.write_text(json.dumps({"step": 1}) + "\n" + json.dumps({"step": 3}) + "\n" + '{"step": 4, "lo')
    truncate_log(log, 2)
    assert log.read_text() == json.dumps({"step": 1}) + "\n"

    def full_disk(obj, path):
        open(path, "wb").write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_save({"step": 5}, tmp_path / "checkpoint" / "state.pt")
    assert list((tmp_path / "checkpoint").iterdir()) == []


def test_every_setting_is_shown_once_under_its_concern_and_checked_there():
    from critic.config import PretrainConfig, setting_groups

    for kind in (TrainConfig, PretrainConfig):
        groups = setting_groups(kind)
        shown = [f.name for _, fields in groups for f in fields]
        assert sorted(shown) == sorted(f.name for f in dataclasses.fields(kind))  # each once, none left out
    headings = dict(setting_groups(TrainConfig))
    assert [f.name for f in headings["distillation"]] == [
        "teacher",
        "teacher_share",
        "teacher_temperature",
        "teacher_windows",
    ]
    assert [f.name for f in dict(setting_groups(PretrainConfig))["pre-training"]][0] == "mask_probability"
    for bad in ({"teacher_share": 2.0}, {"pair_epochs": -1}, {"window_pool": "median"}, {"metric": "f1"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)
