"""The Classifier: load a trained model and score texts with the same cleaning and truncation as in training.

Follows the scikit-learn / SetFit convention: `Classifier.load(path)`, `.predict(texts)` -> label names,
`.predict_proba(texts)` -> array (n, n_labels) in the order of `.labels`.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from critic import data, messages, modeling
from critic.data import catalogue
from critic.inference import backends, encoding
from critic.inference.engines import BACKENDS
from critic.modeling import abstention
from critic.modeling.record import ModelRecord
from critic.text import (
    DEFAULT_LONG_REVIEWS,
    DEFAULT_POOL,
    LONG_REVIEW_MODES,
    POOLS,
    Encoder,
    Ragged,
    Truncation,
    frame_all,
    frame_windows,
)


@dataclass(frozen=True)
class LongReviews:
    """What to do with reviews longer than the window: `truncate` (the model's truncation strategy), or score
    overlapping `windows` (each `stride` tokens after the previous; default half a window) and pool them."""

    mode: str = DEFAULT_LONG_REVIEWS
    stride: int | None = None
    pool: str = DEFAULT_POOL

    def __post_init__(self):
        if self.mode not in LONG_REVIEW_MODES:
            raise ValueError(f"long reviews '{self.mode}': choose one of {', '.join(LONG_REVIEW_MODES)}")
        if self.pool not in POOLS:
            raise ValueError(f"pool '{self.pool}': choose one of {', '.join(POOLS)}")


@dataclass
class Prepared:
    """Texts ready for the model: the cheap stage's answers (`probs` where `cheap`), the tokens of the rest."""

    probs: np.ndarray
    cheap: np.ndarray
    tokens: Ragged


@dataclass(frozen=True)
class Runtime:
    """How a loaded model runs: where, in what precision, through which backend, compiled or not, and the processes
    that clean and tokenize for it."""

    device: torch.device
    precision: str = "fp32"
    backend: str = "torch"
    compile: bool = False
    encoder_workers: int = 0


class Classifier:
    def __init__(
        self,
        model,
        tokenizer,
        record: ModelRecord,
        runtime: Runtime,
        long_reviews: LongReviews | None = None,
        model_dir: Path | None = None,
        cheap_stage=None,
    ):
        device, precision, backend, compile = runtime.device, runtime.precision, runtime.backend, runtime.compile
        self.model = model
        self.cheap_stage = cheap_stage  # a cascade.CheapStage: it answers the reviews it is sure of
        self.tokenizer = tokenizer
        self.record = record
        self.device = device
        self.precision = precision
        self.encoder = Encoder(tokenizer)
        self.truncation = Truncation(**record.truncation)
        self.cleaning = record.cleaning
        self.labels: list[str] = list(record.labels)
        self.long_reviews = long_reviews or LongReviews(**record.long_reviews)  # as saved
        self.backend = backend
        self.path = Path(model_dir) if model_dir is not None else None
        self._thresholds: OrderedDict[float, dict] = OrderedDict()  # min accuracy -> abstention.threshold
        self._thresholds_lock = threading.Lock()  # the server computes them in worker threads
        workers = runtime.encoder_workers
        self.encoder_pool = encoding.EncoderPool(self.encoder, workers) if workers else None
        # Tokens per batch: small batches stay in cache on a CPU (measured faster, and a third of the memory with
        # ONNX Runtime); a GPU wants large ones.
        self.max_tokens = 4096 if device.type == "cpu" else 65536
        self.pad_multiple = modeling.pad_multiple(device)
        if backend == "torch":
            # On a CPU, torch.compile measured slower than the row-wise attention it cannot trace (docs/benchmarks.md).
            scorer, autocast = (
                (model, precision)
                if device.type == "cpu" and compile
                else modeling.inference_model(model, precision, device)
            )
            self.forward = modeling.torch_forward(
                torch.compile(scorer, dynamic=True) if compile else scorer, device, autocast
            )
        else:
            self.forward = backends.forward(backend, model_dir, precision)

    @classmethod
    def load(  # noqa: PLR0913 (public: each option a keyword of critic's API and a flag of its verbs)
        cls,
        path: str | Path,
        device: str = "auto",
        precision: str = "auto",
        backend: str = "auto",
        long_reviews: str | None = None,
        stride: int | None = None,
        pool: str | None = None,
        compile: bool = False,
        serving: bool = False,
        encoder_workers: int | str = 0,
        cascade: bool = True,
    ) -> Classifier:
        """Load a model folder. backend auto: on a CPU, the fastest backend `critic export` measured on this kind of
        CPU that kept the accuracy (and computes in `precision` when one is asked for); without a measurement,
        PyTorch, except on a CPU without native bf16 or when `serving`, where the exported ONNX model (int8 first) is
        used when present. `.backend` and `.precision` say what runs. long_reviews/stride/pool override what the model
        was saved with. compile: torch.compile the PyTorch model (GPUs; on a CPU it measured slower).
        encoder_workers: processes that clean and tokenize many texts at once, so that the host keeps up with a GPU
        (`auto`: every core but two on a GPU, none on a CPU; `inference.encoding`). They are started as new
        interpreters that import the calling script: a script that uses them needs `if __name__ == "__main__":`.
        cascade: where the folder has a cascade made from these weights (`critic export --cascade`, inference/
        cascade.py), its cheap stage answers the reviews it is sure of; False: the model alone answers all."""
        if backend not in BACKENDS:
            raise ValueError(f"backend '{backend}': choose one of {', '.join(BACKENDS)}")
        if not Path(path).is_dir():  # a hub id (a classifier critic did not train), fetched into the cache
            path = catalogue.resolve_model(str(path))
        path = Path(path)
        device_ = modeling.resolve_device(device)
        backend = _pick_backend(backend, path, device_, serving, precision)
        model, tokenizer, record = modeling.load(path, device_)
        overrides = {"mode": long_reviews, "stride": stride, "pool": pool}
        chosen = LongReviews(**{**record.long_reviews, **{k: v for k, v in overrides.items() if v}})
        runtime = Runtime(
            device_,
            modeling.resolve_precision(precision, device_)
            if backend == "torch"
            else backends.computes_in(backend, precision),
            backend,
            compile,
            0 if serving else encoding.resolve_workers(encoder_workers, device_.type),
        )
        return cls(model, tokenizer, record, runtime, chosen, path, _cheap_stage(path) if cascade else None)

    @property
    def name(self) -> str:
        return self.record.name

    def identity(self) -> dict:
        """What decides the probabilities it gives: the model's folder and weights (their size and time), the
        backend, the precision and the handling of long reviews."""
        weights = self.path / "model.safetensors" if self.path is not None else None
        stat = weights.stat() if weights is not None and weights.is_file() else None
        return {
            "path": str(self.path.resolve()) if self.path is not None else None,
            "weights": [stat.st_size, stat.st_mtime_ns] if stat else None,
            "backend": self.backend,
            "precision": self.precision,
            "truncation": self.truncation.as_dict(),
            "long_reviews": [self.long_reviews.mode, self.long_reviews.stride, self.long_reviews.pool],
            **({"cascade": self.cheap_stage.threshold} if self.cheap_stage is not None else {}),
        }

    def encode(self, texts: Sequence[str] | str) -> Ragged:
        """Cleaned, tokenized, not yet truncated: every token of every text (many texts in the encoder's worker
        processes, where it has them)."""
        texts = _check_texts(texts)
        if self.encoder_pool is not None and len(texts) >= 2 * encoding.MIN_PIECE:
            return self.encoder_pool.encode(texts, self.cleaning)
        clean = data.cleaner(self.cleaning)
        return self.encoder.encode([clean(t) for t in texts])

    def close(self) -> None:
        """Stop the encoder's worker processes, if any (they also stop at exit)."""
        if self.encoder_pool is not None:
            self.encoder_pool.close()

    def proba_from_tokens(self, tokens: Ragged, max_tokens: int | None = None, progress=None) -> np.ndarray:
        num_labels = len(self.labels)
        max_tokens = max_tokens or self.max_tokens
        if self.long_reviews.mode == "truncate":
            inputs = frame_all(self.encoder, tokens, self.truncation)
            return modeling.softmax(
                modeling.logits(
                    self.forward, inputs, self.encoder.pad_id, num_labels, max_tokens, progress, self.pad_multiple
                )
            )
        budget = self.truncation.max_length - self.encoder.specials
        stride = self.long_reviews.stride or budget // 2
        inputs, owners = frame_windows(self.encoder, tokens, self.truncation.max_length, stride)
        window_logits = modeling.logits(
            self.forward, inputs, self.encoder.pad_id, num_labels, max_tokens, pad_multiple=self.pad_multiple
        )
        if progress is not None:
            progress.update(len(tokens))
        return pool_windows(window_logits, owners, len(tokens), self.long_reviews.pool)

    def predict_proba(
        self, texts: Sequence[str] | str, max_tokens: int | None = None, progress=None, chunk: int = 8192
    ) -> np.ndarray:
        """Probabilities, one row per text; with a cascade, the cheap stage's for the reviews it is sure of."""
        return self.answer(texts, max_tokens, progress, chunk)[0]

    def answer(
        self, texts: Sequence[str] | str, max_tokens: int | None = None, progress=None, chunk: int = 8192
    ) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, whether the cascade's cheap stage gave each row): the cheap stage scores every text
        first, and only those it is not sure of are tokenized and scored by the model."""
        texts = _check_texts(texts)
        if self.cheap_stage is None:
            return self.model_proba(texts, max_tokens, progress, chunk), np.zeros(len(texts), dtype=bool)
        probs, cheap = self.cheap_answers(texts)
        rest = np.flatnonzero(~cheap)
        if len(rest):
            probs[rest] = self.model_proba([texts[i] for i in rest], max_tokens, progress, chunk)
        return probs, cheap

    def cheap_answers(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The cheap stage's probabilities for every text, and which of them it answers (none without a cascade:
        then the probabilities are zeros, for the model to fill in)."""
        if self.cheap_stage is None:
            return np.zeros((len(texts), len(self.labels))), np.zeros(len(texts), dtype=bool)
        clean = data.cleaner(self.cleaning)
        probs = self.cheap_stage.predict_proba([clean(t) for t in texts])
        return probs, probs.max(axis=1) >= self.cheap_stage.threshold

    def prepare(self, texts: Sequence[str] | str) -> Prepared:
        """The first half of `answer`, for a pipeline that prepares the next batch while the model scores this
        one: the cheap stage's answers and the tokens of the texts it passes on."""
        texts = _check_texts(texts)
        probs, cheap = self.cheap_answers(texts)
        return Prepared(probs, cheap, self.encode([texts[i] for i in np.flatnonzero(~cheap)]))

    def finish(self, prepared: Prepared, max_tokens: int | None = None, progress=None) -> tuple[np.ndarray, np.ndarray]:
        """The second half of `answer`: the model scores what the cheap stage passed on."""
        probs, cheap = prepared.probs, prepared.cheap
        if (~cheap).any():
            probs[~cheap] = self.proba_from_tokens(prepared.tokens, max_tokens, progress)
        return probs, cheap

    def model_proba(
        self, texts: list[str], max_tokens: int | None = None, progress=None, chunk: int = 8192
    ) -> np.ndarray:
        """The model's probabilities, one row per text. Many texts are taken `chunk` at a time, the next chunk
        tokenized in a thread while the model scores this one (the tokenizer releases the GIL)."""
        if len(texts) <= chunk:
            return self.proba_from_tokens(self.encode(texts), max_tokens, progress)
        from concurrent.futures import ThreadPoolExecutor

        parts = [texts[start : start + chunk] for start in range(0, len(texts), chunk)]
        scored = []
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self.encode, parts[0])
            for following in parts[1:] + [None]:
                tokens = pending.result()
                if following is not None:
                    pending = pool.submit(self.encode, following)
                scored.append(self.proba_from_tokens(tokens, max_tokens, progress))
        return np.concatenate(scored)

    def predict(self, texts: Sequence[str] | str, min_accuracy: float | None = None) -> list[str]:
        """Label names; with `min_accuracy` (such as 0.97), "unsure" for the reviews below the confidence at which
        the validation split shows that accuracy with 95% confidence (`unsure_below`; with a cascade, chosen on
        the cascade's own answers to the validation split)."""
        return abstention.answers(self.predict_proba(texts), self.labels, self.unsure_below(min_accuracy))

    def unsure_below(self, min_accuracy: float | None) -> float | None:
        """The confidence under which an answer is "unsure" for `min_accuracy`: infinite where no threshold shows
        it on the validation split (every answer unsure), None without a target (every review answered)."""
        if min_accuracy is None:
            return None
        return abstention.cutoff(self.threshold(min_accuracy))

    def threshold(self, min_accuracy: float) -> dict:
        """The threshold for `min_accuracy` with what it answers of the validation split (`abstention.threshold`).
        The target is rounded up to 4 decimals (a stricter one, never a weaker), and the last THRESHOLDS_KEPT are
        kept: a server asked for thousands of distinct targets neither grows nor computes each (4.7 ms) again."""
        rounded = round(min_accuracy, 4)
        if rounded < min_accuracy:  # up, not down
            rounded = round(rounded + 1e-4, 4)
        target = rounded if rounded < 1 else min_accuracy
        with self._thresholds_lock:
            if target in self._thresholds:
                self._thresholds.move_to_end(target)
                return self._thresholds[target]
        if self.cheap_stage is not None:  # the curve of the cascade's own answers
            kept = self.cheap_stage.abstention
            found = abstention.threshold(kept["curve"], target, kept.get("level", abstention.LEVEL))
        else:
            found = abstention.threshold_for(self.record, target)
        with self._thresholds_lock:
            self._thresholds[target] = found
            if len(self._thresholds) > THRESHOLDS_KEPT:
                self._thresholds.popitem(last=False)
        return found

    def __repr__(self) -> str:
        return (
            f"Classifier({self.name!r}, labels={self.labels}, window={self.truncation.max_length} "
            f"{self.truncation.strategy}, long reviews={self.long_reviews.mode}, backend={self.backend}, "
            f"device={self.device}, precision={self.precision})"
        )


