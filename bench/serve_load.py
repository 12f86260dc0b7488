"""Load test of `critic serve` on loopback, bounded in time: throughput and p50/p99 latency at rising concurrency
(wrk, one review per request, real IMDB reviews), with and without micro-batching; then an open-loop run at half
the saturation rate for its p99. The offline rate of the same backend on the same reviews, measured in the same
run, is the yardstick: micro-batching must not waste the engine.

    python bench/serve_load.py runs/minilm-imdb [--backend onnx-int8] [--duration 10]
    python bench/serve_load.py runs/minilm-imdb --backend onnx-int8 openvino-int8 --concurrency 1 16
    python bench/serve_load.py runs/minilm-imdb --cascade on off      # with the model's cascade, and without
    python bench/serve_load.py runs/minilm-imdb --cheap-only --concurrency 1   # the reviews its cheap stage answers
Needs wrk (Debian package `wrk`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchlib.serving import served  # noqa: E402

from critic import data  # noqa: E402
from critic.inference.backends import cpu_name as cpu_model  # noqa: E402
from critic.inference.predict import Classifier  # noqa: E402


def lua_script(texts: list[str], folder: Path) -> Path:
    bodies = ",\n".join(json.dumps(json.dumps({"text": t})) for t in texts)
    script = folder / "post.lua"
    script.write_text(f"""
