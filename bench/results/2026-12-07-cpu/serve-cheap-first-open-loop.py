"""Open loop: mixed IMDB reviews at a fixed rate (RATE requests/s for 15 s, whatever the answers' pace, as real
traffic comes), each answer's latency by the stage that gave it; before (HEAD f4c6eaa in a worktree at OLD: the
cheap stage's answers inside the model's micro-batch) and now (answered first, outside it); 3 interleaved rounds.
    python serve-cheap-first-open-loop.py MODEL OLD_SRC RATE"""
import asyncio, json, statistics, sys, time
from pathlib import Path

import httpx
import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3] / "src")]
from benchlib.serving import served  # noqa: E402
from serve_load import wait_until_idle  # noqa: E402

from critic import data  # noqa: E402
from critic.inference.backends import cpu_name  # noqa: E402

model, old_src, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
texts = data.load_dataset("imdb", split="test", size=500, seed=1)["text"].tolist()


async def open_loop(url: str, duration: float = 15) -> dict:
    seen, failures = {"cheap": [], "model": []}, 0
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=None)) as client:

        async def one(i: int):
            nonlocal failures
            started = time.perf_counter()
            response = await client.post(f"{url}/v1/predict", json={"text": texts[i % len(texts)]})
            if response.status_code != 200:
                failures += 1
                return
            seen[response.json()["predictions"][0]["stage"]].append(time.perf_counter() - started)

        tasks, begin = [], time.perf_counter()
        for i in range(int(rate * duration)):
            await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return {stage: [float(np.percentile(v, q)) for q in (50, 99)] + [len(v)] for stage, v in seen.items()} | {
        "errors": failures}


arms = {"before (in the batch)": {"PYTHONPATH": old_src}, "now (cheap first)": {}}
results = {name: [] for name in arms}
print(cpu_name(), f"{rate:g} requests/s", flush=True)
for round_ in range(3):
    for name, env in arms.items():
        with served(model, "--backend", "openvino-int8", env=env) as url:
            wait_until_idle(url, texts[0])
            result = asyncio.run(open_loop(url))
        results[name].append(result)
        print(round_, name, json.dumps(result), flush=True)
print(f"\n{'':24}{'cheap p50 ms':>14}{'p99 ms':>8}{'model p50 ms':>14}{'p99 ms':>8}")
for name, runs in results.items():
    med = lambda stage, i: statistics.median(r[stage][i] for r in runs) * 1e3
    print(f"{name:24}{med('cheap', 0):14.1f}{med('cheap', 1):8.1f}{med('model', 0):14.1f}{med('model', 1):8.1f}")