THRESHOLDS_KEPT = 128


def _pick_backend(backend: str, path: Path, device: torch.device, serving: bool, precision: str) -> str:
    """The backend to score with. An explicit precision is a request: auto chooses only among the backends that
    compute in it, and an engine named with one it does not compute in is refused (after `critic export`, asking
    for fp32 ran OpenVINO int8 and said fp32)."""
    if backend == "auto":
        return _auto_backend(path, device, serving, precision)
    if backend in backends.ENGINES:
        if not backends.honours(backend, precision):
            raise ValueError(
                f"backend {backend} computes in {backends.computes_in(backend, precision)}, not {precision}; "
                f"drop --precision, or choose --backend torch"
            )
        backends.require(backend)
        file = backends.engine_path(path, backend)
        if not file.is_file():
            raise FileNotFoundError(f"{file} does not exist; run `critic export {path}` first")
        if stale := modeling.export_mismatch(file.parent, path):
            raise ValueError(f"backend {backend}: {stale}; run `critic export {path}` again")
    return backend


def _auto_backend(path: Path, device: torch.device, serving: bool, precision: str = "auto") -> str:
    """On a GPU, PyTorch. On a CPU, the fastest backend `critic export` measured on this kind of CPU; without a
    measurement, PyTorch where the chip has bf16 (measured faster than ONNX int8 on batches, and as accurate), and
    otherwise, or when serving (one review: ONNX 14 ms against PyTorch's 22 ms in the server's model thread), the
    ONNX export (int8 first) where there is one."""
    if device.type != "cpu":
        return "torch"
    if (path / modeling.META_FILE).is_file():
        measured = modeling.ModelRecord.read(path).backends
        chosen = backends.measured_choice(measured, path, messages.to_stderr, precision)
        if chosen is not None:
            return chosen
    if modeling.cpu_has_bf16() and not serving:
        return "torch"
    exported = next(
        (
            name
            for name in ("onnx-int8", "onnx")
            if backends.engine_path(path, name).is_file() and backends.honours(name, precision)
        ),
        None,
    )
    if exported is None or not backends.installed(exported):
        return "torch"
    if stale := backends.unusable(exported, path):
        print(
            f"critic: not using the ONNX export: {stale}; scoring with PyTorch (`critic export {path}` makes "
            f"a new one)",
            file=sys.stderr,
        )
        return "torch"
    return exported


