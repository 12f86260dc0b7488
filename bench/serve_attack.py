"""Hostile traffic against `critic serve` on loopback, bounded in time, with the security review's four targets:

- a keyed /v1/predict answers within 1 s while 256 keyless connections stall (each sends its headers and one byte
  of a declared body, and is opened again as soon as the server closes it);
- the server's memory grows by at most 100 MB under 300 stalled 1 MB bodies without a key (half to a probe);
- a predict answers within 6 s of a wave of 40 explanations at --timeout 2;
- /healthz answers within 0.5 s, at worst, while a 20 MB CSV is uploaded.

    python bench/serve_attack.py runs/minilm-imdb [--backend auto] [--stall-seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchlib.serving import free_port, start_server  # noqa: E402

from critic.inference.backends import cpu_name  # noqa: E402

KEY = "bench-attack-key"
KEYED = {"X-API-Key": KEY}
REVIEW = (
    "I went in expecting little and came out moved: the acting is restrained, the story never hurries, and the "
    "last scene earns every tear it asks for. A few scenes drag, but this is a film I will watch again. "
) * 8


def stall(port: int, path: str, declared: int, sent: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {declared}\r\n\r\n".encode()
    try:
        sock.send(head + sent)
    except OSError:
        pass  # answered and closed already
    return sock


class Stallers:
    """`count` keyless connections that stall on /v1/predict; with `reconnect`, each is opened again as soon as the
    server closes it (a flood of connections as well as a stall)."""

    def __init__(self, port: int, count: int, reconnect: bool):
        self.port, self.count, self.reconnect = port, count, reconnect
        self.stop = threading.Event()
        self.opened = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, selector) -> None:
        selector.register(stall(self.port, "/v1/predict", 1000, b"{"), selectors.EVENT_READ)
        self.opened += 1

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            for _ in range(self.count):
                self._open(selector)
            while not self.stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    try:
                        data = key.fileobj.recv(65536)
                    except OSError:
                        data = b""
                    if not data:  # closed: open another
                        selector.unregister(key.fileobj)
                        key.fileobj.close()
                        if self.reconnect:
                            self._open(selector)
            for key in list(selector.get_map().values()):
                key.fileobj.close()


def answered_seconds(url: str, limit_s: float = 40.0) -> float:
    """Seconds until a keyed predict is answered 200, asking again at once after a refusal (503)."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        response = httpx.post(f"{url}/v1/predict", json={"text": REVIEW}, headers=KEYED, timeout=limit_s)
        if response.status_code == 200:
            return time.perf_counter() - started
    return float("inf")


def lockout(url: str, port: int, seconds: float, count: int, reconnect: bool) -> dict:
    """Keyed predicts while `count` keyless connections stall (`reconnect`: opened again when closed)."""
    stallers = Stallers(port, count, reconnect)
    stallers.thread.start()
    time.sleep(1)  # let the stalled connections reach the server
    answers = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answers.append(answered_seconds(url))
    stallers.stop.set()
    stallers.thread.join()
    return {
        "keyed_predicts": len(answers),
        "median_seconds": float(np.median(answers)),
        "worst_seconds": max(answers),
        "keyless_connections_opened": stallers.opened,
        "alone_seconds": float(np.median([answered_seconds(url) for _ in range(5)])),
    }


def peak_rss_growth(pid: int, action) -> float:
    status = Path(f"/proc/{pid}/status")

    def kib(field: str) -> int:
        return int(next(line for line in status.read_text().splitlines() if line.startswith(field)).split()[1])

    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = kib("VmRSS:")
    action()
    return (kib("VmHWM:") - before) * 1024 / 1e6


def stalled_bodies(port: int, count: int = 300, size: int = 1_000_000) -> None:
    """`count` keyless connections, half to /healthz and half to /v1/predict, each sending all but the last byte of
    a 1 MB body; held 3 s, then closed."""
    body = b"x" * (size - 1)
    socks = [stall(port, "/healthz" if i % 2 else "/v1/predict", size, b"") for i in range(count)]
    for sock in socks:
        sent = 0
        try:
            while sent < len(body):
                sent += sock.send(body[sent : sent + (1 << 20)])
        except (BlockingIOError, OSError):
            pass  # the server stopped reading (or answered and closed): that is the point
    time.sleep(3)
    for sock in socks:
        sock.close()


