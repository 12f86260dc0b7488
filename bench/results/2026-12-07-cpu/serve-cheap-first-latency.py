"""What a review the cheap stage answers waits for while the server is under load: 16 wrk clients send mixed IMDB
reviews for 16 s, and meanwhile one more client sends, one after the other, a review the cheap stage answers and
one it passes on, 60 of each; their latencies by stage, before (HEAD f4c6eaa in a worktree at OLD: the cheap
stage's answers inside the model's micro-batch) and now (answered first, outside it); 3 interleaved rounds.
    python serve-cheap-first-latency.py MODEL OLD_SRC"""
import json, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import httpx
import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3] / "src")]
from benchlib.serving import served  # noqa: E402
from serve_load import lua_script, wait_until_idle  # noqa: E402

from critic import data  # noqa: E402
from critic.inference.backends import cpu_name  # noqa: E402
from critic.inference.predict import Classifier  # noqa: E402

model, old_src = sys.argv[1], sys.argv[2]
texts = data.load_dataset("imdb", split="test", size=500, seed=1)["text"].tolist()
probe = data.load_dataset("imdb", split="test", size=500, seed=2)["text"].tolist()
_, cheap = Classifier.load(model, backend="torch").cheap_answers(probe)
sure = [t for t, c in zip(probe, cheap) if c][:60]
hard = [t for t, c in zip(probe, cheap) if not c][:60]
script = lua_script(texts, Path(tempfile.mkdtemp()))
arms = {"before (in the batch)": {"PYTHONPATH": old_src}, "now (cheap first)": {}}
results = {name: {"cheap": [], "model": [], "load": []} for name in arms}
print(cpu_name(), flush=True)
for round_ in range(3):
    for name, env in arms.items():
        with served(model, "--backend", "openvino-int8", env=env) as url:
            wait_until_idle(url, texts[0])
            load = subprocess.Popen(["wrk", "-t1", "-c16", "-d16s", "--timeout", "10s", "-s", str(script), url],
                                    stdout=subprocess.PIPE, text=True)
            time.sleep(2)
            seen = {"cheap": [], "model": []}
            with httpx.Client(timeout=30) as client:
                for s, h in zip(sure, hard):
                    for text in (s, h):
                        started = time.perf_counter()
                        answer = client.post(f"{url}/v1/predict", json={"text": text}).json()
                        seen[answer["predictions"][0]["stage"]].append(time.perf_counter() - started)
            out = load.communicate()[0]
            rps = float(out.split("Requests/sec:")[1].split()[0])
        for stage, times in seen.items():
            results[name][stage].append((float(np.percentile(times, 50)), float(np.percentile(times, 99)), len(times)))
        results[name]["load"].append(rps)
        print(round_, name, json.dumps({k: [round(x * 1e3, 1) for x in np.percentile(v, [50, 99])] for k, v in seen.items()}),
              f"16 clients {rps:.1f} req/s", flush=True)
print(f"\n{'':24}{'cheap p50 ms':>14}{'p99 ms':>8}{'model p50 ms':>14}{'p99 ms':>8}{'16 clients req/s':>18}")
for name, r in results.items():
    med = lambda stage, i: statistics.median(x[i] for x in r[stage]) * 1e3
    print(f"{name:24}{med('cheap', 0):14.1f}{med('cheap', 1):8.1f}{med('model', 0):14.1f}{med('model', 1):8.1f}"
          f"{statistics.median(r['load']):18.1f}")
