"""Export a trained model for fast CPU scoring, and measure which backend is fastest on this machine.

ONNX Runtime (MODEL/onnx/: model.onnx, and model.int8.onnx by dynamic quantization) and OpenVINO (MODEL/openvino/:
model.xml, which OpenVINO runs in bf16 where the chip has it, and model.int8.xml, quantized statically by NNCF on
training reviews, so that the validation reviews it is checked on stay unseen). Each folder records the sha256 of
the weights it was made from: `critic predict` uses it only with those weights, and a new save of the model removes
it. Parity with PyTorch is checked on the spot; then every backend scores the same validation reviews on this
machine, and critic.json records each one's rate and accuracy: `--backend auto` takes the fastest that lost no more
than 0.3 accuracy points against PyTorch (and, with an explicit `--precision`, computes in it).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import numpy as np
import torch

from critic import messages, modeling
from critic.inference import backends
from critic.modeling.attention import has_sliding_window
from critic.modeling.record import ModelRecord
from critic.text import Encoder, Ragged, Truncation, pad, prepare, sorted_batches

PARITY_TEXTS = [
    "A moving, beautifully shot film with a superb cast.",
    "Dull, lifeless and far too long. I want my two hours back.",
    "Not bad at all, though the second half drags.",
    "The worst sequel ever made.",
]
MAX_LOSS = 0.003  # a backend that loses more accuracy than this against PyTorch on the same reviews is refused
MEASURE_REVIEWS = 500  # validation reviews each backend scores, twice (the faster pass counts)
# An int8 backend's accuracy is checked against PyTorch's on more reviews, by default the whole IMDB validation
# split (4,958): on 2,000 the quickstart MiniLM's OpenVINO int8 lost 0.10 points and passed, and then lost 0.52 on
# the whole test split (4,986; AMD EPYC, 2026-12-01, docs/benchmarks.md).
CHECK_REVIEWS = 5000
CALIBRATION_REVIEWS = 300  # training reviews, for NNCF's static int8: OpenVINO's guide asks for a few hundred


class _Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export(
    model_dir: str | Path,
    names: Sequence[str] | None = None,
    data: str | None = None,
    measure_reviews: int = MEASURE_REVIEWS,
    check_reviews: int = CHECK_REVIEWS,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Write the backends `names` (default: every one whose engine is installed), check their parity with
    PyTorch, measure them, PyTorch and the usable exports made before on this machine and record the figures in
    critic.json. `data`: the reviews to calibrate and measure on (default: the validation split of the model's own
    data). A backend that cannot be made for this model is left out with a line saying why."""
    say = log or messages.to_stderr
    model_dir = Path(model_dir)
    names = list(names) if names is not None else [n for n in backends.ENGINES if backends.installed(n)]
    for name in names:
        backends.require(name)
    for path in {
        p for n in names for p in (model_dir / backends.ENGINES[n].folder, backends.engine_path(model_dir, n))
    }:
        if path.is_symlink():  # critic writes there: through a link, it would write elsewhere
            raise ValueError(f"{path} is a link; remove it (critic export writes its files there)")
    model, tokenizer, record = modeling.load(model_dir, "cpu", writer=True)
    encoder = Encoder(tokenizer)
    check_reviews = max(check_reviews, measure_reviews)
    sizes = {"validation": check_reviews, **({"train": CALIBRATION_REVIEWS} if "openvino-int8" in names else {})}
    sampled = _reviews(record, data, sizes, say)
    reviews = sampled.get("validation")
    calibration = None
    if "openvino-int8" in names:
        texts = sampled.get("train")
        if texts is None:
            say("openvino-int8 left out: no reviews to calibrate it on (pass --data)")
            names.remove("openvino-int8")
        else:  # training reviews: the validation reviews it is checked on stay unseen
            calibration = _batches(
                prepare(texts[0], encoder, record.cleaning, Truncation(**record.truncation)), encoder.pad_id
            )
    report, names = write_exports(model, model_dir, record, names, calibration, say)
    report.update(parity(model, encoder, record, model_dir, names))
    for folder in {backends.ENGINES[name].folder for name in names}:
        modeling.tie_to_weights(model_dir / folder, model_dir)
    say(
        f"exported {', '.join(names) or 'nothing'}; largest probability difference from PyTorch: "
        + ", ".join(f"{n} {report[f'{n}_max_abs_diff']:.1e}" for n in names)
    )
    # the exports made before and still usable are measured again beside these (before, exporting one backend
    # dropped the others from the record, and `--backend auto` chose among the ones exported last)
    earlier = [name for name in backends.ENGINES if name not in names and backends.unusable(name, model_dir) is None]
    measured = {"exports": {**(record.exports or {}), **report}}
    if reviews is not None:
        measured["backends"] = measure(
            model_dir, ["torch", *names, *earlier], reviews[0], reviews[1], measure_reviews, say
        )
    else:
        say("not measured: no reviews to measure the backends on (pass --data); `--backend auto` keeps its default")
    modeling.write_record(model_dir, dataclasses.replace(record, **measured))
    return {**report, **measured}


