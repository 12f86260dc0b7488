import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from critic import config
from critic.cli import main
from critic.config import PretrainConfig
from critic.training import train
from critic.training.pretrain import Masker, pretrain, word_offsets


def pretrain_config(model, data, output, **extra):
    base = dict(
        model=str(model),
        data=str(data),
        max_length=24,
        epochs=3,
        batch_size=16,
        lr=2e-3,
        warmup_ratio=0.0,
        output=str(output),
        device="cpu",
        holdout=0.1,
    )
    return config.build({**base, **extra}, None, PretrainConfig)


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    import synthetic

    path = tmp_path_factory.mktemp("mlm") / "toy.csv"
    synthetic.reviews(600).to_csv(path, index=False)
    return path


def test_masking_follows_bert_and_is_reproducible(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    masker = Masker(tokenizer, 0.15, whole_word=False, seed=1)
    special = sorted(set(tokenizer.all_special_ids))
    ids = torch.randint(max(special) + 1, len(tokenizer), (64, 40))
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    mask = torch.ones_like(ids)
    mask[:8, 30:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    first, again = masker(batch, step=3, rank=0), masker(batch, step=3, rank=0)
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])
    assert not torch.equal(masker(batch, step=4, rank=0)["labels"], first["labels"])
    chosen = first["labels"] != -100
    assert 0.12 < chosen.float().sum() / (mask.sum() - 2 * 64) < 0.18
    assert not chosen[:, 0].any() and not chosen[:, -1].any() and not chosen[mask == 0].any()
    assert torch.equal(first["labels"][chosen], ids[chosen])  # the loss asks for the original token
    replaced = (first["input_ids"] == tokenizer.mask_token_id) & chosen
    assert 0.7 < replaced.sum() / chosen.sum() < 0.9  # 80% [MASK]


def test_whole_word_masking_masks_all_pieces_of_a_word():
    continues = torch.tensor([[False, False, True, True, False, True]])  # [CLS] play ##ing ##s good ##ness
    offsets = word_offsets(continues)
    assert offsets[0, 2, 0] == offsets[0, 1, 1] and offsets[0, 4, 0] != offsets[0, 3, 1]


def test_pretraining_lowers_the_heldout_loss_and_the_encoder_fine_tunes(tiny_bert, toy_file, tmp_path):
    out = pretrain(pretrain_config(tiny_bert, toy_file, tmp_path / "mlm"), progress=False)
    log = [json.loads(line) for line in (out / "pretrain_log.jsonl").read_text().splitlines()]
    evals = [e["holdout_loss"] for e in log if e["event"] == "eval"]
    assert len(evals) == 4 and evals[-1] < evals[0] - 0.5  # before, then after each of 3 epochs
    record = json.loads((out / "pretrain.json").read_text())
    assert record["config"]["data"] == str(toy_file) and record["steps"] > 0
    tuned = train.train(
        config.build(
            dict(
                model=str(out),
                data=str(toy_file),
                preset="gpu",
                max_length=32,
                epochs=2,
                batch_size=32,
                lr=3e-3,
                output=str(tmp_path / "tuned"),
                device="cpu",
            )
        ),
        progress=False,
    )
    assert json.loads((tuned / "critic.json").read_text())["history"][-1]["val_auc"] > 0.95


