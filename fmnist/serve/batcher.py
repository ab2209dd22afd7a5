"""Dynamic micro-batching, in the way of NVIDIA Triton's dynamic batcher and Ray Serve's
``@serve.batch``: requests put their images in one queue per model, and one asyncio consumer
takes them out in batches, up to ``max_batch`` images or ``max_wait`` seconds after the
oldest waiting request arrived, whichever comes first, and runs each batch as one call in
the inference thread pool (never on the event loop). Each caller's future gets its own
answers back, in the order it sent them.

Why: a forward pass has a fixed cost (the thread hop, Python, the framework's dispatch) that a
batch pays once. On 2 cores one inference thread per worker is right (the workers stay off
each other's cores), so the way to more images per second is fewer, larger forward passes.

A request of N images (``/v1/predict/batch``) is one submission: it stays together, in order,
in one forward pass (a submission larger than ``max_batch`` runs alone). A caller that went
away (its future cancelled) is skipped, or its answers dropped; the batch goes on. The queue
holds at most ``max_queue`` images: beyond that a request gets 503 with ``Retry-After``
instead of a wait that only grows.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmnist.serve.inputs import BadRequest

# answers for each submission (a list of answers each) and the forward pass's milliseconds
Run = Callable[[Sequence[np.ndarray], Sequence[int]], tuple[list[list[dict[str, Any]]], float]]


class Unavailable(BadRequest):
    """503: the queue is full (or the model is being replaced). ``headers`` go on the response."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(503, message)
        self.headers = {"Retry-After": str(retry_after)}


class Clock:
    """The batcher's time: ``now()`` in seconds, and ``wait(event, seconds)``, True if the event
    was set before the time ran out. The tests pass a fake one, so the bound on a lone
    request's wait is checked without timing anything."""

    def now(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        try:
            await asyncio.wait_for(event.wait(), seconds)
            return True
        except TimeoutError:
            return False


@dataclass
class _Submission:
    pixels: np.ndarray  # N×28×28
    top_k: int
    queued: float
    future: asyncio.Future = field(repr=False)

    @property
    def images(self) -> int:
        return len(self.pixels)


class Batcher:
    """One model's queue and its consumer. ``run(pixel_arrays, top_ks)`` classifies several
    submissions in one forward pass (in ``executor``); ``metrics`` (optional) is a
    :class:`fmnist.serve.metrics.Metrics`, ``label`` the model's name in it."""

    def __init__(
        self,
        run: Run,
        executor: Executor,
        *,
        max_batch: int,
        max_wait: float,
        max_queue: int,
        metrics: Any = None,
        label: str = "",
        clock: Clock | None = None,
    ):
        self.run, self.executor, self.metrics, self.label = run, executor, metrics, label
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait, max_queue
        self.clock = clock or Clock()
        self._queue: deque[_Submission] = deque()
        self._queued_images = 0
        self._arrived = asyncio.Event()
        self._closing = False
        self._consumer: asyncio.Task | None = None
        self._images_per_second = 0.0  # measured, for Retry-After

    def start(self) -> None:
        """Start the consumer, in the running event loop (the worker's)."""
        if self._consumer is None:
            self._consumer = asyncio.get_running_loop().create_task(self._consume(), name=f"batcher {self.label}")

    async def close(self) -> None:
        """Answer everything queued, then stop; later submissions get 503."""
        self._closing = True
        self._arrived.set()
        if self._consumer is not None:
            await self._consumer

    async def submit(self, pixels: np.ndarray, top_k: int) -> tuple[list[dict[str, Any]], float]:
        """This request's answers (one per image, in order) and its forward pass's ms."""
        if self._closing:
            raise Unavailable("this model is being replaced or the server is stopping; retry")
        if self._queued_images + len(pixels) > self.max_queue and self._queue:
            self._count_rejected()
            raise Unavailable(
                f"the server is busy ({self._queued_images:,} images queued, the limit is {self.max_queue:,}); "
                "retry after the number of seconds in the Retry-After header",
                self._retry_after(),
            )
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Submission(pixels, top_k, self.clock.now(), future))
        self._queued_images += len(pixels)
        self._set_depth()
        self._arrived.set()
        return await future

    async def _consume(self) -> None:
        while (batch := await self._collect()) is not None:
            await self._run(batch)

    async def _collect(self) -> list[_Submission] | None:
        """The next batch, after waiting until it is full or its oldest request has waited
        ``max_wait``; None once closing with nothing left."""
        while not self._queue:
            if self._closing:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self._queue[0].queued + self.max_wait
        while self._queued_images < self.max_batch and not self._closing:
            left = deadline - self.clock.now()
            if left <= 0:
                break
            self._arrived.clear()
            await self.clock.wait(self._arrived, left)
        batch, images = [], 0
        while self._queue and (not batch or images + self._queue[0].images <= self.max_batch):
            s = self._queue.popleft()
            self._queued_images -= s.images
            if not s.future.done():  # a caller that hung up costs nothing more
                batch.append(s)
                images += s.images
        self._set_depth()
        return batch

    async def _run(self, batch: list[_Submission]) -> None:
        if not batch:
            return
        started = self.clock.now()
        if self.metrics is not None:
            self.metrics.observe_batch(self.label, sum(s.images for s in batch), [started - s.queued for s in batch])
        loop = asyncio.get_running_loop()
        try:
            answers, ms = await loop.run_in_executor(
                self.executor, self.run, [s.pixels for s in batch], [s.top_k for s in batch]
            )
        except Exception as e:  # every caller of this batch gets the error; the consumer goes on
            for s in batch:
                if not s.future.done():
                    s.future.set_exception(e)
            return
        images = sum(s.images for s in batch)
        if ms > 0:  # a moving average, for Retry-After
            rate = images / (ms / 1000)
            self._images_per_second = (
                rate if not self._images_per_second else 0.8 * self._images_per_second + 0.2 * rate
            )
        for s, a in zip(batch, answers):
            if not s.future.done():
                s.future.set_result((a, ms))

    def _retry_after(self) -> int:
        """Whole seconds until the queue has drained at the measured rate (at least 1)."""
        if not self._images_per_second:
            return 1
        return max(1, math.ceil(self._queued_images / self._images_per_second))

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.set_queue_depth(self.label, self._queued_images)

    def _count_rejected(self) -> None:
        if self.metrics is not None:
            self.metrics.count_rejected(self.label)
