"""In-domain masked-language-model training of an encoder on review text (Sun et al. 2019: +1 point on IMDB for
BERT-base). BERT's recipe: 15% of the tokens chosen (or whole words), 80% of those replaced by [MASK], 10% by a
random token, 10% left as they are (transformers' DataCollatorForLanguageModeling does the masking). Reviews longer
than the window are cut into several sequences, so every token of the training split is read; validation and test
text never are. It is a job of the one training loop (critic.training.loop): the same step, batches, checkpoints,
interruption and resume as fine-tuning; its result is an encoder folder that `critic train --model FOLDER`
fine-tunes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from critic import data, modeling
from critic.config import PretrainConfig
from critic.data import catalogue, sources
from critic.text import Encoder, Ragged, frame_windows, pad
from critic.training import loop
from critic.training.batches import Plan, pinned_ahead
from critic.training.checkpoint import RunState, append_log
from critic.training.processes import Distributed
from critic.training.step import Clock, Machine, TrainingStep, linear_schedule

PRETRAIN_RECORD = "pretrain.json"  # written with the encoder, as one set: a folder with it holds a finished run


def masked_token_loss(logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy over the masked positions only (label -100 elsewhere), summed."""
    return F.cross_entropy(logits.flatten(0, 1), targets["labels"].flatten(), ignore_index=-100, reduction="sum")


class Masker:
    """BERT masking of a padded batch, reproducible per step: each step's masks come from its own seed, so a
    resumed run masks exactly as an uninterrupted one, whichever thread prepares the batch."""

    def __init__(self, tokenizer, probability: float, whole_word: bool, seed: int):
        from transformers import DataCollatorForLanguageModeling

        if tokenizer.mask_token is None:
            raise ValueError(
                f"{tokenizer.name_or_path}: the tokenizer has no mask token; it cannot be pre-trained "
                f"with masked language modelling"
            )
        self.collator = DataCollatorForLanguageModeling(
            tokenizer,
            mlm_probability=probability,
            whole_word_mask=whole_word,
            mask_replace_prob=0.8,
            random_replace_prob=0.1,
        )
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.continues = torch.from_numpy(word_continuations(tokenizer)) if whole_word else None
        self.seed = seed

    def __call__(self, batch: dict, step: int, rank: int) -> dict:
        ids = batch["input_ids"].clone()
        special = torch.isin(ids, self.special) | (batch["attention_mask"] == 0)
        self.collator.generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 1009 + rank)
        offsets = None if self.continues is None else word_offsets(self.continues[ids])
        masked, labels = self.collator.torch_mask_tokens(
            ids, special_tokens_mask=special.long(), offset_mapping=offsets
        )
        return {"input_ids": masked, "attention_mask": batch["attention_mask"], "labels": labels}


def word_continuations(tokenizer) -> np.ndarray:
    """Per vocabulary id: does the token continue the previous token's word? WordPiece marks continuations
    (`##ing`); SentencePiece (`▁the`) and byte-level BPE (`Ġthe`) mark word starts instead."""
    vocab = tokenizer.get_vocab()
    tokens = [""] * (max(vocab.values()) + 1)
    for token, i in vocab.items():
        tokens[i] = token
    if any(t.startswith("##") for t in tokens):
        return np.array([t.startswith("##") for t in tokens])
    marker = "▁" if any(t.startswith("▁") for t in tokens) else "Ġ"
    return np.array([bool(t) and not t.startswith(marker) for t in tokens])


def word_offsets(continues: torch.Tensor) -> np.ndarray:
    """Character offsets the collator's whole-word masking reads words from: a token that continues a word starts
    where the previous one ended; any other starts one character later."""
    start = torch.cumsum(torch.where(continues, 1, 2), dim=1)
    return torch.stack([start, start + 1], dim=-1).numpy()


def sequences(config: PretrainConfig, encoder: Encoder, say: Callable[[str], None]) -> Ragged:
    """The training split's reviews, cleaned, tokenized (cached) and cut into framed sequences of max_length."""
    columns = data.Columns(config.text_column, config.label_column)
    texts = data.load(config.data, columns, log=say).split("train", config.train_size, config.seed)["text"]
    clean = data.cleaner(config.cleaning)
    tokens = encoder.encode_cached([clean(t) for t in texts], sources.cache_root() / "tokens")
    budget = config.max_length - encoder.specials
    framed, _ = frame_windows(encoder, tokens, config.max_length, stride=budget)  # back to back, the last aligned
    say(
        f"{len(texts):,} training reviews -> {len(framed):,} sequences of up to {config.max_length} tokens "
        f"({int(framed.lengths.sum()):,} tokens)"
    )
    return framed


