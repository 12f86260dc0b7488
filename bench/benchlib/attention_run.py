"""One training run of the GPU suite's `attention` step, in a process of its own: cuDNN keeps the attention plans it
built in the process, so each way of running starts with none, as a user's run does. It runs `critic train` with
SPEC's settings, with or without cuDNN's attention (SDPA then takes flash attention for full batches and the
memory-efficient kernel for padded ones), batch widths rounded up to SPEC's multiple (critic's own on the device
when null), and writes the (rows, width) shapes its steps met, with how many steps each, to OUTPUT/shapes.json;
then it scores the validation reviews with the model twice, the first pass meeting its batch shapes for the first
time and the second given the plans the first built, and writes both rates to OUTPUT/scoring.json.

    python bench/benchlib/attention_run.py SPEC.json   # {"settings": {...}, "cudnn": true, "multiple": 64}
"""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: benchlib.harness puts src/ on the path

from benchlib.harness import sync  # noqa: E402


def main(spec_path: str) -> int:
    import torch

    import critic
    from critic import config, modeling
    from critic.training import step as training_step

    spec = json.loads(Path(spec_path).read_text())
    torch.backends.cuda.enable_cudnn_sdp(bool(spec["cudnn"]))
    if spec["multiple"]:
        modeling.pad_multiple = lambda device: spec["multiple"]  # read by step.Machine.choose at the run's start
    shapes: collections.Counter = collections.Counter()
    step = training_step.TrainingStep.run

    def counted(self, batch, mean_over):
        shapes["x".join(map(str, batch["input_ids"].shape))] += 1
        return step(self, batch, mean_over)

    training_step.TrainingStep.run = counted
    folder = critic.train_model(
        config.build(spec["settings"]),
        log=lambda m: print(f"  critic: {m}", file=sys.stderr, flush=True),
        progress=False,
    )
    (folder / "shapes.json").write_text(json.dumps(dict(shapes.most_common())))
    (folder / "scoring.json").write_text(json.dumps(scoring_passes(folder, spec["settings"])))
    return 0


def scoring_passes(folder: Path, settings: dict) -> dict:
    """Reviews a second over the validation split, tokenized beforehand, in a cold pass and a warm one."""
    from critic import data
    from critic.inference.predict import Classifier

    texts = data.load(settings["data"]).split("validation")["text"].tolist()
    classifier = Classifier.load(folder, device=settings["device"], backend="torch", long_reviews="truncate")
    tokens = classifier.encode(texts)
    rates = []
    for _ in range(2):
        sync(classifier.device)
        started = time.perf_counter()
        classifier.proba_from_tokens(tokens)
        sync(classifier.device)
        rates.append(len(texts) / (time.perf_counter() - started))
    classifier.close()
    return {"reviews": len(texts), "first_pass_reviews_per_s": rates[0], "second_pass_reviews_per_s": rates[1]}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
