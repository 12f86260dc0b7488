"""The server with the cascade: the cheap stage's answers inside the model's micro-batch (before, HEAD f4c6eaa in a
worktree at OLD) against answered first, outside it (now), and the model alone; each served by `critic serve
--backend openvino-int8` in turn, 3 interleaved rounds, wrk for 10 s at 16 clients and at 1, the medians printed.
    python serve-cheap-first.py MODEL OLD_SRC"""
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3] / "src")]
from serve_load import interleaved  # noqa: E402

from critic import data  # noqa: E402
from critic.inference.backends import cpu_name  # noqa: E402

model, old_src = sys.argv[1], sys.argv[2]
texts = data.load_dataset("imdb", split="test", size=500, seed=1)["text"].tolist()
print(cpu_name(), flush=True)
interleaved(
    model,
    {
        "cascade, cheap answers in the batch (before)": (("--backend", "openvino-int8"), {"PYTHONPATH": old_src}),
        "cascade, cheap answers first (now)": (("--backend", "openvino-int8"), {}),
        "model alone (--cascade off)": (("--backend", "openvino-int8", "--cascade", "off"), {}),
    },
    texts,
)
