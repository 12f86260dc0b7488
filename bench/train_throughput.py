"""Training throughput: critic vs Hugging Face Trainer vs the starting notebook's loop, in one run, on the same
model, the same IMDB reviews and the same window. Prints samples/s for each and the ratios last.

    python bench/train_throughput.py                       # CPU: MiniLM, 512 reviews, 256 tokens
    python bench/train_throughput.py --samples 20000 --arch distilbert --batch-size 64   # a GPU

--arch distilbert builds a DistilBERT-base-sized model with random weights (no weights needed; throughput does not
depend on the values). Each contender trains one epoch over the same reviews; tokenization is excluded for all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchlib.harness import sync  # noqa: E402

from critic import config, data, modeling  # noqa: E402
from critic.data import catalogue, sources  # noqa: E402
from critic.training.train import train  # noqa: E402


def model_folder(arch: str, folder: Path) -> Path:
    """MiniLM's real weights, or a randomly initialised DistilBERT-base with MiniLM's (identical) vocabulary."""
    minilm = catalogue.resolve_model("minilm")
    if arch == "minilm":
        return minilm
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig()).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(folder)
    return folder


def notebook_loop(path: Path, texts: list[str], labels: np.ndarray, args, device: torch.device) -> float:
    """The notebook: every review padded to the window, fp32, fixed order batches, AdamW, linear schedule."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    modeling.quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).to(device)
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=args.max_length, return_tensors="pt")
    dataset = torch.utils.data.TensorDataset(encoded["input_ids"], encoded["attention_mask"], torch.tensor(labels))
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.notebook_batch_size, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5, eps=1e-8)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, len(loader))
    model.train()
    sync(device)
    start = time.perf_counter()
    for input_ids, mask, y in loader:
        model.zero_grad()
        loss = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), labels=y.to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    sync(device)
    return len(texts) / (time.perf_counter() - start)


def hf_trainer(
    path: Path, texts: list[str], labels: np.ndarray, args, device: torch.device, out: Path, bf16: bool
) -> float:
    """Trainer as its documentation recommends for speed: dynamic padding, group_by_length, bf16 when asked."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    modeling.quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    encoded = tokenizer(texts, truncation=True, max_length=args.max_length)
    dataset = [
        {"input_ids": ids, "attention_mask": mask, "labels": int(y)}
        for ids, mask, y in zip(encoded["input_ids"], encoded["attention_mask"], labels)
    ]
    gpu = device.type == "cuda"
    import inspect

    # transformers 4 says group_by_length=True, transformers 5 train_sampling_strategy="group_by_length"
    grouping = (
        {"group_by_length": True}
        if "group_by_length" in inspect.signature(TrainingArguments).parameters
        else {"train_sampling_strategy": "group_by_length"}
    )
    training_args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        learning_rate=5e-5,
        **grouping,
        bf16=bf16,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=not gpu,
        dataloader_num_workers=2 if gpu else 0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=training_args, train_dataset=dataset, data_collator=DataCollatorWithPadding(tokenizer)
    )
    result = trainer.train()
    return float(result.metrics["train_samples_per_second"])


def critic_run(path: Path, frame_path: Path, n: int, args, out: Path) -> tuple[float, dict]:
    cfg = config.build(
        dict(
            model=str(path),
            data=str(frame_path),
            preset="gpu",
            train_size=n,
            eval_size=32,
            max_length=args.max_length,
            truncation="head",
            epochs=1,
            batch_size=args.batch_size,
            precision=args.precision,
            compile=args.compile,
            output=str(out),
            device=args.device,
            few_labels="off",  # measures fine-tuning: a small sample would otherwise take the few-label fit
        )
    )
    folder = train(cfg, log=lambda m: None, progress=False)
    meta = json.loads((folder / "critic.json").read_text())
    return float(meta["train_samples_per_second"]), meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["minilm", "distilbert"], default="minilm")
    parser.add_argument("--samples", type=int, default=512, help="IMDB training reviews each contender trains on")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32, help="critic's and Trainer's batch size")
    parser.add_argument("--notebook-batch-size", type=int, default=16)
    parser.add_argument("--precision", default="auto", help="critic's precision (auto: bf16 where the chip has it)")
    parser.add_argument("--compile", action="store_true", help="torch.compile in critic")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip", nargs="*", default=[], choices=["notebook", "trainer"])
    args = parser.parse_args()
    device = modeling.resolve_device(args.device)

    work = Path(tempfile.mkdtemp(prefix="critic-bench-"))
    os.environ.setdefault("CRITIC_CACHE", str(sources.cache_root()))
    path = model_folder(args.arch, work / "model")
    # The same reviews for all: a seeded sample of IMDB saved as a file; critic splits it by text hash (80/10/10)
    # and every contender trains on the training part of that split.
    sample = data.load_dataset("imdb", split="all", size=round(args.samples / 0.8), seed=0)
    frame_path = work / "reviews.csv"
    sample.to_csv(frame_path, index=False)
    frame = data.load(frame_path).split("train")
    texts, labels = frame["text"].map(data.clean_default).tolist(), frame["label"].to_numpy()

    results = {}
    print(
        f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else os.cpu_count()} "
        f"{'GPU' if device.type == 'cuda' else 'CPU cores'}), {args.arch}, {len(frame)} reviews, "
        f"{args.max_length} tokens, torch {torch.__version__}",
        flush=True,
    )
    speed, meta = critic_run(path, frame_path, len(frame), args, work / "critic")
    results["critic"] = speed
    print(
        f"critic       {speed:9.1f} samples/s  (batch {args.batch_size}, length-grouped, dynamic padding, "
        f"precision {meta['config']['precision']}; training steps only: {meta['validation_seconds']:.1f} s of "
        f"validation and checkpoints left out, as Trainer's figure leaves out its set-up)",
        flush=True,
    )
    if "trainer" not in args.skip:
        # Trainer's default precision, and bf16 where the chip has it (a user who knows would switch it on)
        bf16_ok = torch.cuda.is_bf16_supported() if device.type == "cuda" else modeling.cpu_has_bf16()
        variants = (
            [("hf_trainer_bf16", True)]
            if device.type == "cuda"
            else [("hf_trainer", False)] + ([("hf_trainer_bf16", True)] if bf16_ok else [])
        )
        for name, bf16 in variants:
            results[name] = hf_trainer(path, texts, labels, args, device, work / name, bf16)
            print(
                f"HF Trainer   {results[name]:9.1f} samples/s  (batch {args.batch_size}, group_by_length, "
                f"dynamic padding, {'bf16' if bf16 else 'fp32'})",
                flush=True,
            )
    if "notebook" not in args.skip:
        results["notebook"] = notebook_loop(path, texts, labels, args, device)
        print(
            f"notebook     {results['notebook']:9.1f} samples/s  (batch {args.notebook_batch_size}, padded to "
            f"{args.max_length}, fp32)",
            flush=True,
        )
    for peer in ("hf_trainer", "hf_trainer_bf16", "notebook"):
        if peer in results:
            print(f"ratio critic / {peer}: {results['critic'] / results[peer]:.2f}x")


if __name__ == "__main__":
    main()
