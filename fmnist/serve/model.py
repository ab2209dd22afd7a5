"""The server's model: loaded once per worker, turning pixel arrays into ranked answers, and
the model card. The one place the server touches inference; it never imports training.

Requests reach it through ``await predict(pixels, top_k)``: with batching on, through the
model's queue (:mod:`fmnist.serve.batcher`), so that concurrent requests share forward
passes. Batched answers must be exactly the answers each request would get alone, yet a
framework's kernels may round differently for different batch sizes (measured: PyTorch's
oneDNN gives a lone image of the quick ResNet other float noise than a batch of 2 or more,
the seed CNN batches of 1-3 other than 4 or more; ONNX Runtime's are the same for every size).
So ``start()`` measures it on this machine, for this model: the smallest batch size from which
every size up to ``--batch-size`` gives each image bit for bit the probabilities it gets in a
full batch, at any position. Every forward pass, batched or not, is padded to at least that
size, and a model for which no size works is served unbatched, with a warning.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np

from fmnist.core.spec import CLASS_NAMES, IMAGE_SIZE
from fmnist.data import Split, load_split
from fmnist.runtime.inference import load_predictor
from fmnist.runtime.modelfile import resolve_model_path
from fmnist.runtime.runs import TEST_METRICS, RunFolder
from fmnist.serve.batcher import Batcher
from fmnist.serve.settings import ServeSettings

BACKEND_NAMES = {"onnx": "ONNX Runtime", "torch": "PyTorch"}


class ServedModel:
    """A run's model, ready to answer: ``await predict(pixels, top_k)`` for N×28×28 pixel
    arrays (0–255), between ``await start()`` and ``await close()``. ``executor``: the
    inference thread pool (default: one of its own, ``--threads`` wide); ``metrics``: the
    app's :class:`fmnist.serve.metrics.Metrics`, for the batcher's."""

    def __init__(
        self,
        run: str | os.PathLike,
        settings: ServeSettings,
        *,
        executor: Executor | None = None,
        metrics: Any = None,
    ):
        self.path = resolve_model_path(run)
        self.folder = RunFolder(self.path.parent)
        self.folder.warn_if_unfinished()
        self.settings = settings
        self.predictor = load_predictor(self.path, settings.backend, threads=settings.threads)
        self.info = self.predictor.info
        self.name = self.info.model
        self.backend = self.predictor.backend
        self.card = self._card()
        self._test: Split | None = None
        self._test_lock = threading.Lock()
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(settings.threads, thread_name_prefix="fmnist-inference")
        self.metrics = metrics
        self.padding = 1  # every forward pass has at least this many images (see the module's docstring)
        self.batcher: Batcher | None = None
        self.ready = False  # loaded, started and has answered its warm-up batch
        self.not_ready = "warming up"

    async def start(self) -> None:
        """Check batch invariance and start the queue's consumer, in the worker's event loop."""
        if not self.settings.batching or self.batcher is not None:
            return
        loop = asyncio.get_running_loop()
        floor = await loop.run_in_executor(self.executor, self.batch_floor, self.settings.batch_size)
        if floor is None:
            warnings.warn(
                f"{self.path}: this model's answers change with the batch size at every size on this machine; "
                "serving it without batching, so that every answer is the one it gets alone",
                stacklevel=1,
            )
            return
        self.padding = floor
        self.batcher = Batcher(
            self.answer_many,
            self.executor,
            max_batch=self.settings.batch_size,
            max_wait=self.settings.batch_wait / 1000,
            max_queue=self.settings.batch_queue,
            metrics=self.metrics,
            label=self.name,
        )
        self.batcher.start()

    async def warm(self) -> None:
        """Start (:meth:`start`), then answer one warm-up batch through the path requests take;
        :attr:`ready` (``/readyz``) only then. A failure leaves it unready, and says why."""
        try:
            await self.start()
            # a full batch: the queue runs it at once rather than waiting --batch-wait for more
            n = min(self.settings.batch_size, self.settings.batch_queue) if self.batcher else 1
            await self.predict(np.zeros((max(1, n, self.padding), IMAGE_SIZE, IMAGE_SIZE), np.float32), 1)
        except Exception as e:  # the server stays up and says so on /readyz, rather than dying
            self.not_ready = f"the warm-up failed: {type(e).__name__}: {e}"
            warnings.warn(f"{self.path}: {self.not_ready}", stacklevel=1)
            return
        self.ready = True

    async def close(self) -> None:
        """Answer what is queued, then stop taking requests (server stop, or a reload)."""
        if self.batcher is not None:
            await self.batcher.close()
        if self._own_executor:
            self.executor.shutdown(wait=False)

    async def predict(self, pixels: np.ndarray, top_k: int) -> tuple[list[dict[str, Any]], float]:
        """Ranked classes for each image and the forward pass's milliseconds: through the
        queue with batching on (503 :class:`~fmnist.serve.batcher.Unavailable` when it is
        full), else one forward pass of its own in the inference thread pool."""
        if self.batcher is not None:
            return await self.batcher.submit(pixels, top_k)
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.answer, pixels, top_k)

    def answer(self, pixels: np.ndarray, top_k: int) -> tuple[list[dict[str, Any]], float]:
        """Ranked classes for each image and the model's time in milliseconds. Answers the
        same as ``fmnist predict`` (the same predictor, flip TTA as trained, the probabilities
        calibrated with the model file's temperature)."""
        [answers], ms = self.answer_many([pixels], [top_k])
        return answers, ms

    def answer_many(
        self, pixels: Sequence[np.ndarray], top_ks: Sequence[int]
    ) -> tuple[list[list[dict[str, Any]]], float]:
        """:meth:`answer` for several requests in one forward pass (the batcher's call)."""
        start = time.perf_counter()
        x = np.concatenate([p.reshape(-1, 1, 28, 28) for p in pixels]).astype(np.float32, copy=False)
        probs = self.probabilities(x)
        ms = (time.perf_counter() - start) * 1000
        out, at = [], 0
        for p, k in zip(pixels, top_ks):
            n = len(p)
            out.append([ranked(row, k) for row in probs[at : at + n]])
            at += n
        return out, ms

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """The predictor's probabilities, in passes of ``padding`` to ``--batch-size`` images
        (zero images fill a short one), so that no image's answer depends on its company."""
        if self.batcher is None:  # unbatched: one pass, as before batching existed
            return self.predictor.probabilities(x)
        size = max(self.settings.batch_size, self.padding)
        out = []
        for i in range(0, len(x), size):
            part = x[i : i + size]
            n = len(part)
            if n < self.padding:
                part = np.concatenate([part, np.zeros((self.padding - n, *part.shape[1:]), part.dtype)])
            out.append(self.predictor.probabilities(part)[:n])
        return np.concatenate(out)

    def batch_floor(self, largest: int) -> int | None:
        """The smallest n for which passes of n to ``largest`` images give each image, bit for
        bit, the probabilities it gets in a pass of ``largest``, at any position (checked on
        seeded random images); None if even ``largest`` depends on the position."""
        probe = np.random.default_rng(0).integers(0, 256, (largest, 1, 28, 28)).astype(np.float32)
        full = self.predictor.probabilities(probe)
        for shift in {1, largest // 2} - {0, largest}:
            if not np.array_equal(self.predictor.probabilities(np.roll(probe, shift, 0)), np.roll(full, shift, 0)):
                return None
        floor = largest
        while floor > 1 and np.array_equal(self.predictor.probabilities(probe[: floor - 1]), full[: floor - 1]):
            floor -= 1
        return floor

    def _card(self) -> dict[str, Any]:
        info = self.info
        test = self._test_metrics()
        return {
            "name": info.model,
            "run": self.folder.path.name,
            "backend": self.backend,
            "backend_name": BACKEND_NAMES.get(self.backend, self.backend),
            "parameters": info.params,
            "flops_per_image": info.flops_per_image,
            "validation_accuracy": info.val_accuracy,
            "test_accuracy": test.get("test_accuracy"),
            "test_images": test.get("test_images"),
            "epoch": info.epoch,
            "preset": info.preset,
            "model_args": info.model_args,
            "tta": info.tta,
            "temperature": info.softmax_temperature,
            "calibrated": info.temperature is not None,
            "classes": list(info.class_names),
            "normalization": info.normalization,
            "input": info.input,
            "train_images": info.train_images,
            "trained_on": " ".join(x for x in (info.device, info.precision) if x) or None,
            "versions": info.versions,
            "limits": self.settings.limits,
        }

    def _test_metrics(self) -> dict[str, Any]:
        """``fmnist evaluate``'s figures, if it was run on these weights (it writes after them)."""
        path = self.folder / TEST_METRICS
        try:
            if path.stat().st_mtime < self.path.stat().st_mtime:
                return {}
            return self.folder.read_json(TEST_METRICS)
        except OSError:  # none (a damaged one is an FmnistError: the server does not start)
            return {}

    def test_images(self) -> Split:
        """The test split, read (and verified) on first use; :class:`FmnistError` if it is not
        on this machine. Never downloads: a server must not fetch data behind a request."""
        with self._test_lock:
            if self._test is None:
                self._test = load_split("test", self.settings.data_dir, verify=self.settings.verify, download=False)
            return self._test


def ranked(p: np.ndarray, k: int) -> dict[str, Any]:
    """The ``k`` most likely classes, best first (ties in class order, as ``fmnist predict``)."""
    order = np.argsort(-p, kind="stable")[:k]
    best = int(order[0])
    return {
        "predicted": best,
        "predicted_name": CLASS_NAMES[best],
        "confidence": float(p[best]),
        "top": [{"label": int(i), "name": CLASS_NAMES[i], "probability": float(p[i])} for i in order],
    }
