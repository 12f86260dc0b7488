"""`critic serve --backend BACKEND` at 16 and at 1 wrk clients with micro-batching off (--max-batch 1) and on
(--max-batch 32), the cascade on and off (or as CASCADES says: on, off or on,off); each served in turn, 3
interleaved rounds, medians.
    python serve-max-batch.py MODEL BACKEND [CASCADES]"""
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3] / "src")]
from serve_load import interleaved  # noqa: E402

from critic import data  # noqa: E402
from critic.inference.backends import cpu_name  # noqa: E402

model, backend = sys.argv[1], sys.argv[2]
cascades = sys.argv[3].split(",") if len(sys.argv) > 3 else ["on", "off"]
texts = data.load_dataset("imdb", split="test", size=500, seed=1)["text"].tolist()
print(cpu_name(), backend, flush=True)
arms = {
    f"--max-batch {batch}, cascade {cascade}": (("--backend", backend, "--cascade", cascade, "--max-batch", str(batch)), {})
    for cascade in cascades
    for batch in (1, 32)
}
interleaved(model, arms, texts)
