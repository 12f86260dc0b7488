"""The Classifier: load a trained model and score texts with the same cleaning and truncation as in training.

Follows the scikit-learn / SetFit convention: `Classifier.load(path)`, `.predict(texts)` -> label names,
`.predict_proba(texts)` -> array (n, n_labels) in the order of `.labels`.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from critic import data, model as modelling
from critic.text import Encoder, Ragged, Truncation, frame_all


class Classifier:
    def __init__(self, model, tokenizer, meta: dict, device: torch.device, precision: str = "fp32"):
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        self.device = device
        self.precision = precision
        self.encoder = Encoder(tokenizer)
        self.truncation = Truncation(**meta["truncation"])
        self.cleaning = meta["cleaning"]
        self.labels: list[str] = list(meta["labels"])

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", precision: str = "auto") -> "Classifier":
        device_ = modelling.resolve_device(device)
        model, tokenizer, meta = modelling.load(path, device_)
        return cls(model, tokenizer, meta, device_, modelling.resolve_precision(precision, device_))

    @property
    def name(self) -> str:
        return self.meta.get("name", "critic")

    def encode(self, texts: Sequence[str] | str) -> Ragged:
        """Cleaned, tokenized, not yet truncated: every token of every text."""
        clean = data.cleaner(self.cleaning)
        return self.encoder.encode([clean(t) for t in _check_texts(texts)])

    def proba_from_tokens(self, tokens: Ragged, max_tokens: int = 16384, progress=None) -> np.ndarray:
        inputs = frame_all(self.encoder, tokens, self.truncation)
        logits = modelling.logits(self.model, inputs, self.encoder.pad_id, self.device, self.precision, max_tokens,
                                  progress)
        return modelling.softmax(logits)

    def predict_proba(self, texts: Sequence[str] | str, max_tokens: int = 16384, progress=None) -> np.ndarray:
        return self.proba_from_tokens(self.encode(texts), max_tokens, progress)

    def predict(self, texts: Sequence[str] | str) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def __repr__(self) -> str:
        return (f"Classifier({self.name!r}, labels={self.labels}, window={self.truncation.max_length} "
                f"{self.truncation.strategy}, device={self.device})")


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text {i}: expected a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"text {i}: empty text")
    return texts


# ------------------------------------------------------------------------------------------------ files


def read_texts(path: Path, text_column: str | None = None, chunk: int = 1024) -> Iterator[list[dict]]:
    """Rows of a CSV/TSV, JSONL, Parquet or plain-text file (one review per line), in chunks."""
    suffix = path.suffix.lower()
    if suffix in (".txt", ".text"):
        with open(path, encoding="utf-8") as handle:
            rows = []
            for line in handle:
                rows.append({"text": line.rstrip("\n")})
                if len(rows) == chunk:
                    yield rows
                    rows = []
            if rows:
                yield rows
        return
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk):
            yield batch.to_pylist()
        return
    rows = []
    for _, record in data._records(path):
        rows.append(record)
        if len(rows) == chunk:
            yield rows
            rows = []
    if rows:
        yield rows


def text_key(path: Path, row: dict, wanted: str | None) -> str:
    return data._pick(list(row), wanted, data.TEXT_COLUMNS, "text", path)


class Writer:
    """Writes scored rows in the format the output path names: CSV, TSV, JSONL or Parquet."""

    def __init__(self, path: Path):
        self.path = path
        self.suffix = path.suffix.lower()
        self.handle = None
        self.csv = None
        self.parquet = None

    def write(self, rows: list[dict]) -> None:
        if self.suffix in (".csv", ".tsv", ".txt"):
            if self.handle is None:
                self.handle = open(self.path, "w", encoding="utf-8", newline="")
                self.csv = csv.DictWriter(self.handle, fieldnames=list(rows[0]),
                                          delimiter="\t" if self.suffix == ".tsv" else ",")
                self.csv.writeheader()
            self.csv.writerows(rows)
        elif self.suffix in (".jsonl", ".json"):
            if self.handle is None:
                self.handle = open(self.path, "w", encoding="utf-8")
            self.handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        elif self.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist(rows)
            if self.parquet is None:
                self.parquet = pq.ParquetWriter(self.path, table.schema)
            self.parquet.write_table(table)
        else:
            raise ValueError(f"{self.path}: unknown output format; use .csv, .tsv, .jsonl or .parquet")
        if self.handle is not None:
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.parquet is not None:
            self.parquet.close()


def predict_file(classifier: Classifier, source: Path, target: Path, text_column: str | None = None,
                 chunk: int = 1024, progress: bool = True) -> int:
    """Score every row of `source` into `target` (the input's columns plus label and one probability per label),
    streaming chunk by chunk; returns the number of rows written."""
    total = _count_rows(source)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="review", desc="scoring", disable=not progress, file=sys.stderr, mininterval=1.0)
    writer = Writer(target)
    written = 0
    key = None
    try:
        for rows in read_texts(source, text_column, chunk):
            key = key or text_key(source, rows[0], text_column)
            texts = [row.get(key) for row in rows]
            for offset, text in enumerate(texts):
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(f"{source}, row {written + offset + 1}: empty or missing text in column {key!r}")
            probs = classifier.predict_proba(texts)
            for row, p in zip(rows, probs):
                row["label"] = classifier.labels[int(p.argmax())]
                for name, value in zip(classifier.labels, p):
                    row[f"p_{name}"] = round(float(value), 6)
            writer.write(rows)
            written += len(rows)
            bar.update(len(rows))
    finally:
        writer.close()
        bar.close()
    return written


def _count_rows(path: Path) -> int | None:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix.lower() in (".jsonl", ".txt"):
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    return None  # CSV records may span lines: no cheap count


def iter_labels(probs: np.ndarray, labels: Iterable[str]) -> list[dict]:
    labels = list(labels)
    return [{"label": labels[int(p.argmax())], **{name: float(v) for name, v in zip(labels, p)}} for p in probs]