def _cheap_stage(path: Path):
    from critic.inference import cascade

    stage = cascade.load_for(path)
    if stage is not None:  # made now, not by the first request (a served p99 of 520 ms against a p50 of 3.3 ms)
        stage.vectorizer()
    return stage


def pool_windows(window_logits: np.ndarray, owners: np.ndarray, count: int, pool: str) -> np.ndarray:
    """One probability row per text from its windows' logits."""
    windows_per_text = np.bincount(owners, minlength=count)[:, None]
    if pool == "mean-logit":
        summed = np.zeros((count, window_logits.shape[1]))
        np.add.at(summed, owners, window_logits)
        return modeling.softmax(summed / windows_per_text)
    probs = modeling.softmax(window_logits)
    if pool == "mean-prob":
        summed = np.zeros((count, probs.shape[1]))
        np.add.at(summed, owners, probs)
        return summed / windows_per_text
    confidence = probs.max(axis=1)
    order = np.lexsort((confidence, owners))  # by text, most confident window last
    last = np.flatnonzero(np.r_[owners[order][1:] != owners[order][:-1], True])
    return probs[order[last]]


def score_columns(labels: Sequence[str], taken: Sequence[str] = (), stage: bool = False) -> list[str]:
    """The prediction's columns: `label` and one `p_<label>` per class, and with `stage` (a model with a cascade)
    `stage`, which stage answered; all prefixed with `critic_` (as often as it takes) when the input already has a
    column of one of those names, so that no input column is overwritten."""
    columns = ["label", *(f"p_{name}" for name in labels), *(["stage"] if stage else [])]
    prefix = ""
    while any(prefix + column in taken for column in columns):
        prefix += "critic_"
    return [prefix + column for column in columns]


