"""A `critic serve` process for the serving benchmarks (serve_load.py, serve_attack.py): on a free loopback port,
its output discarded, returned once it answers /readyz."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, *options: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`critic serve MODEL --port PORT OPTIONS...`, ready, with `env` added to this process's environment."""
    import httpx

    process = subprocess.Popen(
        [sys.executable, "-m", "critic.cli", "serve", model, "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")
