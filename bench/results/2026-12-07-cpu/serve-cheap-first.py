"""The server with the cascade: the cheap stage's answers inside the model's micro-batch (before, HEAD f4c6eaa in a
worktree at OLD) against answered first, outside it (now), and the model alone; each served by `critic serve
--backend openvino-int8` in turn, 3 interleaved rounds, wrk for 10 s at 16 clients and at 1, the medians printed.
    python serve-cheap-first.py MODEL OLD_SRC"""
import json, statistics, sys, tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3] / "src")]
from benchlib.serving import free_port, start_server  # noqa: E402
from serve_load import lua_script, wait_until_idle, wrk  # noqa: E402

from critic import data  # noqa: E402
from critic.inference.backends import cpu_name  # noqa: E402

model, old_src = sys.argv[1], sys.argv[2]
texts = data.load_dataset("imdb", split="test", size=500, seed=1)["text"].tolist()
script = lua_script(texts, Path(tempfile.mkdtemp()))
arms = {
    "cascade, cheap answers in the batch (before)": ("on", {"PYTHONPATH": old_src}),
    "cascade, cheap answers first (now)": ("on", {}),
    "model alone (--cascade off)": ("off", {}),
}
runs = {name: [] for name in arms}
print(cpu_name(), flush=True)
for round_ in range(3):
    for name, (cascade, env) in arms.items():
        port = free_port()
        server = start_server(model, port, "--backend", "openvino-int8", "--cascade", cascade, env=env)
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
print(f"\n{'':48}{'16 clients req/s':>17}{'p50 ms':>8}{'p99 ms':>8}{'1 client p50 ms':>17}{'p99 ms':>8}")
for name, results in runs.items():
    med = lambda level, key: statistics.median(r[level][key] for r in results)
    print(f"{name:48}{med('16', 'rps'):17.1f}{med('16', 'p50') * 1e3:8.1f}{med('16', 'p99') * 1e3:8.1f}"
          f"{med('1', 'p50') * 1e3:17.1f}{med('1', 'p99') * 1e3:8.1f}")