def add_scores(
    rows: list[dict],
    probs: np.ndarray,
    labels: Sequence[str],
    columns: Sequence[str],
    unsure_below: float | None = None,
    cheap: np.ndarray | None = None,
) -> list[dict]:
    """The scored form of input rows: their own columns plus `columns` (from `score_columns`): the label ("unsure"
    below `unsure_below`, from `Classifier.unsure_below`), one probability per class, and where `columns` has a
    stage column, the stage that answered (`cheap`: the rows the cascade's cheap stage answered)."""
    staged = len(columns) > len(labels) + 1
    stages = stage_names(cheap if cheap is not None else np.zeros(len(rows), dtype=bool))
    for row, label, p, stage in zip(rows, abstention.answers(probs, list(labels), unsure_below), probs, stages):
        row[columns[0]] = label
        row.update({column: round(float(value), 6) for column, value in zip(columns[1 : len(labels) + 1], p)})
        if staged:
            row[columns[-1]] = stage
    return rows


def stage_names(cheap: np.ndarray) -> list[str]:
    """Which stage gave each answer, as every output names it: "cheap" (the cascade's) or "model"."""
    return ["cheap" if by_cheap else "model" for by_cheap in cheap]


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    for i, text in enumerate(texts):
        problem = data.text_problem(text)
        if problem is not None:
            raise ValueError(f"text {i}: {problem}")
    return texts
