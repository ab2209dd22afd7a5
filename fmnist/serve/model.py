"""The server's model: loaded once per worker, turning pixel arrays into ranked answers, and
the model card. The one place the server touches inference; it never imports training."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from fmnist.core.spec import CLASS_NAMES
from fmnist.data import Split, load_split
from fmnist.runtime.inference import load_predictor
from fmnist.runtime.modelfile import resolve_model_path
from fmnist.runtime.runs import TEST_METRICS, RunFolder
from fmnist.serve.settings import ServeSettings

BACKEND_NAMES = {"onnx": "ONNX Runtime", "torch": "PyTorch"}


class ServedModel:
    """A run's model, ready to answer: ``answer(pixels)`` for N×28×28 pixel arrays (0–255)."""

    def __init__(self, run: str | os.PathLike, settings: ServeSettings):
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

    def answer(self, pixels: np.ndarray, top_k: int) -> tuple[list[dict[str, Any]], float]:
        """Ranked classes for each image and the model's time in milliseconds. Answers the
        same as ``fmnist predict`` (the same predictor, flip TTA as trained, the probabilities
        calibrated with the model file's temperature)."""
        start = time.perf_counter()
        probs = self.predictor.probabilities(pixels.reshape(-1, 1, 28, 28).astype(np.float32, copy=False))
        ms = (time.perf_counter() - start) * 1000
        return [ranked(p, top_k) for p in probs], ms

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
