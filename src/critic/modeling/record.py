"""critic.json, the record of a model folder: what the weights are (their labels, how they read text), what they were
trained on and how, and what was measured of them since (calibration, the "not sure" curve, evaluation, exports and
backends, the cascade). One typed record, read and written here only; a file from an older critic is upgraded as it
is read, and keys this critic does not know are kept as they were. modeling.folder writes it, with the model card."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from critic import data
from critic.data import catalogue

FILE = "critic.json"
FORMAT = 2  # 1: the untyped critic.json written before 2026-12-06 (no "format" key), read the same way


@dataclass
class ModelRecord:
    """A model folder's critic.json. The nested records (truncation, manifest, calibration, abstention, …) are the
    dictionaries their own modules write and read (text.Truncation, data manifests, modeling.calibration,
    modeling.abstention, inference.cascade, inference.backends)."""

    labels: list[str]
    truncation: dict  # text.Truncation.as_dict(): the window each review is cut to
    cleaning: str = "none"
    long_reviews: dict = field(default_factory=lambda: {"mode": "truncate"})  # text.LongReviews' fields
    name: str = "critic"
    # what it was trained from, on and how
    base_model: str | None = None
    base_model_commit: str | None = None  # the hub commit of a base model named by its hub id
    data: str | None = None  # a named dataset or the file as given to `critic train`
    data_path: str | None = None  # that file's absolute path then
    ordered: bool | None = None  # labels with an order (1-5 stars)
    train_rows: int | None = None
    manifest: dict | None = None  # each split's rows, classes and sha256 (critic.data)
    config: dict | None = None  # the TrainConfig, as train_config.json has it
    notes: list[str] = field(default_factory=list)
    distilled_from: dict | None = None
    few_labels: dict | None = None  # the few-label fit's method
    foreign: bool | None = None  # a classifier critic did not train
    # the run
    selected: str | None = None  # which weights were kept
    validation: dict | None = None  # their validation figures
    history: list[dict] | None = None  # every validation of the run
    precision: str | None = None
    processes: int | None = None
    train_seconds: float | None = None
    validation_seconds: float | None = None
    train_samples_per_second: float | None = None
    fp16_skipped_steps: int | None = None
    # measured of the saved weights
    calibration: dict | None = None
    abstention: dict | None = None  # the --min-accuracy curve
    cascade: dict | None = None
    evaluation: dict | None = None
    exports: dict | None = None
    backends: dict | None = None
    complete: bool | None = None  # True: `critic train` finished writing the folder (its last step)
    versions: dict = field(default_factory=dict)  # critic, torch, transformers and Python that wrote it
    format: int = FORMAT
    unknown: dict = field(default_factory=dict)  # keys of a newer critic (or a person), written back as they were

    @classmethod
    def from_dict(cls, saved: dict) -> ModelRecord:
        """The record a critic.json holds: format 1 is read as it is (its keys are the same); a newer format, whose
        keys may mean something else, is an error."""
        if saved.get("format", 1) > FORMAT:
            raise ValueError(
                f"critic.json of format {saved['format']}, written by a newer critic (this one reads up to {FORMAT}): "
                f"upgrade critic to use this model"
            )
        names = {f.name for f in dataclasses.fields(cls)} - {"unknown"}
        known = {key: value for key, value in saved.items() if key in names}
        known["format"] = FORMAT
        return cls(**known, unknown={key: value for key, value in saved.items() if key not in names})

    def to_dict(self) -> dict:
        """What critic.json holds: the fields that are set, then the unknown keys as they were."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "unknown"}
        return {**{key: value for key, value in fields.items() if value is not None}, **self.unknown}

    @classmethod
    def read(cls, folder: str | Path) -> ModelRecord:
        path = Path(folder) / FILE
        saved = json.loads(path.read_text())
        if missing := [name for name in ("labels", "truncation") if name not in saved]:
            raise ValueError(f"{path} has no {' nor '.join(missing)}: not a model record critic wrote")
        return cls.from_dict(saved)

    # ------------------------------------------------------------------ the data the model was trained on

    def trained_on(self, model: str | Path = "the model") -> str:
        """The data the model was trained on: a named dataset, or its file where it still is (as given to `critic
        train`, else the absolute path recorded then). A file that is gone is an error that asks for the data; a
        classifier critic did not train is evaluated on IMDB."""
        if self.data is None and self.foreign:
            return "imdb"
        if self.data is None:
            raise data.DataError(f"{model}: its critic.json does not say what data it was trained on; name the data")
        if str(self.data) in catalogue.DATASETS:
            return str(self.data)
        for candidate in (self.data, self.data_path):
            if candidate and Path(candidate).exists():
                return str(candidate)
        looked = " or ".join(dict.fromkeys(str(c) for c in (self.data, self.data_path) if c))
        raise data.DataError(
            f"{model} was trained on {self.data}, which is not there any more (looked at {looked}); name the data to "
            f"evaluate on: critic evaluate {model} DATA"
        )

    def columns(self) -> data.Columns:
        """The columns and classes of the data, as the model was trained to read them."""
        return data.columns_of(self.config or {})

    def splits(self, splits: Sequence[str], loaded=None, whole_train: bool = False) -> dict | None:
        """Splits of the data the model was trained on, the data read once; None where it cannot be read again.
        "train" is the subset the model trained on (--train-size), or with `whole_train` the whole training split.
        `loaded`: the same data already read (with the model's columns and classes)."""
        settings = self.config or {}
        try:
            dataset = (
                loaded
                if loaded is not None and not settings.get("drop_invalid")
                else data.load(self.trained_on(), self.columns(), settings.get("drop_invalid", False))
            )
            return {
                split: dataset.split(
                    split,
                    settings.get("train_size") if split == "train" and not whole_train else None,
                    settings.get("seed", 42),
                )
                for split in splits
            }
        except (KeyError, OSError, ValueError) as error:
            print(f"critic: the model's {', '.join(splits)} rows cannot be read again ({error})", file=sys.stderr)
            return None

    def rows(self, split: str, loaded=None):
        """One split of the data the model was trained on (its training subset for "train"), or None."""
        splits = self.splits((split,), loaded)
        return None if splits is None else splits[split]

    def split_summary(self, split: str) -> dict:
        """The manifest's record of a split (rows, classes, texts_sha256); empty where the model has none."""
        return ((self.manifest or {}).get("splits") or {}).get(split) or {}


def run_complete(folder: Path) -> bool:
    """Whether `critic train` finished writing this folder (its last step marks critic.json complete)."""
    return (Path(folder) / FILE).is_file() and ModelRecord.read(folder).complete is True