def holdout_loss(
    model, inputs: Ragged, masker: Masker, device: torch.device, precision: str, pad_id: int, multiple: int
) -> float:
    """Mean masked-token loss on the held-out sequences, with the same masks every time."""
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(inputs), 64):
            batch = masker(pad(inputs, np.arange(start, min(start + 64, len(inputs))), pad_id, multiple), -1 - start, 0)
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            with modeling.autocast(device, precision):
                logits = model(**batch).logits
            total += float(masked_token_loss(logits.float(), {"labels": labels}))
            count += int((labels != -100).sum())
    model.train()
    return total / max(count, 1)


def masked_lm(name: str, say: Callable[[str], None]):
    """(the encoder with a masked-language-model head in fp32, its tokenizer, the names of the parameters the
    checkpoint lacks: a new head's, where it has none)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    base = catalogue.resolve_model(name, log=say)
    modeling.quiet_transformers()
    model, loading = AutoModelForMaskedLM.from_pretrained(base, dtype=torch.float32, output_loading_info=True)
    new = {param for param, _ in model.named_parameters()} & set(loading["missing_keys"])
    return model, AutoTokenizer.from_pretrained(base), sorted(new)


def groups(names: list[str]) -> str:
    """Parameter names by module, for a message: cls.predictions.bias, cls.predictions.transform… ->
    cls.predictions.*"""
    return ", ".join(sorted({".".join(name.split(".")[:2]) + ".*" for name in names}))


class HeadWarmup:
    """For the first `steps` steps only the parameters the checkpoint lacked learn: the others' gradients are
    dropped before the optimiser step (AdamW leaves a parameter without a gradient alone, weight decay included).
    Dropping them, rather than freezing the encoder, keeps DDP's view of the parameters the same all run."""

    def __init__(self, model, new: list[str], steps: int):
        fresh = set(new)
        self.held = [p for name, p in model.named_parameters() if name not in fresh]
        self.steps = steps if fresh else 0

    def schedule(self, warmup_ratio: float, total: int) -> Callable[[int], float] | None:
        """The learning rate's factor by step: the usual warm-up and linear decay, started again when the encoder
        joins, so that its first updates (fresh AdamW moments) are small; None without a head warm-up."""
        if not self.steps:
            return None
        rest = total - self.steps
        head = linear_schedule(max(1, int(warmup_ratio * self.steps)), self.steps)
        everything = linear_schedule(max(1, int(warmup_ratio * rest)), rest)
        return lambda step: head(step) if step < self.steps else everything(step - self.steps)

    def __call__(self, step: int) -> None:
        """Called after the backward pass of step `step` (counted from 0)."""
        if step < self.steps:
            for parameter in self.held:
                parameter.grad = None


def split_holdout(everything: Ragged, share: float, seed: int) -> tuple[Ragged, Ragged]:
    """(training sequences, held-out sequences): a seeded `share` kept aside to measure the masked-token loss."""
    order = np.random.default_rng(seed).permutation(len(everything))
    held = order[: int(len(order) * share)]
    return everything.take(order[len(held) :]), everything.take(held)


def pretrain(config: PretrainConfig, log: Callable[[str], None] | None = None, progress: bool = True) -> Path:
    """Masked-language-model training as `config` says; returns the encoder folder. Resumes from OUTPUT's
    checkpoint."""
    return loop.run(config, lambda say: Pretraining(config, say), log, progress)


