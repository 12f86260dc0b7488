"""`critic serve --backend BACKEND` at 16 and at 1 wrk clients with micro-batching off (--max-batch 1) and on
(--max-batch 32), the cascade on and off (or as CASCADES says: on, off or on,off); each served in turn, 3
interleaved rounds, medians.
    python serve-max-batch.py MODEL BACKEND [CASCADES]"""
import json, statistics, sys, tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3] / "src")]
from benchlib.serving import free_port, start_server  # noqa: E402
from serve_load import lua_script, wait_until_idle, wrk  # noqa: E402

from critic import data  # noqa: E402
from critic.inference.backends import cpu_name  # noqa: E402

model, backend = sys.argv[1], sys.argv[2]
cascades = sys.argv[3].split(",") if len(sys.argv) > 3 else ["on", "off"]
texts = data.load_dataset("imdb", split="test", size=500, seed=1)["text"].tolist()
script = lua_script(texts, Path(tempfile.mkdtemp()))
arms = {f"--max-batch {b}, cascade {c}": (str(b), c) for c in cascades for b in (1, 32)}
runs = {name: [] for name in arms}
print(cpu_name(), backend, flush=True)
for round_ in range(3):
    for name, (batch, cascade) in arms.items():
        port = free_port()
        server = start_server(model, port, "--backend", backend, "--cascade", cascade, "--max-batch", batch)
        url = f"http://127.0.0.1:{port}"
        try:
            wrk(url, script, 16, 3)  # warm
            wait_until_idle(url, texts[0])
            sixteen = wrk(url, script, 16, 10)
            wait_until_idle(url, texts[0])
            one = wrk(url, script, 1, 10)
        finally:
            server.terminate()
            server.wait(timeout=60)
        runs[name].append({"16": sixteen, "1": one})
        print(round_, name, json.dumps({"16": sixteen, "1": one}), flush=True)
print(f"\n{'':28}{'16 clients req/s':>17}{'p50 ms':>8}{'p99 ms':>8}{'1 client req/s':>16}{'p50 ms':>8}")
for name, results in runs.items():
    med = lambda level, key: statistics.median(r[level][key] for r in results)
    print(f"{name:28}{med('16', 'rps'):17.1f}{med('16', 'p50') * 1e3:8.1f}{med('16', 'p99') * 1e3:8.1f}"
          f"{med('1', 'rps'):16.1f}{med('1', 'p50') * 1e3:8.1f}")
