"""critic: train, evaluate and serve transformer sentiment classifiers for reviews.

    import critic
    frame = critic.load_dataset("imdb", split="train")             # DataFrame: text, label
    path = critic.train_model(model="minilm", train_size=2000)     # a model folder
    summary = critic.evaluate_model(path, split="test")    # metrics + report files, on the model's own data
    clf = critic.Classifier.load(path)
    clf.predict(["A moving, beautifully shot film."])              # ['positive']

This module only re-exports each stage's front; those that need torch are imported when first used, so that
`import critic` stays quick.
"""

from __future__ import annotations

import importlib

from critic.data import load_dataset

__version__ = "0.1.0"
__all__ = ["Classifier", "load_dataset", "train_model", "evaluate_model", "profile_dataset"]

FRONTS = {
    "Classifier": "critic.inference.predict",
    "train_model": "critic.training.train",
    "evaluate_model": "critic.evaluation.run",
    "profile_dataset": "critic.profile",
}


def __getattr__(name):
    if name in FRONTS:
        return getattr(importlib.import_module(FRONTS[name]), name)
    raise AttributeError(f"module 'critic' has no attribute {name!r}")