bodies = {{{bodies}}}
counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  return wrk.format(nil, "/v1/predict", nil, bodies[(counter % #bodies) + 1])
end
""")
    return script


def wrk(url: str, script: Path, connections: int, duration: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
    ).stdout

    def seconds(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        value, unit = float(match[1]), match[2]
        return value / {"us": 1e6, "ms": 1e3, "s": 1}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "p50": seconds("50"),
        "p99": seconds("99"),
        "errors": (int(errors[1]) if errors else 0) + (sum(map(int, sockets.groups())) if sockets else 0),
    }


def busy_and_alone(url: str, script: Path, text: str, duration: int = 10) -> dict:
    """After 3 s of warm-up, wrk at 16 clients and then at 1 (the server idle before each): {"16": ..., "1": ...}."""
    wrk(url, script, 16, 3)
    levels = {}
    for clients in (16, 1):
        wait_until_idle(url, text)
        levels[str(clients)] = wrk(url, script, clients, duration)
    return levels


def interleaved(model: str, arms: dict[str, tuple], texts: list[str], rounds: int = 3) -> dict[str, list]:
    """Each arm, (`critic serve` options, environment), served in turn and measured by `busy_and_alone`, in
    `rounds` interleaved rounds (the shared machine's load meets them alike); each result printed as it comes, then
    the medians."""
    script = lua_script(texts, Path(tempfile.mkdtemp()))
    runs = {name: [] for name in arms}
    for round_ in range(rounds):
        for name, (options, env) in arms.items():
            with served(model, *options, env=env) as url:
                runs[name].append(busy_and_alone(url, script, texts[0]))
            print(round_, name, json.dumps(runs[name][-1]), flush=True)
    width = max(map(len, arms)) + 2
    print(f"\n{'':{width}}{'16 clients req/s':>17}{'p50 ms':>8}{'p99 ms':>8}", end="")
    print(f"{'1 client req/s':>16}{'p50 ms':>8}{'p99 ms':>8}")
    for name, results in runs.items():
        medians = [
            statistics.median(r[level][key] for r in results) * (1 if key == "rps" else 1e3)
            for level in ("16", "1")
            for key in ("rps", "p50", "p99")
        ]
        print(f"{name:{width}}" + "".join(f"{m:{w}.1f}" for m, w in zip(medians, (17, 8, 8, 16, 8, 8))))
    return runs


def wait_until_idle(url: str, text: str, quick_s: float = 0.3, limit_s: float = 60) -> None:
    """Until a lone request is answered quickly: queued requests from an earlier load are done."""
    import httpx

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        started = time.perf_counter()
        httpx.post(f"{url}/v1/predict", json={"text": text}, timeout=60)
        if time.perf_counter() - started < quick_s:
            return
        time.sleep(0.5)


async def open_loop(url: str, texts: list[str], rate: float, duration: float) -> dict:
    """Requests at a fixed rate, whatever the answers' pace: the latency a client sees at that load."""
    import httpx

    latencies, failures = [], 0
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(i: int):
            nonlocal failures
            started = time.perf_counter()
            response = await client.post(f"{url}/v1/predict", json={"text": texts[i % len(texts)]})
            latencies.append(time.perf_counter() - started)
            failures += response.status_code != 200

        tasks, begin = [], time.perf_counter()
        for i in range(int(rate * duration)):
            await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return {
        "rate": rate,
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "errors": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument(
        "--backend",
        nargs="+",
        default=["auto"],
        help="one or more backends, each served and measured in turn (auto: what `critic serve` takes by default)",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per load level")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 16, 32, 64])
    parser.add_argument("--reviews", type=int, default=500)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=0.0)
    parser.add_argument("--skip-unbatched", action="store_true")
    parser.add_argument(
        "--cascade",
        nargs="+",
        choices=("on", "off"),
        default=["on"],
        help="serve with the model's cascade (where it has one), without it, or both in turn (default on)",
    )
    parser.add_argument(
        "--cheap-only",
        action="store_true",
        help="only reviews the cascade's cheap stage answers (what its 1-client latency is measured on)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    texts = data.load_dataset("imdb", split="test", size=args.reviews, seed=1)["text"].tolist()
    if args.cheap_only:
        texts = cheap_stage_answers(args.model, texts)
    print(f"{cpu_model()}, {date.today()}", flush=True)
    summary = {}
    for backend in args.backend:
        for cascade in args.cascade:
            name = backend + ("" if args.cascade == ["on"] else f", cascade {cascade}")
            summary[name] = serve_backend(args, backend, texts, cascade)
    if len(summary) > 1:
        print(f"\n{'backend':>24}{'1 client p50 ms':>17}{'p99 ms':>8}{'16 clients req/s':>18}")
        for name, levels in summary.items():
            one, sixteen = levels.get(1), levels.get(16)
            print(
                f"{name:>24}"
                + (f"{one['p50'] * 1e3:17.1f}{one['p99'] * 1e3:8.1f}" if one else f"{'':25}")
                + (f"{sixteen['rps']:18.1f}" if sixteen else "")
            )


def cheap_stage_answers(model: str, texts: list[str]) -> list[str]:
    """The reviews among `texts` that the model's cascade answers with its cheap stage."""
    classifier = Classifier.load(model, device="cpu", backend="torch")
    if classifier.cheap_stage is None:
        raise SystemExit(f"{model} has no cascade (`critic export --cascade-only` fits one)")
    chosen = [text for text, cheap in zip(texts, classifier.cheap_answers(texts)[1]) if cheap]
    print(f"{len(chosen)} of {len(texts)} reviews answered by the cheap stage", flush=True)
    return chosen


def serve_backend(args, backend: str, texts: list[str], cascade: str = "on") -> dict[int, dict]:
    """One backend served: its offline rate, then each load level (micro-batched, and unbatched unless skipped);
    returns the micro-batched levels by number of clients."""
    clf = Classifier.load(args.model, backend=backend, serving=True, cascade=cascade == "on")
    clf.predict_proba(texts[:32])
    started = time.perf_counter()
    clf.predict_proba(texts)
    offline = len(texts) / (time.perf_counter() - started)
    backend = clf.backend
    del clf
    print(
        f"\nbackend {backend}, cascade {cascade}; offline (critic predict, same reviews): {offline:.1f} reviews/s",
        flush=True,
    )

    folder = Path(tempfile.mkdtemp())
    script = lua_script(texts, folder)
    saturation, levels = {}, {}
    configs = [
        (f"micro-batching (up to {args.max_batch}, wait {args.max_wait_ms:g} ms)", args.max_batch, args.max_wait_ms)
    ] + ([("no batching", 1, 0.0)] if not args.skip_unbatched else [])
    for label, max_batch, max_wait_ms in configs:
        with served(
            args.model,
            *("--backend", backend, "--cascade", cascade),
            *("--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)),
        ) as url:
            print(f"\n{label}\n{'clients':>8}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}", flush=True)
            best = 0.0
            for connections in args.concurrency:
                result = wrk(url, script, connections, args.duration)
                best = max(best, result["rps"])
                if max_batch > 1:
                    levels[connections] = result
                print(
                    f"{connections:8d}{result['rps']:10.1f}{result['p50'] * 1e3:10.1f}{result['p99'] * 1e3:10.1f}"
                    f"{result['errors']:8d}",
                    flush=True,
                )
            saturation[label] = best
            if max_batch > 1:
                wait_until_idle(url, texts[0])  # the last wrk level leaves a backlog behind
                half = asyncio.run(open_loop(url, texts, best / 2, args.duration))
                print(
                    f"open loop at {half['rate']:.1f} req/s (half of saturation): p50 {half['p50'] * 1e3:.0f} ms, "
                    f"p99 {half['p99'] * 1e3:.0f} ms, errors {half['errors']}",
                    flush=True,
                )
    for label, best in saturation.items():
        print(f"saturation {label}: {best:.1f} req/s = {best / offline:.0%} of offline {offline:.1f} reviews/s")
    return levels


if __name__ == "__main__":
    main()