def write_exports(
    model,
    model_dir: Path,
    record: ModelRecord,
    names: list[str],
    calibration: list[dict] | None,
    say: Callable[[str], None],
) -> tuple[dict, list[str]]:
    """Each engine's files for the backends in `names`; (their report, the backends written). An engine that
    cannot convert this model is left out with one line, and the others go on."""
    report, written = {}, []
    for folder, write in (("onnx", export_onnx), ("openvino", export_openvino)):
        wanted = [name for name in names if backends.ENGINES[name].folder == folder]
        if not wanted:
            continue
        (model_dir / folder).mkdir(exist_ok=True)
        # written again last (tie_to_weights): an export cut short is never taken for one of these weights
        (model_dir / folder / modeling.EXPORT_RECORD).unlink(missing_ok=True)
        try:
            report.update(write(model, model_dir, record, wanted, calibration))
            written += wanted
        except Exception as error:  # a conversion's failure is that engine's, not the export's
            say(
                f"{', '.join(wanted)} left out: {model.config.model_type} could not be converted "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
            )
    return report, written


def export_onnx(model, model_dir: Path, record: ModelRecord, names: list[str], calibration=None) -> dict:
    """ONNX through the dynamo exporter, and its int8 form by ONNX Runtime's dynamic quantization."""
    import logging

    example = _example(model)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=record.truncation["max_length"])
    started = time.perf_counter()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    program = torch.onnx.export(
        _Logits(model).eval(),
        (example["input_ids"], example["attention_mask"]),
        dynamo=True,
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_shapes={"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}},
        verbose=False,
    )
    program.save(str(backends.engine_path(model_dir, "onnx")))
    report = {"onnx_seconds": round(time.perf_counter() - started, 1)}
    if "onnx-int8" in names:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Per-channel scales: per-tensor ones cost MiniLM 1.65 accuracy points on IMDB, per-channel none
        # (docs/benchmarks.md).
        quantize_dynamic(
            backends.engine_path(model_dir, "onnx"),
            backends.engine_path(model_dir, "onnx-int8"),
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    return report


def export_openvino(
    model, model_dir: Path, record: ModelRecord, names: list[str], calibration: list[dict] | None
) -> dict:
    """OpenVINO IR converted from the PyTorch model (weights kept in fp32: the runtime picks bf16 or f32 for the
    chip), and with `calibration` batches its static int8 form by NNCF (SmoothQuant and per-channel weights, as
    NNCF does for transformers)."""
    import openvino as ov

    if has_sliding_window(model):
        # OpenVINO's attention answers NaN for a padded position whose window holds no real token, and the NaN
        # reaches every token of that review (a tiny ModernBERT: every padded review); the eager attention's additive
        # mask keeps such a position finite, and the outputs at real tokens are the same.
        model = copy.deepcopy(model)
        model.set_attn_implementation("eager")
    started = time.perf_counter()
    converted = ov.convert_model(_Logits(model).eval(), example_input=_example(model))
    ov.save_model(converted, backends.engine_path(model_dir, "openvino"), compress_to_fp16=False)
    report = {"openvino_seconds": round(time.perf_counter() - started, 1)}
    if "openvino-int8" in names:
        import nncf

        started = time.perf_counter()
        quantized = nncf.quantize(
            converted, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration)
        )
        ov.save_model(quantized, backends.engine_path(model_dir, "openvino-int8"), compress_to_fp16=False)
        report["openvino_int8_seconds"] = round(time.perf_counter() - started, 1)
    return report


def _example(model) -> dict[str, torch.Tensor]:
    """A padded batch, so that the exporters trace the attention mask for real."""
    vocab = model.config.vocab_size
    ids = Ragged(np.arange(2, 20, dtype=np.int64) % max(vocab - 1, 2) + 1, np.array([0, 12, 18]))
    return pad(ids, [0, 1], model.config.pad_token_id or 0)


def _batches(inputs: Ragged, pad_id: int, size: int = 8) -> list[dict[str, np.ndarray]]:
    return [
        {key: value.numpy() for key, value in pad(inputs, rows, pad_id, 1).items()}
        for rows in sorted_batches(inputs.lengths, max_tokens=1 << 30, max_batch=size)
    ]


def parity(model, encoder: Encoder, record: ModelRecord, model_dir: Path, names: Sequence[str]) -> dict:
    """The largest probability difference of each backend from PyTorch in fp32 on a few reviews."""
    framed = prepare(PARITY_TEXTS, encoder, record.cleaning, Truncation(**record.truncation))
    classes = model.config.num_labels
    reference = modeling.softmax(
        modeling.logits(modeling.torch_forward(model, torch.device("cpu")), framed, encoder.pad_id, classes)
    )
    return {
        f"{name}_max_abs_diff": float(
            np.abs(
                modeling.softmax(modeling.logits(backends.forward(name, model_dir), framed, encoder.pad_id, classes))
                - reference
            ).max()
        )
        for name in names
    }


def _reviews(
    record: ModelRecord, data: str | None, sizes: dict[str, int], say
) -> dict[str, tuple[list[str], np.ndarray]]:
    """For each split in `sizes`, (texts, labels as class indices) of up to that many of its reviews: of `data`, or
    of the model's own, read once. A split without reviews is left out."""
    from critic import data as datasets

    if data is not None:
        columns = dataclasses.replace(record.columns(), labels=tuple(record.labels))
        dataset = datasets.load(data, columns)
        frames = {split: dataset.split(split, None, 42) for split in sizes}
    elif record.data:
        frames = record.splits(list(sizes)) or {}
    else:
        return {}
    sampled = {}
    for split, frame in frames.items():
        if frame is None or len(frame) == 0:
            continue
        frame = frame.sample(n=min(sizes[split], len(frame)), random_state=0)
        say(
            f"{'calibrating int8 on' if split == 'train' else 'measuring on'} {len(frame):,} {split} reviews of "
            f"{data or record.data}"
        )
        sampled[split] = frame["text"].tolist(), frame["label"].to_numpy()
    return sampled


def measure(
    model_dir: Path,
    names: Sequence[str],
    texts: list[str],
    labels: np.ndarray,
    timed_reviews: int,
    say: Callable[[str], None],
) -> dict:
    """Every backend scores the same `timed_reviews` reviews on this machine as critic runs it (its batching, its
    threads; two passes, the faster counts). Each int8 backend and PyTorch then score all of `texts`: an int8
    backend more than MAX_LOSS less accurate than PyTorch there is refused. The engines alone, without the
    cascade's cheap stage: through it, every backend was timed and checked on the reviews it passes on only, and
    PyTorch's accuracy was the cascade's (quickstart MiniLM: 87.83% on validation against 87.23% alone)."""
    from critic.inference.predict import Classifier

    rates, accuracy, scorers = {}, {}, {}
    for name in names:
        scorers[name] = Classifier.load(model_dir, device="cpu", backend=name, long_reviews="truncate", cascade=False)
        scorers[name].predict_proba(texts[:16])  # the first call's one-off costs
    timed = texts[:timed_reviews]
    for _ in range(2):
        for name, scorer in scorers.items():
            started = time.perf_counter()
            probs = scorer.predict_proba(timed)
            rates[name] = max(rates.get(name, 0.0), len(timed) / (time.perf_counter() - started))
            accuracy[name] = float((probs.argmax(1) == labels[: len(timed)]).mean())
    checked = {
        name: float((scorers[name].predict_proba(texts).argmax(1) == labels).mean())
        for name in names
        if name == "torch" or name.endswith("-int8")
    }
    refused = {
        name: f"{(checked[name] - checked['torch']) * 100:+.2f} accuracy points against PyTorch on "
        f"{len(texts):,} reviews"
        for name in checked
        if checked[name] < checked["torch"] - MAX_LOSS
    }
    ranking = sorted((n for n in names if n not in refused), key=lambda n: -rates[n])
    torch_precision = scorers["torch"].precision
    for name in names:
        say(
            f"{name + (' ' + torch_precision if name == 'torch' else ''):>15}: {rates[name]:6.1f} reviews/s, "
            f"accuracy {accuracy[name]:.4f}"
            + (f", {checked[name]:.4f} on {len(texts):,}" if name in checked else "")
            + (f" (refused: {refused[name]})" if name in refused else "")
            + (" <- the fastest: --backend auto takes it" if name == ranking[0] else "")
        )
    return {
        "cpu": backends.cpu_name(),
        "threads": torch.get_num_threads(),
        "date": str(date.today()),
        "reviews": len(timed),
        "torch_precision": torch_precision,
        "max_loss_points": MAX_LOSS * 100,
        "reviews_per_s": {n: round(rates[n], 1) for n in names},
        "accuracy": accuracy,
        "checked": {"reviews": len(texts), "accuracy": checked},
        "refused": refused,
        "ranking": ranking,
    }
