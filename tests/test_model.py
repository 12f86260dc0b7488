import pytest
import torch
from transformers import AutoModelForSequenceClassification

from critic.modeling import inference_model
from critic.modeling.attention import ROWWISE_ATTENTION, use_rowwise_attention

pytestmark = pytest.mark.rowwise_attention

CPU = torch.device("cpu")

LENGTHS = [12, 7, 3, 12]


def right_padded(lengths, vocab_size, seed=0):
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.randint(5, vocab_size, (len(lengths), width), generator=generator)
    mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
    return input_ids * mask, mask


def classifier(folder):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).eval()


@pytest.mark.parametrize("encoder", ["tiny_bert", "tiny_distilbert"])
def test_rowwise_attention_equals_the_models_own(encoder, request):
    model = classifier(request.getfixturevalue(encoder))
    fast, autocast = inference_model(model, "fp32", CPU)
    assert autocast == "fp32" and fast.config._attn_implementation == ROWWISE_ATTENTION
    input_ids, mask = right_padded(LENGTHS, model.config.vocab_size)
    with torch.inference_mode():
        expected = model(input_ids=input_ids, attention_mask=mask).logits
        batched = fast(input_ids=input_ids, attention_mask=mask).logits
        alone = torch.cat([fast(input_ids=input_ids[i : i + 1, :n]).logits for i, n in enumerate(LENGTHS)])
    assert torch.allclose(batched, expected, atol=1e-5)
    assert torch.allclose(batched, alone, atol=1e-5)