def after_explains(url: str, wave: int = 40) -> dict:
    """The seconds from a wave of explanations' last answer until a predict is answered 200."""
    with ThreadPoolExecutor(wave) as pool:
        statuses = list(
            pool.map(
                lambda _: httpx.post(f"{url}/v1/explain", json={"text": REVIEW}, headers=KEYED, timeout=60).status_code,
                range(wave),
            )
        )
    answered = time.perf_counter()
    while True:
        response = httpx.post(f"{url}/v1/predict", json={"text": REVIEW}, headers=KEYED, timeout=60)
        if response.status_code == 200:
            break
    return {"seconds": time.perf_counter() - answered, "explain_statuses": {s: statuses.count(s) for s in statuses}}


def healthz_during_upload(url: str, megabytes: float = 19.9, rows: int = 9_900, watch_s: float = 30.0) -> dict:
    """The worst /healthz latency while a CSV of `rows` long reviews (under the row limit) is uploaded, read and
    scored, watched for at most `watch_s` seconds (then the upload's client gives up)."""
    length = int(megabytes * 1e6 / rows) - 3
    text = (REVIEW * (length // len(REVIEW) + 1))[:length]
    body = ("review\n" + f'"{text}"\n' * rows).encode()
    outcome = {}

    def upload():
        try:
            response = httpx.post(
                f"{url}/v1/score-csv", content=body, headers={"content-type": "text/csv", **KEYED}, timeout=watch_s
            )
            outcome["status"] = response.status_code
        except httpx.TimeoutException:
            outcome["status"] = f"no answer in {watch_s:g} s"

    uploader = threading.Thread(target=upload)
    uploader.start()
    latencies = []
    with httpx.Client(timeout=60) as client:
        while uploader.is_alive():
            started = time.perf_counter()
            client.get(f"{url}/healthz")
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)
    uploader.join()
    return {
        "upload_bytes": len(body),
        "upload_status": outcome.get("status"),
        "healthz_answers": len(latencies),
        "worst_seconds": max(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--stall-seconds", type=float, default=5.0, help="how long the keyless connections stall")
    parser.add_argument("--stallers", type=int, default=256, help="keyless connections stalling at once")
    parser.add_argument("--bodies", type=int, default=300, help="stalled 1 MB bodies")
    parser.add_argument("--wave", type=int, default=40, help="explanations in the wave")
    parser.add_argument("--upload-mb", type=float, default=19.9, help="the upload's size")
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(
        args.model,
        port,
        *("--backend", args.backend, "--api-key-env", "CRITIC_BENCH_KEY", "--timeout", "2"),
        env={"CRITIC_BENCH_KEY": KEY},
    )
    try:
        results = {
            "lockout": lockout(url, port, args.stall_seconds, args.stallers, reconnect=False),
            "lockout_reconnecting": lockout(url, port, args.stall_seconds, args.stallers, reconnect=True),
            "memory_mb": peak_rss_growth(process.pid, lambda: stalled_bodies(port, args.bodies)),
            "after_explains": after_explains(url, args.wave),
            "healthz_during_upload": healthz_during_upload(url, args.upload_mb),
        }
    finally:
        process.terminate()
        process.wait(timeout=60)
    targets = {
        f"keyed predict during {args.stallers} keyless stalls (s)": (results["lockout"]["worst_seconds"], 1.0),
        "the same, the stallers reconnecting at once (s)": (results["lockout_reconnecting"]["worst_seconds"], 1.0),
        f"memory growth under {args.bodies} stalled 1 MB bodies (MB)": (results["memory_mb"], 100.0),
        f"predict after {args.wave} explains at --timeout 2 (s)": (results["after_explains"]["seconds"], 6.0),
        f"worst /healthz during a {args.upload_mb:g} MB upload (s)": (
            results["healthz_during_upload"]["worst_seconds"],
            0.5,
        ),
    }
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "date": datetime.now(timezone.utc).isoformat(" ", "minutes")}
    print(
        f"critic serve under attack: {args.model} ({args.backend}); {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['date']}"
    )
    for name, (value, target) in targets.items():
        print(f"  {name}: {value:.3f} (target <= {target:g}: {'met' if value <= target else 'NOT met'})")
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
