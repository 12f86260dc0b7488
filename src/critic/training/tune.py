"""Hyper-parameter search over `critic train` runs: Optuna samples the settings (TPE) and prunes trials whose
per-epoch validation falls behind, MLflow records every trial, and the result is a table, Optuna's plots in one
HTML page, and the best settings as a TOML file that `critic train --config` takes. Trials validate on the
validation split, or by k-fold cross-validation inside the training split; the test split is never read. The study
lives in OUTPUT/optuna.journal, so a search that is stopped and started again goes on where it was."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from critic import messages, modeling, safe_csv
from critic.config import TrainConfig
from critic.training.train import train

# name -> how Optuna draws it; `critic tune --space lr,epochs` searches a subset.
SPACE: dict[str, Callable] = {
    "lr": lambda t: t.suggest_float("lr", 1e-5, 2e-4, log=True),
    "epochs": lambda t: t.suggest_int("epochs", 2, 5),
    "warmup_ratio": lambda t: t.suggest_float("warmup_ratio", 0.0, 0.2),
    "weight_decay": lambda t: t.suggest_float("weight_decay", 0.0, 0.1),
    "layer_decay": lambda t: t.suggest_float("layer_decay", 0.7, 1.0),
    "batch_size": lambda t: t.suggest_categorical("batch_size", [16, 32, 64]),
    "max_length": lambda t: t.suggest_categorical("max_length", [256, 384, 512]),
    "head_share": lambda t: t.suggest_float("head_share", 0.0, 0.5),
    "dropout": lambda t: t.suggest_float("dropout", 0.0, 0.2),
}


@dataclass
class TuneOptions:
    trials: int = 20
    folds: int = 0  # 0: validate on the validation split; k >= 2: k-fold cross-validation in the training split
    space: tuple[str, ...] = tuple(SPACE)
    tracking_uri: str | None = None  # default: sqlite in OUTPUT
    timeout_s: float | None = None
    keep_models: bool = False  # trial weights are deleted once scored, unless asked

    def __post_init__(self):
        unknown = sorted(set(self.space) - set(SPACE))
        if unknown:
            raise ValueError(f"unknown search dimension(s) {', '.join(unknown)}; choose from {', '.join(SPACE)}")
        if self.folds == 1 or self.folds < 0:
            raise ValueError(f"folds {self.folds}: 0 (the validation split) or at least 2")
        if self.trials <= 0:
            raise ValueError(f"trials must be positive, got {self.trials}")


def trial_settings(base: TrainConfig, params: dict) -> dict:
    """The train settings of one trial: the base job with the sampled values (head_share -> head_tokens)."""
    settings = {k: v for k, v in params.items() if k != "head_share"}
    if "head_share" in params:
        length = params.get("max_length", base.max_length)
        settings.update(truncation="head+tail", head_tokens=round(params["head_share"] * length))
    return settings


def _direction(metric: str) -> str:
    return "minimize" if metric == "loss" else "maximize"


def _best_value(history: list[dict], metric: str) -> float:
    values = [entry[f"val_{metric}"] for entry in history]
    return min(values) if metric == "loss" else max(values)


class Objective:
    """One Optuna trial: one training run (or one per fold), each validation reported for pruning, everything
    logged to MLflow; returns the validation metric (the mean over folds)."""

    def __init__(self, base: TrainConfig, options: TuneOptions, output: Path, say: Callable[[str], None]):
        self.base, self.options, self.output, self.say = base, options, output, say

    def __call__(self, trial) -> float:
        import mlflow
        import optuna

        params = {name: SPACE[name](trial) for name in self.options.space}
        settings = trial_settings(self.base, params)
        folds = [f"{k}/{self.options.folds}" for k in range(1, self.options.folds + 1)] or [None]
        self.say(f"trial {trial.number}: " + ", ".join(f"{k}={_show(v)}" for k, v in params.items()))
        with mlflow.start_run(run_name=f"trial-{trial.number:04d}"):
            mlflow.log_params(
                {
                    **params,
                    "folds": self.options.folds,
                    "model": self.base.model,
                    "data": self.base.data,
                    "train_size": self.base.train_size,
                }
            )
            scores = []
            try:
                for index, fold in enumerate(folds):
                    folder = self.output / f"trial-{trial.number:04d}" / (f"fold-{index + 1}" if fold else "run")
                    config = dataclasses.replace(  # fine-tuning's settings are searched: never the few-label fit
                        self.base,
                        **settings,
                        fold=fold,
                        output=str(folder),
                        calibrate=False,
                        notes=[],
                        test_size=None,
                        few_labels="off",
                    )
                    report = self._reporter(trial, mlflow, index, len(folds), scores)
                    train(config, log=lambda line: None, progress=False, on_validation=report)
                    history = modeling.ModelRecord.read(folder).history
                    scores.append(_best_value(history, self.base.metric))
                    self._tidy(folder)
            except optuna.TrialPruned:
                mlflow.set_tag("state", "pruned")
                self.say(f"trial {trial.number}: pruned")
                raise
            value = float(np.mean(scores))
            mlflow.log_metric(f"val_{self.base.metric}", value)
            if len(scores) > 1:
                mlflow.log_metric(f"val_{self.base.metric}_std", float(np.std(scores)))
            mlflow.set_tag("state", "complete")
        self.say(
            f"trial {trial.number}: validation {self.base.metric} {value:.4f}"
            + (f" (folds {', '.join(f'{s:.4f}' for s in scores)})" if len(scores) > 1 else "")
        )
        return value

    def _reporter(self, trial, mlflow, fold: int, folds: int, done: list[float]):
        """Called after each validation: logs it, reports it to the pruner (with folds: the mean of the finished
        folds and this one so far, one report step per epoch of the whole trial), prunes when Optuna says so."""
        import optuna

        metric = self.base.metric

        def report(entry: dict) -> None:
            epoch = entry["epoch"]
            step = int(round((fold + epoch) * 100))  # ordered across folds
            mlflow.log_metrics({k: v for k, v in entry.items() if k.startswith("val_")}, step=step)
            value = float(np.mean(done + [entry[f"val_{metric}"]]))
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation {metric} {value:.4f} at epoch {epoch:.2f} of fold {fold + 1}")

        return report

    def _tidy(self, folder: Path) -> None:
        """A scored trial keeps its logs and record; its checkpoint (and weights) would fill the disk."""
        shutil.rmtree(folder / "checkpoint", ignore_errors=True)
        if not self.options.keep_models:
            for weights in folder.glob("*.safetensors"):
                weights.unlink()


def _show(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def tune(base: TrainConfig, options: TuneOptions, log: Callable[[str], None] | None = None) -> dict:
    """Run (or continue) the search in base.output; returns the best trial's settings and score, and the files."""
    import mlflow
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    say = log or messages.to_stderr
    output = Path(base.output)
    output.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mlflow.set_tracking_uri(options.tracking_uri or f"sqlite:///{(output / 'mlflow.db').resolve()}")
    mlflow.set_experiment(f"critic-tune-{output.name}")
    storage = JournalStorage(JournalFileBackend(str(output / "optuna.journal")))
    study = optuna.create_study(
        study_name="critic",
        storage=storage,
        load_if_exists=True,
        direction=_direction(base.metric),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=50),
    )
    # Seeded for repeatable searches, by the trials already there: a continued search seeded as it first was drew the
    # first trials' settings again.
    study.sampler = optuna.samplers.TPESampler(seed=base.seed + len(study.trials))
    _check_same_search(study, base, options)
    _retry_interrupted(study, say)
    from optuna.trial import TrialState

    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    remaining = options.trials - finished
    say(
        f"search in {output}: {finished} trial(s) complete or pruned, {max(remaining, 0)} to go; validation "
        + (f"by {options.folds}-fold cross-validation in the training split" if options.folds else "split")
        + f"; MLflow at {mlflow.get_tracking_uri()}"
    )
    if base.eval_size and not options.folds:
        say(
            f"validation on {base.eval_size:,} reviews: trials within about ±{resolution(base.eval_size):.1%} of "
            f"each other cannot be told apart (95% interval at 85% accuracy); a larger --eval-size or --folds "
            f"separates them better"
        )
    if remaining > 0:
        study.optimize(
            Objective(base, options, output, say), n_trials=remaining, timeout=options.timeout_s, catch=(RuntimeError,)
        )
    return write_results(study, base, options, output, say)