def test_bf16_copy_leaves_the_original_model_alone(tiny_bert):
    model = classifier(tiny_bert)
    fast, autocast = inference_model(model, "bf16", CPU)
    assert autocast == "fp32" and next(fast.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32 and model.config._attn_implementation == "sdpa"
    input_ids, mask = right_padded(LENGTHS, model.config.vocab_size)
    with torch.inference_mode():
        expected = model(input_ids=input_ids, attention_mask=mask).logits.softmax(-1)
        got = fast(input_ids=input_ids, attention_mask=mask).logits.float().softmax(-1)
    assert (got - expected).abs().max() < 0.02


def test_left_padding_is_refused(tiny_bert):
    fast, _ = inference_model(classifier(tiny_bert), "fp32", CPU)
    input_ids, mask = right_padded(LENGTHS, fast.config.vocab_size)
    with pytest.raises(ValueError, match="right-padded"):
        fast(input_ids=input_ids.flip(1), attention_mask=mask.flip(1))


def test_an_architecture_without_attention_choice_keeps_its_own():
    from transformers import MPNetConfig, MPNetForSequenceClassification

    torch.manual_seed(0)
    model = MPNetForSequenceClassification(
        MPNetConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    ).eval()
    fast, _ = inference_model(model, "fp32", CPU)
    # the row-wise attention is exact, so equal outputs alone would not tell which attention ran
    assert fast.config._attn_implementation != ROWWISE_ATTENTION and not use_rowwise_attention(model)
    input_ids, mask = right_padded(LENGTHS, 60)
    with torch.inference_mode():
        assert torch.allclose(
            fast(input_ids=input_ids, attention_mask=mask).logits,
            model(input_ids=input_ids, attention_mask=mask).logits,
            atol=1e-6,
        )


def test_rowwise_attention_trains_like_the_models_own(tiny_bert):
    import copy

    model = classifier(tiny_bert)  # eval mode: no dropout, both deterministic
    rowwise = copy.deepcopy(model)
    assert use_rowwise_attention(rowwise)
    input_ids, mask = right_padded(LENGTHS, model.config.vocab_size)
    labels = torch.tensor([0, 1, 1, 0])
    for each in (model, rowwise):
        each(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()
    for theirs, ours in zip(model.parameters(), rowwise.parameters()):
        assert torch.allclose(ours.grad, theirs.grad, atol=1e-5)


def test_rowwise_attention_applies_attention_dropout(tiny_bert):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.5
    )
    use_rowwise_attention(model)
    input_ids, mask = right_padded(LENGTHS, model.config.vocab_size)
    model.train()
    first, second = (model(input_ids=input_ids, attention_mask=mask).logits for _ in range(2))
    assert not torch.allclose(first, second)
    model.eval()
    first, second = (model(input_ids=input_ids, attention_mask=mask).logits for _ in range(2))
    assert torch.equal(first, second)


def tiny_classifier(kind: str):
    """A tiny random classifier of each architecture `ready_mask` knows, built here."""
    import transformers

    small = dict(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
    )
    configs = {
        "bert": transformers.BertConfig(**small),
        "roberta": transformers.RobertaConfig(**small),
        "mpnet": transformers.MPNetConfig(**small),
        "distilbert": transformers.DistilBertConfig(
            vocab_size=60, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=40
        ),
    }
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(configs[kind]).eval()


class HostReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the operations that read a tensor's value on the host: on a GPU, each makes the host wait for it."""

    READS = ("aten._local_scalar_dense.default", "aten.is_nonzero.default", "aten.equal.default")

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += str(func) in self.READS
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert", "mpnet"])
@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
def test_the_ready_mask_gives_the_models_own_results_without_a_host_read(kind, weights):
    from critic.modeling import ready_mask

    model = tiny_classifier(kind).to(weights)
    assert model.config._attn_implementation == ("eager" if kind == "mpnet" else "sdpa")
    input_ids, mask = right_padded(LENGTHS, 60)
    full_ids, full_mask = right_padded([12] * 4, 60, seed=1)
    with torch.inference_mode():
        for ids, row_mask, padded in ((input_ids, mask, True), (full_ids, full_mask, False)):
            expected = model(input_ids=ids, attention_mask=row_mask).logits.float()
            ready = ready_mask(model, row_mask, padded)
            assert (ready is None) == (not padded)
            with HostReads() as reads:
                logits = model(input_ids=ids, attention_mask=ready).logits.float()
            assert reads.count == 0
            assert torch.allclose(logits, expected, atol=1e-5 if weights == torch.float32 else 2e-2)


def test_other_architectures_and_the_cpu_keep_the_2d_mask(tiny_bert):
    from critic.modeling import device_batch, ready_mask

    input_ids, mask = right_padded(LENGTHS, 60)
    model = tiny_classifier("bert")
    rowwise, _ = inference_model(model, "fp32", CPU)
    assert ready_mask(rowwise, mask, padded=True) is mask  # the row-wise kernel reads the 2-D mask
    model.config.model_type = "some-new-encoder"
    assert ready_mask(model, mask, padded=True) is mask
    moved = device_batch(tiny_classifier("bert"), {"input_ids": input_ids, "attention_mask": mask}, CPU)
    assert moved["attention_mask"] is mask and moved["input_ids"] is input_ids


def test_the_model_record_reads_an_older_critic_json_and_keeps_what_it_does_not_know(tmp_path):
    """critic.json before the typed record (no format key) reads as today's; a key of a newer critic is written back
    as it was; a change to a field the record does not have is an error, never a silent new key."""
    import json

    from critic import modeling

    older = {
        "name": "old",
        "labels": ["negative", "positive"],
        "cleaning": "default",
        "truncation": {"max_length": 256, "strategy": "head", "head": 256},
        "history": [{"step": 10, "val_accuracy": 0.9}],
        "complete": True,
        "from_a_newer_critic": {"kept": 1},
    }
    (tmp_path / "critic.json").write_text(json.dumps(older))
    record = modeling.ModelRecord.read(tmp_path)
    assert record.format == 2 and record.long_reviews == {"mode": "truncate"} and record.history[0]["step"] == 10
    assert modeling.run_complete(tmp_path)
    modeling.update_record(tmp_path, evaluation={"accuracy": 0.91})
    saved = json.loads((tmp_path / "critic.json").read_text())
    assert saved["from_a_newer_critic"] == {"kept": 1} and saved["evaluation"] == {"accuracy": 0.91}
    assert saved["format"] == 2 and saved["versions"]["torch"] == torch.__version__
    assert "calibration" not in saved  # a field never set is not written
    with pytest.raises(TypeError, match="evalution"):
        modeling.update_record(tmp_path, evalution={"accuracy": 0.5})
    assert json.loads((tmp_path / "critic.json").read_text()) == saved
    (tmp_path / "critic.json").write_text(json.dumps({**saved, "format": 3}))
    with pytest.raises(ValueError, match="format 3, written by a newer critic"):
        modeling.ModelRecord.read(tmp_path)
    (tmp_path / "critic.json").write_text(json.dumps({"name": "half"}))
    with pytest.raises(ValueError, match="has no labels nor truncation: not a model record critic wrote"):
        modeling.ModelRecord.read(tmp_path)