class Pretraining(loop.Job):
    """Masked-language-model training as a job of the training loop: the encoder with its masked-LM head, the
    training split cut into sequences (a share held out), BERT's masking per step, the held-out loss after each
    epoch, and the encoder saved as one set with pretrain.json."""

    log_file = "pretrain_log.jsonl"
    config_file = "pretrain_config.json"

    def __init__(self, config: PretrainConfig, say: Callable[[str], None]):
        self.config, self.say, self.output = config, say, Path(config.output)
        self.model, self.tokenizer, self.new = masked_lm(config.model, say)
        self.encoder = Encoder(self.tokenizer)
        self.train_seqs, self.held_seqs = split_holdout(
            sequences(config, self.encoder, say), config.holdout, config.seed
        )
        self.lengths = self.train_seqs.lengths
        self.masker = Masker(self.tokenizer, config.mask_probability, config.whole_word, config.seed)

    def training_step(self, machine: Machine, total: int) -> TrainingStep:
        self.machine = machine
        self.warmup = HeadWarmup(self.model, self.new, round(self.config.head_warmup * total))
        return TrainingStep(
            self.model,
            self.config,
            machine,
            total,
            self.loss,
            before_update=self.warmup,
            schedule=self.warmup.schedule(self.config.warmup_ratio, total),
        )

    def loss(self, forward, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch.pop("labels")
        return masked_token_loss(forward(**batch).logits.float(), {"labels": labels})

    def saved(self) -> bool:
        return (self.output / PRETRAIN_RECORD).is_file()

    def begin(self, state: RunState, plan: Plan, machine: Machine, dist: Distributed) -> None:
        config, new, warmup = self.config, self.new, self.warmup
        self.say(
            f"masked-language-model training of {config.model}: {len(self.train_seqs):,} sequences, "
            f"{len(self.held_seqs):,} held out; {plan.total:,} steps; {machine.device}, {machine.precision}"
            + (", whole-word masking" if config.whole_word else "")
            + (f"; the first {warmup.steps:,} steps train only the new {groups(new)}" if warmup.steps else "")
        )
        if new and not warmup.steps:
            self.say(
                f"{config.model} has no trained {groups(new)}: it starts random (--head-warmup trains it alone first)"
            )
        if dist.main and state.step == 0 and len(self.held_seqs):
            loss = self.holdout_loss()
            append_log(self.output / self.log_file, {"event": "eval", "step": 0, "epoch": 0.0, "holdout_loss": loss})
            self.say(f"before: held-out masked-token loss {loss:.4f}")

    def batches(
        self, steps: list[np.ndarray], first: int, machine: Machine, dist: Distributed
    ) -> Iterator[tuple[dict, int, int]]:
        """(this process's masked share of each global batch, the global batch's masked-token count, its rows)."""
        inputs, pad_id, masker = self.train_seqs, self.encoder.pad_id, self.masker

        def prepare_one(step: int, rows_global: np.ndarray) -> tuple[dict, int, int]:
            shares = [
                masker(pad(inputs, rows, pad_id, machine.multiple), step, r)
                for r, rows in enumerate(np.array_split(rows_global, dist.world))
            ]  # every share's mask, for the global count
            batch = shares[dist.rank]
            count = sum(int((share["labels"] != -100).sum()) for share in shares)
            return batch, max(count, 1), len(rows_global)

        prepared = (prepare_one(first + i, rows) for i, rows in enumerate(steps))
        return pinned_ahead(prepared, pin=machine.device.type == "cuda")

    def loss_terms(self, batch: dict) -> int:
        return int((batch["labels"] != -100).sum())

    def validate(self, state: RunState, epoch: float, train_loss: float) -> bool:
        if len(self.held_seqs):
            loss = self.holdout_loss()
            state.history.append({"step": state.step, "epoch": epoch, "holdout_loss": loss, "train_loss": train_loss})
            append_log(self.output / self.log_file, {"event": "eval", **state.history[-1]})
            self.say(f"epoch {epoch:.0f}: held-out masked-token loss {loss:.4f} (perplexity {np.exp(loss):.2f})")
        return False

    def holdout_loss(self) -> float:
        return holdout_loss(
            self.model,
            self.held_seqs,
            self.masker,
            self.machine.device,
            self.machine.precision,
            self.encoder.pad_id,
            self.machine.multiple,
        )

    def finish(self, state: RunState, steps: loop.Steps) -> None:
        save_encoder(self.model, self.tokenizer, self.output, self.config, state, steps.clock)
        self.say(f"encoder in {self.output}: fine-tune it with `critic train --model {self.output}`")


def save_encoder(model, tokenizer, output: Path, config: PretrainConfig, state: RunState, clock: Clock) -> None:
    """A standard Hugging Face folder (the encoder with its MLM head; a classifier built from it drops the head),
    written as one set (a crash leaves the previous one or this one; a rerun saves it again)."""
    model = modeling.uncompiled(model)

    def write(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / PRETRAIN_RECORD).write_text(
            json.dumps(
                {
                    "base_model": config.model,
                    "data": config.data,
                    "history": state.history,
                    "steps": state.step,
                    "train_seconds": clock.training_seconds(),
                    "finished": time.time(),
                    "config": vars(config),
                },
                indent=2,
            )
        )

    modeling.write_set(output, write)