def resolution(rows: int, accuracy: float = 0.85) -> float:
    """Half the 95% interval of an accuracy measured on `rows` reviews: how far apart two trials must be to tell.
    On 2 CPU cores, 500 validation reviews (±3.1 points) picked settings that did 2.3 points worse on test than the
    preset's (docs/benchmarks.md)."""
    return 1.96 * (accuracy * (1 - accuracy) / rows) ** 0.5


def _check_same_search(study, base: TrainConfig, options: TuneOptions) -> None:
    """A study folder holds one search: continuing it with another base job or space would mix them."""
    described = {
        "base": {k: v for k, v in base.to_dict().items() if k not in ("output", "notes")},
        "folds": options.folds,
        "space": sorted(options.space),
    }
    saved = study.user_attrs.get("search")
    if saved is None:
        study.set_user_attr("search", described)
    elif saved != described:
        changed = sorted(
            k for k in set(saved["base"]) | set(described["base"]) if saved["base"].get(k) != described["base"].get(k)
        )
        changed += [k for k in ("folds", "space") if saved[k] != described[k]]
        raise ValueError(
            f"{base.output} holds a search with other settings ({', '.join(changed)}); use another "
            f"--output or delete it"
        )


def _retry_interrupted(study, say: Callable[[str], None]) -> None:
    """Trials left running by a stopped search are marked failed and their settings queued again."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
        say(f"trial {trial.number} was interrupted: its settings are queued again")


def write_results(study, base: TrainConfig, options: TuneOptions, output: Path, say: Callable[[str], None]) -> dict:
    """trials.csv, tune.html (table and Optuna's plots) and best.toml."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise RuntimeError(f"no trial of the search in {output} completed; see the messages above")
    best = study.best_trial
    frame = study.trials_dataframe(attrs=("number", "value", "state", "duration", "params"))
    safe_csv.write_frame(frame, output / "trials.csv")
    # What the search was about and what it found; not the search's size (--train-size), so that
    # `critic train --config best.toml --preset gpu` trains on the whole training split.
    settings = {
        **{
            k: v
            for k, v in base.to_dict().items()
            if k
            in ("model", "data", "text_column", "label_column", "label_map", "cleaning", "truncation", "metric", "seed")
            and v is not None
        },
        **trial_settings(base, best.params),
    }
    searched_on = f"{base.train_size:,} training reviews" if base.train_size else "the whole training split"
    toml = output / "best.toml"
    toml.write_text(
        f"# critic tune: best of {len(complete)} complete trial(s), validation {base.metric} "
        f"{best.value:.4f} (trial {best.number}); searched on {searched_on}\n[train]\n" + to_toml(settings)
    )
    page = output / "tune.html"
    page.write_text(tune_html(study, base, options, frame))
    say(
        f"best: trial {best.number}, validation {base.metric} {best.value:.4f}: "
        + ", ".join(f"{k}={_show(v)}" for k, v in best.params.items())
    )
    say(f"wrote {output / 'trials.csv'}, {page} and {toml} (train with it: critic train --config {toml})")
    return {
        "best_value": best.value,
        "best_trial": best.number,
        "best_settings": settings,
        "complete": len(complete),
        "files": [str(output / "trials.csv"), str(page), str(toml)],
    }


def to_toml(settings: dict) -> str:
    """key = value lines for strings, numbers and booleans (all a train setting can be)."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(float(v)) if isinstance(v, float) and math.isfinite(v) else str(v)
        return json.dumps(str(v))  # a TOML basic string: JSON's escapes are TOML's

    return "".join(f"{k} = {value(v)}\n" for k, v in settings.items())


def tune_html(study, base: TrainConfig, options: TuneOptions, frame) -> str:
    """The trials as a table and Optuna's plots (plotly, its script embedded once: the page works offline)."""
    import optuna.visualization as plots

    from critic import report

    figures = [
        ("History", plots.plot_optimization_history),
        ("Learning curves", plots.plot_intermediate_values),
        ("Importance", plots.plot_param_importances),
        ("Parallel coordinates", plots.plot_parallel_coordinate),
        ("Slices", plots.plot_slice),
    ]
    html, script = [], "inline"
    for title, plot in figures:
        try:
            figure = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. importance needs two complete trials
            continue
        html.append(f"<h3>{title}</h3>" + figure.to_html(full_html=False, include_plotlyjs=script))
        script = False
    shown = frame.sort_values("value", ascending=base.metric == "loss", na_position="last")
    table = report.table(list(shown.columns), [tuple(_show(v) for v in row) for row in shown.itertuples(index=False)])
    return report.page(
        f"critic tune: {base.model} on {base.data}",
        f"{len(frame)} trials; validation {base.metric} "
        + (f"by {options.folds}-fold cross-validation" if options.folds else "on the validation split"),
        [("Trials", table), ("Plots", "".join(html))],
    )
