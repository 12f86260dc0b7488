"""Tokenization once, truncation (head, tail, head+tail), sliding windows, length-grouped padded batches.

Texts are tokenized once, without special tokens and without truncation, into a ragged array (flat ids +
offsets) that is cached on disk; truncation and windows are then cheap numpy slices, so changing the
strategy or the maximum length never tokenizes again.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

STRATEGIES = ("head", "tail", "head+tail")
LONG_REVIEW_MODES = ("truncate", "windows")  # reviews longer than the window: cut, or scored in overlapping windows
POOLS = ("mean-prob", "mean-logit", "max-confidence")  # how overlapping windows' scores combine
DEFAULT_LONG_REVIEWS = "truncate"  # a model's default, unless its training chose otherwise (critic.json's long_reviews)
DEFAULT_POOL = "max-confidence"  # the best of the three on IMDB (docs/benchmarks.md)


@dataclass(frozen=True)
class Truncation:
    """How a review longer than the window is cut: keep the first tokens, the last, or `head` first + the rest last
    (a `head` as large as the window keeps only the start)."""

    max_length: int = 512
    strategy: str = "head+tail"
    head: int | None = None  # default: a quarter of the window (128 of 512, the best split in Sun et al. 2019)

    def __post_init__(self):
        if self.head is None:
            object.__setattr__(self, "head", self.max_length // 4)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"truncation '{self.strategy}': choose one of {', '.join(STRATEGIES)}")
        if self.max_length < 8:
            raise ValueError(f"max_length {self.max_length} is too small (at least 8)")
        if self.head < 0:
            raise ValueError(f"head {self.head} must not be negative")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Ragged:
    """Token ids of many texts: `ids[offsets[i]:offsets[i+1]]` is text i."""

    ids: np.ndarray  # int32
    offsets: np.ndarray  # int64, len = n + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_pieces(cls, pieces: Sequence[np.ndarray]) -> Ragged:
        offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in pieces], out=offsets[1:])
        return cls(np.concatenate(pieces) if len(pieces) else np.zeros(0, np.int32), offsets)

    def take(self, rows: Sequence[int]) -> Ragged:
        return Ragged.from_pieces([self[i] for i in rows])


def token_ids(backend, texts: Sequence[str], batch: int = 4096) -> Ragged:
    """Every token of every text by a `tokenizers.Tokenizer` set for no truncation or padding, no special tokens."""
    pieces = []
    for start in range(0, len(texts), batch):
        for encoding in backend.encode_batch_fast(list(texts[start : start + batch]), add_special_tokens=False):
            pieces.append(np.asarray(encoding.ids, dtype=np.int32))
    return Ragged.from_pieces(pieces)


class Encoder:
    """Wraps a Hugging Face fast tokenizer: raw ids without special tokens, then our own framing."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        backend = tokenizer.backend_tokenizer
        # A copy without truncation or padding: we want every token, and we frame and pad ourselves.
        self.backend = type(backend).from_str(backend.to_str())
        self.backend.no_truncation()
        self.backend.no_padding()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        framed = tokenizer("hello", add_special_tokens=True)["input_ids"]
        plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
        start = next(i for i in range(len(framed)) if framed[i : i + len(plain)] == plain)
        self.prefix = np.array(framed[:start], dtype=np.int32)
        self.suffix = np.array(framed[start + len(plain) :], dtype=np.int32)
        self.fingerprint = hashlib.sha256(backend.to_str().encode()).hexdigest()[:16]

    @property
    def specials(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def encode(self, texts: Sequence[str], batch: int = 4096) -> Ragged:
        return token_ids(self.backend, texts, batch)

    def encode_cached(self, texts: Sequence[str], cache_dir: Path | None) -> Ragged:
        """Encode, reusing an earlier result for exactly these texts and this tokenizer."""
        if cache_dir is None:
            return self.encode(texts)
        digest = hashlib.sha256(self.fingerprint.encode())
        for text in texts:
            digest.update(hashlib.sha256(text.encode("utf-8")).digest())
        path = Path(cache_dir) / f"tokens-{digest.hexdigest()[:24]}.npz"
        if path.is_file():
            with np.load(path) as stored:
                return Ragged(stored["ids"], stored["offsets"])
        ragged = self.encode(texts)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{socket.gethostname()}-{os.getpid()}.partial.npz")  # a shared cache too
        np.savez(partial, ids=ragged.ids, offsets=ragged.offsets)
        os.replace(partial, path)
        return ragged

    def frame(self, content: np.ndarray) -> np.ndarray:
        return np.concatenate([self.prefix, content, self.suffix])


# The named entities that `data.clean_default` decodes most often; &amp; last, as one pass of html.unescape does.
HTML_ENTITIES = (
    ("&lt;", "<"),
    ("&gt;", ">"),
    ("&quot;", '"'),
    ("&#39;", "'"),
    ("&apos;", "'"),
    ("&nbsp;", " "),
    ("&amp;", "&"),
)
BR_TAG = r"(?i)<br\s*/?>"


def carry_cleaning(tokenizer, cleaning: str) -> bool:
    """Write the `default` cleaning into the tokenizer's own normalizer, so that every Hugging Face consumer of the
    saved folder (transformers.pipeline, text-embeddings-inference …) reads raw reviews as critic does: <br /> tags,
    the common named HTML entities, runs of white space. Numeric entities (&#8230;) cannot be decoded by a
    normalizer and stay as they are (22 in IMDB's 50,000 reviews). On text critic has already cleaned the rules
    change nothing. Returns whether the normalizer now carries them."""
    from tokenizers import Regex, normalizers

    if cleaning != "default" or not getattr(tokenizer, "is_fast", False):
        return False
    backend = tokenizer.backend_tokenizer
    if _carries_cleaning(backend):  # a critic model used as the starting point
        return True
    rules = [normalizers.Replace(entity, char) for entity, char in HTML_ENTITIES]
    rules += [normalizers.Replace(Regex(BR_TAG), " "), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    backend.normalizer = normalizers.Sequence(rules + ([backend.normalizer] if backend.normalizer else []))
    return True


def _carries_cleaning(backend) -> bool:
    return json.dumps(BR_TAG) in backend.to_str()  # the pattern as tokenizer.json spells it


def keep_normalizer(tokenizer, folder: Path) -> None:
    """After `save_pretrained`: a tokenizer that carries the cleaning is saved as the generic fast tokenizer, since
    model-specific classes (BertTokenizer …) rebuild their own normalizer from their settings when loaded and would
    drop the rules; the generic one loads tokenizer.json as it is (transformers 5.17 and 5.24 checked)."""
    if not _carries_cleaning(tokenizer.backend_tokenizer):
        return
    path = Path(folder) / "tokenizer_config.json"
    settings = json.loads(path.read_text())
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(settings, indent=2))


def truncate(ids: np.ndarray, budget: int, strategy: str, head: int) -> np.ndarray:
    """Cut content tokens to `budget` (the window less the special tokens)."""
    if len(ids) <= budget:
        return ids
    if strategy == "head":
        return ids[:budget]
    if strategy == "tail":
        return ids[len(ids) - budget :]
    head = min(head, budget)
    tail = budget - head
    return np.concatenate([ids[:head], ids[len(ids) - tail :]]) if tail else ids[:head]


def windows(ids: np.ndarray, budget: int, stride: int) -> list[np.ndarray]:
    """Overlapping windows of at most `budget` content tokens, each starting `stride` after the previous one;
    the last window ends at the text's end, so every token is seen at least once."""
    if stride <= 0 or stride > budget:
        raise ValueError(f"stride {stride} must lie between 1 and the window's content length {budget}")
    if len(ids) <= budget:
        return [ids]
    starts = list(range(0, len(ids) - budget, stride)) + [len(ids) - budget]
    return [ids[s : s + budget] for s in starts]


def frame_all(encoder: Encoder, ragged: Ragged, truncation: Truncation) -> Ragged:
    """Truncate each text and add the special tokens: the model's inputs, still unpadded."""
    budget = truncation.max_length - encoder.specials
    return Ragged.from_pieces(
        [encoder.frame(truncate(ragged[i], budget, truncation.strategy, truncation.head)) for i in range(len(ragged))]
    )


def frame_windows(encoder: Encoder, ragged: Ragged, max_length: int, stride: int) -> tuple[Ragged, np.ndarray]:
    """Every text cut into overlapping windows, each framed with special tokens; `owners[j]` is window j's text."""
    budget = max_length - encoder.specials
    pieces, owners = [], []
    for i in range(len(ragged)):
        for part in windows(ragged[i], budget, stride):
            pieces.append(encoder.frame(part))
            owners.append(i)
    return Ragged.from_pieces(pieces), np.asarray(owners, np.int64)


def prepare(
    texts: Sequence[str], encoder: Encoder, cleaning: str, truncation: Truncation, cache_dir: Path | None = None
) -> Ragged:
    """Clean, tokenize once (cached when `cache_dir` is given), truncate and frame with special tokens."""
    from critic.data import cleaner

    clean = cleaner(cleaning)
    return frame_all(encoder, encoder.encode_cached([clean(t) for t in texts], cache_dir), truncation)


def pad(ragged: Ragged, rows: Sequence[int], pad_id: int, multiple: int = 8) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask for `rows`, padded to the longest row (rounded up to `multiple`)."""
    import torch  # here: the tokenizer's worker processes (inference.encoding) import this module without torch

    lengths = ragged.lengths[np.asarray(rows)]
    width = int(-(-lengths.max() // multiple) * multiple) if len(rows) else 0
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, (i, n) in enumerate(zip(rows, lengths)):
        input_ids[r, :n] = ragged[i]
        mask[r, :n] = 1
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, seed: int, group: int = 64, max_tokens: int | None = None, multiple: int = 1
) -> list[np.ndarray]:
    """Shuffle, sort by length inside groups of `group` batches, cut into batches, shuffle the batches.

    Batches hold reviews of similar length (little padding) while the order stays random from epoch to epoch.
    Without `max_tokens` every batch holds `batch_size` reviews (the last one fewer). With it, a batch holds as many
    reviews as fit in `max_tokens` padded tokens (widths rounded up to `multiple`), at most `batch_size`: short
    reviews travel in large batches, so a GPU is as busy with them as with long ones.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    chunk = batch_size * group
    batches = []
    for start in range(0, len(order), chunk):
        block = order[start : start + chunk]
        block = block[np.argsort(-lengths[block], kind="stable")]
        at = 0
        while at < len(block):
            size = (
                batch_size
                if max_tokens is None
                else rows_that_fit(int(lengths[block[at]]), max_tokens, batch_size, multiple)
            )  # the longest: sorted first
            batches.append(block[at : at + size])
            at += size
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: np.ndarray, max_tokens: int, max_batch: int = 256) -> Iterator[np.ndarray]:
    """Inference batches: longest first, each holding at most `max_tokens` padded tokens."""
    order = np.argsort(-lengths, kind="stable")
    start = 0
    while start < len(order):
        size = rows_that_fit(int(lengths[order[start]]), max_tokens, max_batch)
        yield order[start : start + size]
        start += size


def rows_that_fit(longest: int, max_tokens: int, max_rows: int, multiple: int = 1) -> int:
    """How many reviews a batch whose longest review has `longest` tokens may hold: its padded width (rounded up
    to `multiple`) times the rows within `max_tokens`, at most `max_rows`, at least one."""
    width = -(-max(longest, 1) // multiple) * multiple
    return max(1, min(max_rows, max_tokens // width))
