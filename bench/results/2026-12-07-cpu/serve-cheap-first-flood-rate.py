"""The flood of serve-cheap-first-flood.py alone (16 clients, 64 texts of 3,000 characters a request): requests
answered in 20 s after 3 s of warm-up, before (HEAD f4c6eaa in a worktree at OLD) and now; 3 interleaved rounds.
    python serve-cheap-first-flood-rate.py MODEL OLD_SRC"""
import statistics, sys, threading, time
from pathlib import Path

import httpx
import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3] / "src")]
from benchlib.serving import free_port, start_server  # noqa: E402

from critic import data  # noqa: E402
from critic.inference.backends import cpu_name  # noqa: E402

model, old_src = sys.argv[1], sys.argv[2]
reviews = data.load_dataset("imdb", split="test", size=2000, seed=3)["text"].tolist()
long = [(r * 20)[:3000] for r in reviews]


def flood(url, stop, seed, done):
    rng = np.random.default_rng(seed)
    with httpx.Client(timeout=120) as client:
        while not stop.is_set():
            texts = [long[i] for i in rng.choice(len(long), 64, replace=False)]
            client.post(f"{url}/v1/predict", json={"texts": texts}).raise_for_status()
            done.append(time.monotonic())


arms = {"before": {"PYTHONPATH": old_src}, "now": {}}
rates = {name: [] for name in arms}
print(cpu_name(), flush=True)
for round_ in range(3):
    for name, env in arms.items():
        port = free_port()
        server = start_server(model, port, "--backend", "openvino-int8", env=env)
        stop, done = threading.Event(), []
        threads = [threading.Thread(target=flood, args=(f"http://127.0.0.1:{port}", stop, i, done)) for i in range(16)]
        try:
            for thread in threads:
                thread.start()
            start = time.monotonic() + 3
            time.sleep(23)
            rate = sum(start <= t < start + 20 for t in done) / 20
            stop.set()
            for thread in threads:
                thread.join()
        finally:
            stop.set()
            server.terminate()
            server.wait(timeout=60)
        rates[name].append(rate)
        print(round_, name, f"{rate:.2f} requests/s ({rate * 64:.0f} texts/s)", flush=True)
for name, r in rates.items():
    print(f"{name}: median {statistics.median(r):.2f} requests/s ({statistics.median(r) * 64:.0f} texts/s)")