def test_whole_word_pretraining_runs_from_the_cli(tiny_bert, toy_file, tmp_path):
    out = tmp_path / "wwm"
    assert (
        main(
            [
                "pretrain",
                "--model",
                str(tiny_bert),
                "--data",
                str(toy_file),
                "--max-length",
                "24",
                "--epochs",
                "1",
                "--whole-word",
                "--device",
                "cpu",
                "--train-size",
                "100",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "pretrain.json").read_text())["config"]["whole_word"] is True
    assert (
        main(
            [
                "pretrain",
                "--model",
                str(tiny_bert),
                "--data",
                str(toy_file),
                "--mask-probability",
                "1.5",
                "--output",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )


@pytest.mark.slow  # starts processes or exports to every engine: tens of seconds
def test_interrupted_pretraining_resumes_to_the_same_weights(tiny_bert, toy_file, tmp_path):
    # 30 epochs of the toy text: long enough that the signal lands mid-run, in the first half, where only the new
    # masked-LM head trains (--head-warmup 0.5): the resumed run crosses into the second half and its new schedule
    whole = pretrain(
        pretrain_config(tiny_bert, toy_file, tmp_path / "whole", epochs=30, head_warmup=0.5), progress=False
    )
    script = (
        "import sys; from critic import config; from critic.config import PretrainConfig; "
        "from critic.training.pretrain import pretrain; "
        f"pretrain(config.build(dict(model={str(tiny_bert)!r}, data={str(toy_file)!r}, max_length=24, "
        f"epochs=30, batch_size=16, lr=2e-3, warmup_ratio=0.0, output={str(tmp_path / 'cut')!r}, device='cpu', "
        "holdout=0.1, log_every=1, head_warmup=0.5), None, PretrainConfig), progress=False)"
    )
    env = dict(os.environ)  # the same threads as this process: sums in another order would differ in the last bit
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, env=env)
    log = tmp_path / "cut" / "pretrain_log.jsonl"
    for _ in range(600):
        if log.is_file() and '"train"' in log.read_text():
            break
        if process.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {process.stderr.read()[-2000:]}")
        time.sleep(0.05)
    else:
        pytest.fail("no training step was logged in 30 s")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) != 0
    assert (tmp_path / "cut" / "checkpoint" / "state.pt").is_file()
    cut_at = json.loads((tmp_path / "cut" / "pretrain_log.jsonl").read_text().splitlines()[-1])["step"]
    total = json.loads((whole / "pretrain.json").read_text())["steps"]
    assert cut_at < total / 2
    resumed = pretrain(
        pretrain_config(tiny_bert, toy_file, tmp_path / "cut", epochs=30, log_every=1, head_warmup=0.5), progress=False
    )
    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_head_warmup_trains_the_new_head_alone_then_everything(tiny_bert, toy_file, tmp_path):
    checkpoint = load_file(tiny_bert / "model.safetensors")  # a BertModel: no masked-LM head

    def encoder_unchanged(folder) -> bool:
        weights = load_file(folder / "model.safetensors")
        encoder = {k.removeprefix("bert."): v for k, v in weights.items() if k.startswith("bert.")}
        assert encoder and set(encoder) <= set(checkpoint)
        return all(torch.equal(v, checkpoint[k]) for k, v in encoder.items())

    lines = []
    held = pretrain(
        pretrain_config(tiny_bert, toy_file, tmp_path / "held", epochs=1, head_warmup=1.0),
        log=lines.append,
        progress=False,
    )
    assert encoder_unchanged(held)  # every step was head-only: the encoder is the checkpoint's, to the bit
    evals = [
        json.loads(line)["holdout_loss"]
        for line in (held / "pretrain_log.jsonl").read_text().splitlines()
        if json.loads(line)["event"] == "eval"
    ]
    assert evals[-1] < evals[0] - 0.1  # the new head learned (3.87 -> 3.67: a head alone on a random tiny encoder)
    assert any("train only the new cls.predictions.*" in line for line in lines)
    after = pretrain(
        pretrain_config(tiny_bert, toy_file, tmp_path / "after", epochs=1, head_warmup=0.5), progress=False
    )
    assert not encoder_unchanged(after)  # then everything trains


def test_head_warmup_must_be_a_share():
    with pytest.raises(ValueError, match="head_warmup 1.5 is outside"):
        config.build(dict(head_warmup=1.5), None, PretrainConfig)


def test_head_warmup_starts_the_learning_rate_schedule_again_when_the_encoder_joins():
    from critic.training.pretrain import HeadWarmup

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    warmup = HeadWarmup(model, ["1.weight", "1.bias"], steps=10)
    factor = warmup.schedule(warmup_ratio=0.1, total=110)
    assert factor(9) < 0.2  # the head's own schedule has decayed by the join
    assert factor(10) == pytest.approx(0.1) and factor(19) == pytest.approx(1.0)  # 10 steps of warm-up again
    assert factor(109) < 0.02
    assert HeadWarmup(model, [], steps=10).schedule(0.1, 110) is None  # nothing new: the usual schedule
    assert HeadWarmup(model, ["1.weight"], steps=0).schedule(0.1, 110) is None


def test_a_full_disk_while_saving_the_encoder_leaves_no_half_folder_and_a_rerun_saves_it(
    tiny_bert, toy_file, tmp_path, monkeypatch
):
    from transformers import PreTrainedTokenizerBase

    out = tmp_path / "mlm"
    real = PreTrainedTokenizerBase.save_pretrained

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", full_disk)
    with pytest.raises(OSError, match="No space left"):
        pretrain(pretrain_config(tiny_bert, toy_file, out, epochs=1), progress=False)
    assert not (out / "model.safetensors").exists() and not (out / "pretrain.json").exists()
    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", real)
    pretrain(pretrain_config(tiny_bert, toy_file, out, epochs=1), progress=False)
    assert json.loads((out / "pretrain.json").read_text())["steps"] > 0 and (out / "model.safetensors").is_file()
