"""The front of training: `train` picks the job a config asks for and runs it on the one loop
(critic.training.loop) — distillation when the config names a teacher (distill.py), the few-label fit when the
labelled reviews are few (few_labels.py), fine-tuning otherwise (fine_tuning.py). Masked-LM pre-training has a verb
of its own (pretrain.py). The jobs never import this module; tuning (tune.py) drives it.

A run in OUTPUT writes: the model (the best or last checkpoint, a standard Hugging Face folder), train_config.json,
train_log.jsonl, stats.csv (the notebook's table), learning_curve.svg and checkpoint/ (everything needed to
resume: weights, optimiser, schedule, loss scale, every process's random state, position). Under torchrun the same
command trains with DistributedDataParallel, on one machine or several (OUTPUT on a filesystem they all see).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from critic import data
from critic.config import TrainConfig
from critic.training import distill, few_labels, fine_tuning
from critic.training.processes import first_process, speaker


def train(
    config: TrainConfig,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    on_validation: Callable[[dict], None] | None = None,
) -> Path:
    """Train as `config` says; returns the folder of the saved model. Resumes when OUTPUT has a checkpoint.
    `on_validation` is called with each validation's history entry (critic.training.tune reports them to its
    pruner)."""
    if config.teacher:
        return distill.distill(config, log, progress, on_validation)
    dataset = None
    if few_labels.considered(config) or config.small_split_batch:  # read once, for the choices and the chosen path
        say = speaker(log, first_process())  # as the run will say it: a download is not silent
        dataset = data.load(config.data, data.columns_of(config), config.drop_invalid, log=say)
        if few_labels.wanted(config, dataset):
            return few_labels.fit(config, log, dataset, progress)
        config = fine_tuning.for_small_split(config, dataset)
    return fine_tuning.fine_tune(config, log, progress, dataset=dataset, on_validation=on_validation)


def train_model(config=None, toml: str | Path | None = None, log=None, progress: bool = True, **settings) -> Path:
    """Train as `config` (a TrainConfig) or as keyword settings say (with `teacher`: distil from that model);
    returns the model folder."""
    from critic import config as configuration

    return train(config or configuration.build(settings, toml), log=log, progress=progress)
