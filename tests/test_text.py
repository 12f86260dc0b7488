import numpy as np
import pytest
from transformers import AutoTokenizer

from critic.text import (
    Encoder,
    Ragged,
    Truncation,
    frame_all,
    length_grouped_batches,
    pad,
    sorted_batches,
    truncate,
    windows,
)

IDS = np.arange(10, dtype=np.int32)


@pytest.mark.parametrize(
    "strategy,head,expected",
    [
        ("head", 0, [0, 1, 2, 3]),
        ("tail", 0, [6, 7, 8, 9]),
        ("head+tail", 1, [0, 7, 8, 9]),
        ("head+tail", 4, [0, 1, 2, 3]),
        ("head+tail", 9, [0, 1, 2, 3]),
    ],
)
def test_truncate(strategy, head, expected):
    assert truncate(IDS, 4, strategy, head).tolist() == expected
    assert truncate(IDS[:3], 4, strategy, head).tolist() == [0, 1, 2]


def test_windows_cover_every_token_and_end_at_the_end():
    parts = windows(IDS, budget=4, stride=3)
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert [p.tolist() for p in windows(IDS, 4, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]]
    assert [p.tolist() for p in windows(IDS[:4], 4, 2)] == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="stride 5"):
        windows(IDS, 4, 5)


def test_head_defaults_to_a_quarter_of_the_window():
    assert Truncation(512).head == 128 and Truncation(128).head == 32
    assert Truncation(512, head=200).head == 200


def test_truncation_validation():
    with pytest.raises(ValueError, match="choose one of head, tail, head\\+tail"):
        Truncation(strategy="middle")
    with pytest.raises(ValueError, match="too small"):
        Truncation(max_length=4)


def test_encoder_frames_with_special_tokens(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    encoder = Encoder(tokenizer)
    ragged = encoder.encode(["the film was great", "awful"])
    framed = frame_all(encoder, ragged, Truncation(max_length=8))
    expected = [tokenizer(t)["input_ids"] for t in ("the film was great", "awful")]
    assert [framed[i].tolist() for i in range(2)] == expected
    long = encoder.encode(["the " * 20 + "great"])
    cut = frame_all(encoder, long, Truncation(max_length=8, strategy="tail"))
    assert cut[0].tolist() == tokenizer("the the the the the great")["input_ids"]


def test_encode_cached_reuses_result(tiny_bert, tmp_path):
    encoder = Encoder(AutoTokenizer.from_pretrained(tiny_bert))
    first = encoder.encode_cached(["good film", "bad"], tmp_path)
    assert len(list(tmp_path.glob("tokens-*.npz"))) == 1
    second = encoder.encode_cached(["good film", "bad"], tmp_path)
    assert np.array_equal(first.ids, second.ids) and np.array_equal(first.offsets, second.offsets)
    encoder.encode_cached(["good film", "worse"], tmp_path)
    assert len(list(tmp_path.glob("tokens-*.npz"))) == 2


def test_pad_masks_and_width():
    ragged = Ragged(np.array([5, 6, 7, 8, 9, 1], np.int32), np.array([0, 3, 4, 6]))
    batch = pad(ragged, [0, 1, 2], pad_id=0, multiple=4)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0], [9, 1, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]]


def test_length_grouped_batches_cover_all_rows_once_and_group_lengths():
    lengths = np.random.default_rng(0).integers(1, 500, size=1000)
    batches = length_grouped_batches(lengths, batch_size=16, seed=3, group=8)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 60  # random batches would spread over ~450
    assert [b.tolist() for b in batches] == [b.tolist() for b in length_grouped_batches(lengths, 16, seed=3, group=8)]
    assert [b.tolist() for b in batches] != [b.tolist() for b in length_grouped_batches(lengths, 16, seed=4, group=8)]


def test_sorted_batches_respect_token_budget():
    lengths = np.array([100, 10, 50, 10, 10, 400])
    batches = list(sorted_batches(lengths, max_tokens=200))
    assert sorted(np.concatenate(batches).tolist()) == list(range(6))
    assert all(len(b) * lengths[b].max() <= 200 or len(b) == 1 for b in batches)
    assert batches[0].tolist() == [5]
