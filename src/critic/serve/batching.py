"""Micro-batching: requests that arrive together are scored together, in one thread that owns the model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

STOP = object()  # queued by stop(): score what came before, then end


def max_batch_for(backend: str, device_type: str) -> int:
    """Micro-batching where it pays. On a GPU a batch of 32 costs about what one review does; on a CPU, at 16
    clients, it paid with OpenVINO int8 (65.4 against 55.0 requests/s, with the cascade 94.7 against 68.8; 2 AMD
    EPYC Zen 4 cores, 2026-12-07) and with PyTorch (63.8 against 50.0; 2026-11-26), and not with ONNX Runtime
    (61-64 against 75-80 on an Intel Xeon, 2026-11-26; level on the Zen 4): docs/benchmarks.md, "Serving"."""
    return 1 if device_type == "cpu" and backend.startswith("onnx") else 32


class Busy(Exception):
    """The queue holds as many texts as it may: the request is refused at once rather than left to wait."""


class MicroBatcher:
    """Collects texts from concurrent requests into batches of up to `max_batch` texts. While a batch is being
    scored, new requests queue up and form the next one, so under load batches fill without waiting; the first
    request of a batch may also wait up to `max_wait_s` for company (0 by default: on a CPU that only adds
    latency). `max_batch=1` scores each request alone. At most `max_queued` texts wait at once (more: Busy)."""

    def __init__(
        self,
        score: Callable[[list[str]], np.ndarray],
        max_batch: int = 32,
        max_wait_s: float = 0.0,
        on_batch: Callable[[int], object] | None = None,
        max_queued: int | None = None,
        max_exclusive: int | None = None,
    ):
        self.score = score
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self.max_queued = max_queued
        self.queued = 0  # texts submitted and not yet taken for scoring
        self.max_exclusive = max_exclusive
        self.exclusive = 0  # run_exclusive jobs waiting or running
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="critic-model")

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Score everything already queued, then stop."""
        if self.task is not None:
            await self.queue.put(STOP)
            await self.task
            self.task = None
        self.executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> np.ndarray:
        if self.max_queued is not None and self.queued + len(texts) > self.max_queued:
            raise Busy(f"{self.queued:,} texts are waiting to be scored (at most {self.max_queued:,})")
        future = asyncio.get_running_loop().create_future()
        self.queued += len(texts)
        await self.queue.put((texts, future))
        return await future

    async def run_exclusive(self, function, *args, timeout: float | None = None):
        """Run `function(*args)` in the model's thread, between batches. At most `max_exclusive` such jobs wait or
        run at once (one more: Busy, at once). A caller that gives up (`timeout`, or cancelled) before its job starts
        takes the job out of the queue, so the model never runs it. (Unbounded and never withdrawn, 100 explanations
        at a 2 s timeout kept the model thread from every prediction for 34 s after the last one was answered.)"""
        if self.max_exclusive is not None and self.exclusive >= self.max_exclusive:
            raise Busy(f"{self.exclusive} jobs are waiting for the model (at most {self.max_exclusive})")
        loop = asyncio.get_running_loop()
        job = self.executor.submit(function, *args)
        self.exclusive += 1
        job.add_done_callback(lambda _: _in_loop(loop, self._exclusive_done))
        # wrap_future: when the wait is cancelled, so is the job, which a thread pool then never starts
        return await asyncio.wait_for(asyncio.wrap_future(job), timeout)

    def _exclusive_done(self) -> None:
        self.exclusive -= 1

    async def _run(self) -> None:
        held = None  # what ended the last batch without fitting in it: it starts the next one
        while True:
            first = held if held is not None else await self.queue.get()
            if first is STOP:
                return
            batch, held = await self._collect(first)
            await self._score(batch)

    async def _collect(self, first) -> tuple[list, object]:
        """A batch starting with `first`: whatever is queued, up to `max_batch` texts (a request never split, never
        overfilling a batch), waiting up to `max_wait_s` for more. Returns it and the item that did not fit, if any."""
        loop = asyncio.get_running_loop()
        batch, size = [first], len(first[0])
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return batch, None
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    return batch, None
            if item is STOP or size + len(item[0]) > self.max_batch:
                return batch, item
            batch.append(item)
            size += len(item[0])
        return batch, None

    async def _score(self, batch: list) -> None:
        self.queued -= sum(len(texts) for texts, _ in batch)
        batch = [(texts, future) for texts, future in batch if not future.done()]  # the requester gave up
        if not batch:
            return
        size = sum(len(texts) for texts, _ in batch)
        texts = [text for texts, _ in batch for text in texts]
        try:
            probs = await asyncio.get_running_loop().run_in_executor(self.executor, self.score, texts)
        except Exception as error:  # every waiting request learns what went wrong
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        if self.on_batch:
            self.on_batch(size)
        start = 0
        for texts, future in batch:
            if not future.done():  # a request that timed out no longer waits
                future.set_result(_rows(probs, start, start + len(texts)))
            start += len(texts)


def _rows(scored, start: int, end: int):
    """Rows start:end of what `score` returned: an array, or a tuple of arrays with a row per text each."""
    if isinstance(scored, tuple):
        return tuple(part[start:end] for part in scored)
    return scored[start:end]


def _in_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    """`callback` run in `loop`'s thread, from any thread; nothing once the loop has closed."""
    if not loop.is_closed():
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:  # closed in between
            pass
