"""The int8 check of `critic export` (an int8 backend more than 0.3 points less accurate than PyTorch on the whole
validation split is refused) with each engine alone, as the export now runs it, and through the cascade, as it ran
before (8f24f7d): PyTorch and OpenVINO int8 on the model's validation split, both ways.

    python int8-check-alone.py MODEL_FOLDER
"""

import json
import sys
from pathlib import Path

from critic.inference.predict import Classifier
from critic.modeling.record import ModelRecord

folder = Path(sys.argv[1])
record = ModelRecord.from_dict(json.loads((folder / "critic.json").read_text()))
validation = record.rows("validation")
texts, labels = validation["text"].tolist(), validation["label"].to_numpy()
figures = {}
for cascade in (False, True):
    for backend in ("torch", "openvino-int8"):
        scorer = Classifier.load(folder, device="cpu", backend=backend, long_reviews="truncate", cascade=cascade)
        figures[(backend, cascade)] = float((scorer.predict_proba(texts).argmax(1) == labels).mean())
        print(
            f"{backend:>14} {'through the cascade' if cascade else 'alone':>19}: {figures[(backend, cascade)]:.4%}",
            flush=True,
        )
for cascade in (False, True):
    loss = (figures[("openvino-int8", cascade)] - figures[("torch", cascade)]) * 100
    verdict = "refused" if loss < -0.3 else "passes"
    print(
        f"openvino-int8 against PyTorch, {'through the cascade' if cascade else 'alone'}: {loss:+.2f} points on "
        f"{len(texts):,} reviews: {verdict}"
    )
