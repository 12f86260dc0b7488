"""In-domain masked-language-model training of an encoder on review text (Sun et al. 2019: +1 point on IMDB for
BERT-base). BERT's recipe: 15% of the tokens chosen (or whole words), 80% of those replaced by [MASK], 10% by a
random token, 10% left as they are (transformers' DataCollatorForLanguageModeling does the masking). Reviews longer
than the window are cut into several sequences, so every token of the training split is read; validation and test
text never are. The loop is train's: the same optimiser, batches, checkpoints, interruption and resume, and its
result is an encoder folder that `critic train --model FOLDER` fine-tunes."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from critic import data, model as modelling, sources
from critic.config import PretrainConfig
from critic.text import Encoder, Ragged, frame_windows, pad
from critic.loop import (CHECKPOINT, Clock, Distributed, LossMeter, TrainingStep, RunState, read_ahead, append_log,
                          InterruptFlag, progress_bar, truncate_log, checkpoint_settings, linear_schedule, plan_batches, resume,
                          save_checkpoint, seed_everything, stop_interrupted)

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
            raise ValueError(f"{tokenizer.name_or_path}: the tokenizer has no mask token; it cannot be pre-trained "
                             f"with masked language modelling")
        self.collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability,
                                                        whole_word_mask=whole_word, mask_replace_prob=0.8,
                                                        random_replace_prob=0.1)
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.continues = torch.from_numpy(word_continuations(tokenizer)) if whole_word else None
        self.seed = seed

    def __call__(self, batch: dict, step: int, rank: int) -> dict:
        ids = batch["input_ids"].clone()
        special = torch.isin(ids, self.special) | (batch["attention_mask"] == 0)
        self.collator.generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 1009 + rank)
        offsets = None if self.continues is None else word_offsets(self.continues[ids])
        masked, labels = self.collator.torch_mask_tokens(ids, special_tokens_mask=special.long(),
                                                         offset_mapping=offsets)
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
    say(f"{len(texts):,} training reviews -> {len(framed):,} sequences of up to {config.max_length} tokens "
        f"({int(framed.lengths.sum()):,} tokens)")
    return framed


def masked_batches(steps: list[np.ndarray], first_step: int, inputs: Ragged, masker: Masker, pad_id: int,
                   multiple: int, rank: int, world: int, pin: bool) -> Iterator[tuple[dict, int]]:
    """(this process's masked share of each global batch, the global batch's masked-token count)."""

    def prepare_one(step: int, rows_global: np.ndarray) -> tuple[dict, int]:
        shares = [masker(pad(inputs, rows, pad_id, multiple), step, r) for r, rows in
                  enumerate(np.array_split(rows_global, world))]  # every share's mask, for the global count
        batch = shares[rank]
        count = sum(int((share["labels"] != -100).sum()) for share in shares)
        return ({k: v.pin_memory() for k, v in batch.items()} if pin else batch), max(count, 1)

    prepared = (prepare_one(first_step + i, rows) for i, rows in enumerate(steps))
    return read_ahead(prepared, depth=4) if pin else prepared


def holdout_loss(model, inputs: Ragged, masker: Masker, device: torch.device, precision: str, pad_id: int,
                 multiple: int) -> float:
    """Mean masked-token loss on the held-out sequences, with the same masks every time."""
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(inputs), 64):
            batch = masker(pad(inputs, np.arange(start, min(start + 64, len(inputs))), pad_id, multiple), -1 - start,
                           0)
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            with modelling.autocast(device, precision):
                logits = model(**batch).logits
            total += float(masked_token_loss(logits.float(), {"labels": labels}))
            count += int((labels != -100).sum())
    model.train()
    return total / max(count, 1)


def masked_lm(name: str, say: Callable[[str], None]):
    """(the encoder with a masked-language-model head in fp32, its tokenizer, the names of the parameters the
    checkpoint lacks: a new head's, where it has none)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    base = sources.resolve_model(name, log=say)
    modelling.quiet_transformers()
    model, loading = AutoModelForMaskedLM.from_pretrained(base, dtype=torch.float32, output_loading_info=True)
    new = {param for param, _ in model.named_parameters()} & set(loading["missing_keys"])
    return model, AutoTokenizer.from_pretrained(base), sorted(new)


def groups(names: list[str]) -> str:
    """Parameter names by module, for a message: cls.predictions.bias, cls.predictions.transform… -> cls.predictions.*"""
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
    held = order[:int(len(order) * share)]
    return everything.take(order[len(held):]), everything.take(held)


def record_holdout(output: Path, state: RunState, epoch: float, loss: float, say: Callable[[str], None]) -> None:
    state.history.append({"step": state.step, "epoch": epoch, "holdout_loss": loss})
    append_log(output / "pretrain_log.jsonl", {"event": "eval", **state.history[-1]})
    say(f"epoch {epoch:.0f}: held-out masked-token loss {loss:.4f} (perplexity {np.exp(loss):.2f})")


def pretrain(config: PretrainConfig, log: Callable[[str], None] | None = None, progress: bool = True) -> Path:
    """Masked-language-model training as `config` says; returns the encoder folder. Resumes from OUTPUT's
    checkpoint."""
    dist = Distributed(config.device)
    say = (log or (lambda m: print(f"critic: {m}", file=sys.stderr))) if dist.main else (lambda m: None)
    output = Path(config.output)
    dist.open_output(output, say)
    seed_everything(config.seed)
    model, tokenizer, new = masked_lm(config.model, say)
    encoder = Encoder(tokenizer)
    with dist.local_main_first():
        train_seqs, held_seqs = split_holdout(sequences(config, encoder, say), config.holdout, config.seed)

    device = dist.device
    precision = modelling.resolve_precision(config.precision, device)
    multiple = modelling.pad_multiple(device)
    by_tokens = config.batching == "tokens" or (config.batching == "auto" and device.type == "cuda")
    plan = plan_batches(train_seqs.lengths, config, dist.world, by_tokens, multiple)
    model.to(device).train()
    masker = Masker(tokenizer, config.mask_probability, config.whole_word, config.seed)
    warmup = HeadWarmup(model, new, round(config.head_warmup * plan.total))
    training_step = TrainingStep(model, config, device, precision, dist.world, plan.total, masked_token_loss,
                                before_update=warmup, schedule=warmup.schedule(config.warmup_ratio, plan.total))
    resumable = checkpoint_settings(config, dist.world, precision)
    checkpoint_path = output / CHECKPOINT
    state = resume(checkpoint_path, model, training_step, resumable, dist, plan.total, say,
                   finished=lambda done: done.step >= plan.total, saved=lambda: (output / PRETRAIN_RECORD).is_file())
    if state is None:
        dist.close()
        return output
    if dist.main:
        config.save(output / "pretrain_config.json")
        truncate_log(output / "pretrain_log.jsonl", state.step)
    say(f"masked-language-model training of {config.model}: {len(train_seqs):,} sequences, {len(held_seqs):,} held "
        f"out; {plan.total:,} steps; {device}, {precision}"
        + (", whole-word masking" if config.whole_word else "")
        + (f"; the first {warmup.steps:,} steps train only the new {groups(new)}" if warmup.steps else ""))
    if new and not warmup.steps:
        say(f"{config.model} has no trained {groups(new)}: it starts random (--head-warmup trains it alone first)")
    if dist.main and state.step == 0 and len(held_seqs):
        loss = holdout_loss(model, held_seqs, masker, device, precision, encoder.pad_id, multiple)
        append_log(output / "pretrain_log.jsonl", {"event": "eval", "step": 0, "epoch": 0.0, "holdout_loss": loss})
        say(f"before: held-out masked-token loss {loss:.4f}")

    interrupted = InterruptFlag()
    bar = progress_bar(plan.total, state.step, progress and dist.main)
    losses = LossMeter(device)
    clock = Clock(device)
    epoch_ends = set(plan.epoch_ends)
    try:
        for batch, count in masked_batches(plan.steps[state.step:], state.step, train_seqs, masker, encoder.pad_id,
                                           multiple, dist.rank, dist.world, pin=device.type == "cuda"):
            summed = training_step.run(batch, count)
            losses.add(summed, int((batch["labels"] != -100).sum()))
            state.step += 1
            if bar is not None:
                bar.update(1)
            at_log_point = state.step % config.log_every == 0
            if at_log_point and dist.main:
                loss = losses.take()
                append_log(output / "pretrain_log.jsonl", {"event": "train", "step": state.step, "loss": loss,
                                                            "lr": training_step.scheduler.get_last_lr()[0]})
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.3f}")
            if state.step in epoch_ends:
                with clock.pause():
                    if dist.main and len(held_seqs):
                        record_holdout(output, state, plan.epoch_at(state.step),
                                       holdout_loss(model, held_seqs, masker, device, precision, encoder.pad_id,
                                                    multiple), say)
                    save_checkpoint(checkpoint_path, dist, model, training_step, state, resumable)
            if (dist.world == 1 or at_log_point) and dist.any(interrupted.raised):
                stop_interrupted(checkpoint_path, dist, model, training_step, state, resumable)
    finally:
        if bar is not None:
            bar.close()
        interrupted.restore()
    if dist.main:
        save_encoder(model, tokenizer, output, config, state, clock)
        say(f"encoder in {output}: fine-tune it with `critic train --model {output}`")
    dist.barrier()
    dist.close()
    return output


def save_encoder(model, tokenizer, output: Path, config: PretrainConfig, state: RunState, clock: Clock) -> None:
    """A standard Hugging Face folder (the encoder with its MLM head; a classifier built from it drops the head),
    written as one set (a crash leaves the previous one or this one; a rerun saves it again)."""
    model = getattr(model, "_orig_mod", model)

    def write(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / PRETRAIN_RECORD).write_text(json.dumps({
            "base_model": config.model, "data": config.data, "history": state.history, "steps": state.step,
            "train_seconds": clock.training_seconds(), "finished": time.time(), "config": vars(config)}, indent=2))

    modelling.write_set(output, write)
