"""Starting a real `critic serve` process, and what the tests against it measure: its metrics, its memory, a raw
socket's answer."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from ports import free_port


def in_flight(url: str, path: str) -> float:
    """Requests to `path` the server is answering now, from its metrics."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f'critic_requests_in_flight{{path="{path}"}}'):
            return float(line.split()[-1])
    return 0.0


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {timeout:g} s")
        time.sleep(0.01)


def start_server(model, *options, env=None) -> tuple[str, subprocess.Popen]:
    """`critic serve MODEL` on a free port, ready; its log (stdout and stderr) in the process's stdout pipe."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "critic.cli",
            "serve",
            str(model),
            "--port",
            str(port),
            "--backend",
            "torch",
            "--precision",
            "fp32",
            *options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("server did not become ready:\n" + process.stdout.read())
    return url, process


def stop_server(process: subprocess.Popen) -> str:
    """SIGTERM, then the server's whole log."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    log, _ = process.communicate(timeout=30)
    return log


def peak_rss_growth(pid: int, action):
    """(how far the process's peak resident memory rose above its size before, `action`'s result): the kernel's
    peak (VmHWM) is reset first, so the figure is the peak during `action` alone."""
    status = Path(f"/proc/{pid}/status")

    def kib(field: str) -> int:
        return int(next(line for line in status.read_text().splitlines() if line.startswith(field)).split()[1])

    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = kib("VmRSS:")
    result = action()
    return (kib("VmHWM:") - before) << 10, result


def chunked_post(url: str, path: str, total: int, piece: int = 1 << 20) -> bytes:
    """POST up to `total` bytes as a chunked body (no Content-Length, no API key), a MiB at a time, until the server
    answers; returns the answer's status line."""
    import select
    import urllib.parse

    address = urllib.parse.urlsplit(url)
    chunk = f"{piece:x}\r\n".encode() + b"x" * piece + b"\r\n"
    with socket.create_connection((address.hostname, address.port), timeout=120) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        try:
            for _ in range(total // piece):
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered
                sock.sendall(chunk)
            else:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # it closed after answering; the answer is waiting to be read
        return sock.recv(65536).split(b"\r\n", 1)[0]
