"""A flood of the largest requests the server takes (16 clients, each sending 64 texts of 3,000 characters, 192,000 in
all, one request after another) while a probe asks /healthz and /v1/predict for a review the cheap stage answers,
in turn; the probe's latencies (a review the model must answer waits its turn behind the flood: about 9 s either way),
before (HEAD f4c6eaa in a worktree at OLD: the cheap stage inside the model's thread) and now (the cheap stage in
worker threads, beside the event loop); 3 interleaved rounds. With --alone, no probe: the flood's own rate, requests
answered in 20 s after 3 s of warm-up (serve-cheap-first-flood-rate.txt).
    python serve-cheap-first-flood.py MODEL OLD_SRC [--alone]"""
import json, statistics, sys, threading, time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3] / "src")]
from benchlib.serving import served  # noqa: E402

from critic import data  # noqa: E402
from critic.inference.backends import cpu_name  # noqa: E402

model, old_src, alone = sys.argv[1], sys.argv[2], "--alone" in sys.argv[3:]
reviews = data.load_dataset("imdb", split="test", size=2000, seed=3)["text"].tolist()
long = [(r * 20)[:3000] for r in reviews]
sure = ("An absolute masterpiece. Brilliant acting, a wonderful story and superb direction. I loved it, highly "
        "recommended: a perfect 10/10, one of the best films ever made.")  # the cheap stage answers it


def flood(url: str, stop: threading.Event, seed: int, done: list) -> None:
    rng = np.random.default_rng(seed)
    with httpx.Client(timeout=120) as client:
        while not stop.is_set():
            texts = [long[i] for i in rng.choice(len(long), 64, replace=False)]
            client.post(f"{url}/v1/predict", json={"texts": texts}).raise_for_status()
            done.append(time.monotonic())


@contextmanager
def flooding(url: str, clients: int = 16):
    """The flood for the length of the block, which gets the times its requests were answered."""
    stop, done = threading.Event(), []
    threads = [threading.Thread(target=flood, args=(url, stop, i, done)) for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield done
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def probed(url: str) -> dict:
    """/healthz and a sure review's /v1/predict in turn for 20 s: the latencies of each (p50, p99 in ms, count)."""
    seen = {"healthz": [], "predict": []}
    with httpx.Client(timeout=120) as client:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            for probe, call in (("healthz", lambda: client.get(f"{url}/healthz")),
                                ("predict", lambda: client.post(f"{url}/v1/predict", json={"text": sure}))):
                started = time.perf_counter()
                call()
                seen[probe].append(time.perf_counter() - started)
            time.sleep(0.1)
    return {probe: [round(float(np.percentile(v, q)) * 1e3, 1) for q in (50, 99)] + [len(v)] for probe, v in seen.items()}


arms = {"before (cheap stage in the model's thread)": {"PYTHONPATH": old_src}, "now (cheap stage first)": {}}
results = {name: [] for name in arms}
print(cpu_name(), flush=True)
for round_ in range(3):
    for name, env in arms.items():
        with served(model, "--backend", "openvino-int8", env=env) as url, flooding(url) as done:
            time.sleep(3)
            start = time.monotonic()
            if alone:
                time.sleep(20)
                result = {"rate": sum(start <= t < start + 20 for t in done) / 20}
            else:
                result = probed(url) | {"flood": len(done)}
        results[name].append(result)
        print(round_, name, json.dumps(result), flush=True)
if alone:
    for name, runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        print(f"{name}: median {rate:.2f} requests/s ({rate * 64:.0f} texts/s)")
else:
    print(f"\n{'':44}{'healthz p50 ms':>15}{'p99 ms':>8}{'predict p50 ms':>15}{'p99 ms':>8}")
    for name, runs in results.items():
        med = lambda probe, i: statistics.median(r[probe][i] for r in runs)
        print(f"{name:44}{med('healthz', 0):15.1f}{med('healthz', 1):8.1f}{med('predict', 0):15.1f}{med('predict', 1):8.1f}")
