"""A `critic serve` process for the serving benchmarks (serve_load.py, serve_attack.py), and a `critic label` one
for bench/active_learning.py: on a free loopback port, their output discarded, returned once they answer /readyz."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, *options: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`critic serve MODEL --port PORT OPTIONS...`, ready, with `env` added to this process's environment."""
    return start_critic(["serve", model, "--port", str(port), *options], port, env)


@contextmanager
def served(model: str, *options: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`critic serve MODEL OPTIONS...` on a free port for the length of the block, which gets its URL."""
    port = free_port()
    server = start_server(model, port, *options, env=env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=60)


def start_labelling(store: str, port: int, *options: str) -> subprocess.Popen:
    """`critic label --store STORE --port PORT OPTIONS...`, ready."""
    return start_critic(["label", "--store", store, "--port", str(port), *options], port)


def start_critic(arguments: list[str], port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    import httpx

    process = subprocess.Popen(
        [sys.executable, "-m", "critic.cli", *arguments],
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
