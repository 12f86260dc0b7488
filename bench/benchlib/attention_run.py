"""One training run of the GPU suite's `attention` step, in a process of its own: cuDNN keeps the attention plans it
built in the process, so each way of running starts with none, as a user's run does. It runs `critic train` with
SPEC's settings, with or without cuDNN's attention (SDPA then takes flash attention for full batches and the
memory-efficient kernel for padded ones), batch widths rounded up to SPEC's multiple (critic's own on the device
when null), and writes the (rows, width) shapes its steps met, with how many steps each, to OUTPUT/shapes.json.

    python bench/benchlib/attention_run.py SPEC.json   # {"settings": {...}, "cudnn": true, "multiple": 64}
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))


def main(spec_path: str) -> int:
    import torch

    import critic
    from critic import config, modeling
    from critic.training import loop

    spec = json.loads(Path(spec_path).read_text())
    torch.backends.cuda.enable_cudnn_sdp(bool(spec["cudnn"]))
    if spec["multiple"]:
        modeling.pad_multiple = lambda device: spec["multiple"]  # read by loop.Machine.choose at the run's start
    shapes: collections.Counter = collections.Counter()
    step = loop.TrainingStep.run

    def counted(self, batch, global_count):
        shapes["x".join(map(str, batch["input_ids"].shape))] += 1
        return step(self, batch, global_count)

    loop.TrainingStep.run = counted
    folder = critic.train_model(
        config.build(spec["settings"]),
        log=lambda m: print(f"  critic: {m}", file=sys.stderr, flush=True),
        progress=False,
    )
    (folder / "shapes.json").write_text(json.dumps(dict(shapes.most_common())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
