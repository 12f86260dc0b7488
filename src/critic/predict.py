"""The Classifier: load a trained model and score texts with the same cleaning and truncation as in training.

Follows the scikit-learn / SetFit convention: `Classifier.load(path)`, `.predict(texts)` -> label names,
`.predict_proba(texts)` -> array (n, n_labels) in the order of `.labels`.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from critic import data, model as modelling
from critic.text import LONG_REVIEW_MODES, POOLS, Encoder, Ragged, Truncation, frame_all, frame_windows

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


@dataclass(frozen=True)
class LongReviews:
    """What to do with reviews longer than the window: `truncate` (the model's truncation strategy), or score
    overlapping `windows` (each `stride` tokens after the previous; default half a window) and pool them."""

    mode: str = "truncate"
    stride: int | None = None
    pool: str = "max-confidence"  # the best of the three on IMDB (docs/benchmarks.md)

    def __post_init__(self):
        if self.mode not in LONG_REVIEW_MODES:
            raise ValueError(f"long reviews '{self.mode}': choose one of {', '.join(LONG_REVIEW_MODES)}")
        if self.pool not in POOLS:
            raise ValueError(f"pool '{self.pool}': choose one of {', '.join(POOLS)}")


class Classifier:
    def __init__(self, model, tokenizer, meta: dict, device: torch.device, precision: str = "fp32",
                 backend: str = "torch", long_reviews: LongReviews | None = None, model_dir: Path | None = None,
                 compile: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        self.device = device
        self.precision = precision
        self.encoder = Encoder(tokenizer)
        self.truncation = Truncation(**meta["truncation"])
        self.cleaning = meta["cleaning"]
        self.labels: list[str] = list(meta["labels"])
        self.long_reviews = long_reviews or LongReviews(**meta.get("long_reviews", {}))  # as saved
        self.backend = backend
        # Tokens per batch: small batches stay in cache on a CPU (measured faster, and a third of the memory with
        # ONNX Runtime); a GPU wants large ones.
        self.max_tokens = 4096 if device.type == "cpu" else 65536
        self.pad_multiple = modelling.pad_multiple(device)
        if backend == "torch":
            # On a CPU, torch.compile measured slower than the row-wise attention it cannot trace (docs/benchmarks.md).
            scorer, autocast = (model, precision) if device.type == "cpu" and compile else \
                modelling.inference_model(model, precision, device)
            self.forward = modelling.torch_forward(torch.compile(scorer, dynamic=True) if compile else scorer, device,
                                                   autocast)
        else:
            from critic.export import FP32, INT8, ONNX_DIR, onnx_forward

            self.forward = onnx_forward(Path(model_dir) / ONNX_DIR / (INT8 if backend == "onnx-int8" else FP32))

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", precision: str = "auto", backend: str = "auto",
             long_reviews: str | None = None, stride: int | None = None, pool: str | None = None,
             compile: bool = False, serving: bool = False) -> "Classifier":
        """Load a model folder. backend auto: PyTorch, except on a CPU without native bf16 or when `serving`, where
        the exported ONNX model (int8 first) is used when present. long_reviews/stride/pool override what the model
        was saved with. compile: torch.compile the PyTorch model (GPUs; on a CPU it measured slower)."""
        if backend not in BACKENDS:
            raise ValueError(f"backend '{backend}': choose one of {', '.join(BACKENDS)}")
        path = Path(path)
        device_ = modelling.resolve_device(device)
        backend = _pick_backend(backend, path, device_, serving)
        model, tokenizer, meta = modelling.load(path, device_)
        overrides = {"mode": long_reviews, "stride": stride, "pool": pool}
        chosen = LongReviews(**{**meta.get("long_reviews", {}), **{k: v for k, v in overrides.items() if v}})
        return cls(model, tokenizer, meta, device_, modelling.resolve_precision(precision, device_), backend, chosen,
                   path, compile)

    @property
    def name(self) -> str:
        return self.meta.get("name", "critic")

    def encode(self, texts: Sequence[str] | str) -> Ragged:
        """Cleaned, tokenized, not yet truncated: every token of every text."""
        clean = data.cleaner(self.cleaning)
        return self.encoder.encode([clean(t) for t in _check_texts(texts)])

    def proba_from_tokens(self, tokens: Ragged, max_tokens: int | None = None, progress=None) -> np.ndarray:
        num_labels = len(self.labels)
        max_tokens = max_tokens or self.max_tokens
        if self.long_reviews.mode == "truncate":
            inputs = frame_all(self.encoder, tokens, self.truncation)
            return modelling.softmax(modelling.logits(self.forward, inputs, self.encoder.pad_id, num_labels,
                                                      max_tokens, progress, self.pad_multiple))
        budget = self.truncation.max_length - self.encoder.specials
        stride = self.long_reviews.stride or budget // 2
        inputs, owners = frame_windows(self.encoder, tokens, self.truncation.max_length, stride)
        window_logits = modelling.logits(self.forward, inputs, self.encoder.pad_id, num_labels, max_tokens,
                                         pad_multiple=self.pad_multiple)
        if progress is not None:
            progress.update(len(tokens))
        return pool_windows(window_logits, owners, len(tokens), self.long_reviews.pool)

    def predict_proba(self, texts: Sequence[str] | str, max_tokens: int | None = None, progress=None,
                      chunk: int = 8192) -> np.ndarray:
        """Probabilities, one row per text. Many texts are taken `chunk` at a time, the next chunk tokenized in a
        thread while the model scores this one (the tokenizer releases the GIL)."""
        texts = _check_texts(texts)
        if len(texts) <= chunk:
            return self.proba_from_tokens(self.encode(texts), max_tokens, progress)
        from concurrent.futures import ThreadPoolExecutor

        parts = [texts[start:start + chunk] for start in range(0, len(texts), chunk)]
        scored = []
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self.encode, parts[0])
            for following in parts[1:] + [None]:
                tokens = pending.result()
                if following is not None:
                    pending = pool.submit(self.encode, following)
                scored.append(self.proba_from_tokens(tokens, max_tokens, progress))
        return np.concatenate(scored)

    def predict(self, texts: Sequence[str] | str) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def __repr__(self) -> str:
        return (f"Classifier({self.name!r}, labels={self.labels}, window={self.truncation.max_length} "
                f"{self.truncation.strategy}, long reviews={self.long_reviews.mode}, backend={self.backend}, "
                f"device={self.device}, precision={self.precision})")


def _pick_backend(backend: str, path: Path, device: torch.device, serving: bool = False) -> str:
    from critic.export import FP32, INT8, ONNX_DIR

    files = {"onnx": path / ONNX_DIR / FP32, "onnx-int8": path / ONNX_DIR / INT8}
    if backend == "auto":
        # Measured on a bf16 CPU (docs/benchmarks.md): PyTorch bf16 scores batches faster than ONNX int8, and as
        # accurately; but in the server's model thread PyTorch answers one review in 22 ms against ONNX's 14 ms.
        if device.type != "cpu" or (modelling.cpu_has_bf16() and not serving):
            return "torch"
        return next((name for name in ("onnx-int8", "onnx") if files[name].is_file()), "torch")
    if backend in files and not files[backend].is_file():
        raise FileNotFoundError(f"{files[backend]} does not exist; run `critic export {path}` first")
    return backend


def pool_windows(window_logits: np.ndarray, owners: np.ndarray, count: int, pool: str) -> np.ndarray:
    """One probability row per text from its windows' logits."""
    windows_per_text = np.bincount(owners, minlength=count)[:, None]
    if pool == "mean-logit":
        summed = np.zeros((count, window_logits.shape[1]))
        np.add.at(summed, owners, window_logits)
        return modelling.softmax(summed / windows_per_text)
    probs = modelling.softmax(window_logits)
    if pool == "mean-prob":
        summed = np.zeros((count, probs.shape[1]))
        np.add.at(summed, owners, probs)
        return summed / windows_per_text
    confidence = probs.max(axis=1)
    order = np.lexsort((confidence, owners))  # by text, most confident window last
    last = np.flatnonzero(np.r_[owners[order][1:] != owners[order][:-1], True])
    return probs[order[last]]


def add_scores(rows: list[dict], probs: np.ndarray, labels: Sequence[str]) -> list[dict]:
    """The scored form of input rows: their own columns plus `label` and one `p_<label>` column per label."""
    for row, p in zip(rows, probs):
        row["label"] = labels[int(p.argmax())]
        row.update({f"p_{name}": round(float(value), 6) for name, value in zip(labels, p)})
    return rows


def score_columns(labels: Sequence[str]) -> list[str]:
    return ["label", *(f"p_{name}" for name in labels)]


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


def read_rows(path: Path, chunk: int = 1024) -> Iterator[tuple[int, list[dict]]]:
    """(first line or row number, rows) chunks of a CSV/TSV, JSONL, Parquet or plain-text file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        first = 1
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk):
            rows = batch.to_pylist()
            yield first, rows
            first += len(rows)
        return
    if suffix in (".txt", ".text"):
        records = _review_lines(path)
    else:
        records = data.records(path)
    rows, first = [], None
    for line, record in records:
        first = first or line
        rows.append(record)
        if len(rows) == chunk:
            yield first, rows
            rows, first = [], None
    if rows:
        yield first, rows


def _review_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """A plain-text file: one review per non-blank line."""
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, {"text": line.rstrip("\n")}


class Writer:
    """Appends scored rows to CSV, TSV or JSONL files, or writes Parquet parts; `position()` is what a resume needs."""

    def __init__(self, path: Path, resume_bytes: int | None = None):
        self.path = path
        self.suffix = path.suffix.lower()
        if self.suffix not in (".csv", ".tsv", ".jsonl", ".parquet"):
            raise ValueError(f"{path}: unknown output format; use .csv, .tsv, .jsonl or .parquet")
        self.parts = path.with_name(path.name + ".parts")
        self.handle = None
        self.fields = None
        if self.suffix == ".parquet":
            self.parts.mkdir(exist_ok=True)
        elif resume_bytes is not None:
            with open(path, "r+b") as f:  # drop whatever was written after the last recorded chunk
                f.truncate(resume_bytes)
            self.handle = open(path, "a", encoding="utf-8", newline="")
            if self.suffix != ".jsonl":
                with open(path, encoding="utf-8", newline="") as f:
                    self.fields = next(csv.reader(f, delimiter=self._delimiter))

    @property
    def _delimiter(self) -> str:
        return "\t" if self.suffix == ".tsv" else ","

    def write(self, rows: list[dict], part: int) -> None:
        if self.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), self.parts / f"part-{part:06d}.parquet")
            return
        if self.handle is None:
            self.handle = open(self.path, "w", encoding="utf-8", newline="")
        if self.suffix == ".jsonl":
            self.handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        else:
            if self.fields is None:
                self.fields = list(rows[0])
                csv.writer(self.handle, delimiter=self._delimiter).writerow(self.fields)
            csv.DictWriter(self.handle, fieldnames=self.fields, delimiter=self._delimiter,
                           extrasaction="ignore").writerows(rows)
        self.handle.flush()

    def position(self) -> int:
        return self.handle.tell() if self.handle is not None else 0

    def finish(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.suffix == ".parquet":
            import pyarrow.parquet as pq

            parts = sorted(self.parts.glob("part-*.parquet"))
            if parts:
                tables = [pq.read_table(p) for p in parts]
                with pq.ParquetWriter(self.path, tables[0].schema) as writer:
                    for table in tables:
                        writer.write_table(table)
            for p in parts:
                p.unlink()
            self.parts.rmdir()


def predict_file(classifier: Classifier, source: Path, target: Path, text_column: str | None = None,
                 chunk: int = 1024, progress: bool = True, overwrite: bool = False) -> int:
    """Score every row of `source` into `target`: the input's columns plus `label` and `p_<label>` columns.

    Streams chunk by chunk, tokenizing the next chunk while the model scores this one. After each chunk the
    position is recorded in TARGET.progress.json, so an interrupted run continues where it stopped when started
    again; the file is removed when the run completes. Returns the number of rows in `target`.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    source, target = Path(source), Path(target)
    sidecar = target.with_name(target.name + ".progress.json")
    done, resume_bytes = 0, None
    if sidecar.is_file() and not overwrite:
        state = json.loads(sidecar.read_text())
        if state["source"] != str(source.resolve()):
            raise ValueError(f"{sidecar} belongs to another input ({state['source']}); pass --overwrite to start over")
        done, resume_bytes = state["rows"], state["bytes"]
    elif target.exists() and not overwrite:
        raise ValueError(f"{target} already exists and is complete; pass --overwrite to score again")
    writer = Writer(target, resume_bytes if done else None)
    bar = tqdm(total=_count_rows(source), initial=done, unit="review", desc="scoring", disable=not progress,
               file=sys.stderr, mininterval=1.0)
    key = None
    already, skipped = done, 0

    def checked(first: int, rows: list[dict]) -> Ragged:
        texts = []
        for offset, row in enumerate(rows):
            text = row.get(key)
            where = f"{source}, {'row' if source.suffix == '.parquet' else 'line'} {first + offset}"
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}: empty or missing text in column {key!r}")
            if data.not_utf8(text):
                raise ValueError(f"{where}: not UTF-8 text; re-save the file as UTF-8")
            texts.append(text)
        return classifier.encode(texts)

    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            chunks = read_rows(source, chunk)
            for first, rows in chunks:
                if skipped < already:  # resuming: these rows are already in the output
                    take = min(len(rows), already - skipped)
                    skipped += take
                    rows, first = rows[take:], first + take
                    if not rows:
                        continue
                key = key or data.pick_column(list(rows[0]), text_column, data.TEXT_COLUMNS, "text", source)
                job = (rows, pool.submit(checked, first, rows))
                if pending is not None:
                    done = _score_chunk(classifier, *pending, writer, done, bar, sidecar, source)
                pending = job
            if pending is not None:
                done = _score_chunk(classifier, *pending, writer, done, bar, sidecar, source)
        writer.finish()
        sidecar.unlink(missing_ok=True)
    finally:
        bar.close()
        if writer.handle is not None:
            writer.handle.close()
    return done


def _score_chunk(classifier: Classifier, rows: list[dict], tokens, writer: Writer, done: int, bar, sidecar: Path,
                 source: Path) -> int:
    add_scores(rows, classifier.proba_from_tokens(tokens.result()), classifier.labels)
    writer.write(rows, part=done)
    done += len(rows)
    partial = sidecar.with_suffix(".tmp")
    partial.write_text(json.dumps({"source": str(source.resolve()), "rows": done, "bytes": writer.position()}))
    partial.replace(sidecar)
    bar.update(len(rows))
    return done


def _count_rows(path: Path) -> int | None:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix.lower() in (".jsonl", ".txt"):
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    return None  # CSV records may span lines: no cheap count
