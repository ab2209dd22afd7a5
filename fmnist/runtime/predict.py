"""Predictions for test images by index (the notebook's question) with the predicted and
actual label, whether they match, and a confidence you can trust: the softmax of the logits
divided by the temperature fitted on the validation split (``calibrate=False``: the raw
softmax); and for the user's own image files.

Prediction runs on ONNX Runtime when an up-to-date ``model.onnx`` (from ``fmnist export``)
sits beside the model and onnxruntime is installed, on PyTorch otherwise (see
:func:`fmnist.inference.load_predictor`); both give the same answers."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmnist.core.errors import FmnistError
from fmnist.core.files import atomic_write_bytes
from fmnist.core.schema import accepts_settings, calibrate_param, data_dir_param, param, tta_param, verify_param
from fmnist.core.spec import CLASS_NAMES
from fmnist.data import load_split
from fmnist.data.images import preprocess_file, to_png
from fmnist.runtime.inference import BACKENDS, Predictor, load_predictor
from fmnist.runtime.modelfile import resolve_model_path
from fmnist.runtime.runs import RunFolder


@dataclass(frozen=True)
class PredictSettings:
    """Which test images `fmnist predict` answers for, and how."""

    index: list[int] | None = param(
        None, "Test image index (repeatable). Default 0.", flags=("--index", "-i"), multiple=True
    )
    top: int = param(3, "How many of the most likely classes to show.", min=1, max=len(CLASS_NAMES))
    tta: bool | None = tta_param()
    save_preprocessed: str | None = param(None, "Folder for the 28×28 PNG the model saw of each file.", path=True)
    backend: str = param(
        "auto",
        "auto (ONNX Runtime if an up-to-date model.onnx is beside the model, else PyTorch), torch, onnx.",
        choices=BACKENDS,
    )
    calibrate: bool = calibrate_param()
    data_dir: str | None = data_dir_param()
    verify: bool = verify_param()


@dataclass
class Prediction:
    index: int | None  # test-set index, or None for a user's image
    predicted: int
    predicted_name: str
    confidence: float  # (calibrated) probability of the predicted class, in [0, 1]
    top: list[dict[str, Any]]  # [{"label", "name", "probability"}], best first
    actual: int | None = None
    actual_name: str | None = None
    match: bool | None = None
    source: str | None = None  # file name for a user's image
    preprocessed: str | None = None  # where the 28×28 image the model saw was saved, if asked

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: v for k, v in d.items() if v is not None or k in ("actual", "actual_name", "match")}


def _prediction(p: np.ndarray, k: int, **extra) -> Prediction:
    order = np.argsort(-p, kind="stable")[:k]
    top = [{"label": int(i), "name": CLASS_NAMES[i], "probability": float(p[i])} for i in order]
    best = int(order[0])
    return Prediction(predicted=best, predicted_name=CLASS_NAMES[best], confidence=float(p[best]), top=top, **extra)


@accepts_settings(PredictSettings, index="indices", top="top_k", save_preprocessed=None)
def predict(
    run: str | os.PathLike | torch.nn.Module,
    indices: list[int] | None = None,
    data_dir: str | os.PathLike | None = None,
    top_k: int = 3,
    tta: bool | None = None,
    verify: bool = True,
    backend: str = "auto",
    calibrate: bool = True,
) -> list[Prediction]:
    """Predict test images by index (default: image 0). ``run`` is a run folder, a model
    file or an already loaded model. ``calibrate=False``: the raw softmax."""
    indices = [0] if indices is None else list(indices)
    _check_top_k(top_k)
    predictor = _predictor(run, backend)
    test = load_split("test", data_dir, verify=verify)
    bad = [i for i in indices if not -len(test) <= i < len(test)]
    if bad:
        raise FmnistError(
            f"--index {bad[0]} is out of range; the test set has {len(test):,} images (0..{len(test) - 1})"
        )
    idx = np.array([i % len(test) for i in indices], dtype=np.int64)
    images = torch.from_numpy(test.images[idx]).unsqueeze(1)
    probs = predictor.probabilities(images, tta, calibrate)
    out = []
    for i, p in zip(idx, probs):
        actual = int(test.labels[i])
        pred = _prediction(p, top_k, index=int(i), actual=actual, actual_name=CLASS_NAMES[actual])
        pred.match = pred.predicted == actual
        out.append(pred)
    return out


def _predictor(run: str | os.PathLike | torch.nn.Module, backend: str) -> Predictor:
    if not isinstance(run, torch.nn.Module):
        RunFolder(resolve_model_path(run).parent).warn_if_unfinished()
    return load_predictor(run, backend)


def _check_top_k(top_k: int) -> None:
    if not 1 <= top_k <= len(CLASS_NAMES):
        raise FmnistError(f"--top must be between 1 and {len(CLASS_NAMES)}, got {top_k}")


@accepts_settings(PredictSettings, index=None, top="top_k", data_dir=None, verify=None)
def predict_files(
    run: str | os.PathLike | torch.nn.Module,
    paths: list[str | os.PathLike],
    top_k: int = 3,
    save_preprocessed: str | os.PathLike | None = None,
    tta: bool | None = None,
    backend: str = "auto",
    calibrate: bool = True,
) -> list[tuple[Path, Prediction | FmnistError]]:
    """Predict the user's image files, in order. A file that cannot be read or holds no
    garment gets its :class:`FmnistError` in place of a prediction; the others are still
    predicted. ``save_preprocessed``: a folder for the 28×28 PNG the model saw of each."""
    _check_top_k(top_k)
    predictor = _predictor(run, backend)
    out_dir = Path(save_preprocessed) if save_preprocessed is not None else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise FmnistError(f"--save-preprocessed {out_dir}: exists and is not a folder")
    results: list[tuple[Path, Prediction | FmnistError]] = []
    pixels: dict[int, np.ndarray] = {}
    for i, p in enumerate(map(Path, paths)):
        try:
            pixels[i] = preprocess_file(p)
            results.append((p, None))  # filled in below, in one batch
        except FmnistError as e:
            results.append((p, e))
    if not pixels:
        return results
    order = list(pixels)
    batch = torch.from_numpy(np.stack([pixels[i] for i in order])).unsqueeze(1)
    probs = predictor.probabilities(batch, tta, calibrate)
    used: set[str] = set()
    for i, p in zip(order, probs):
        path = results[i][0]
        pred = _prediction(p, top_k, index=None, source=str(path))
        if out_dir is not None:
            target = out_dir / _unique_name(path.stem, used)
            atomic_write_bytes(target, to_png(pixels[i]))
            pred.preprocessed = str(target)
        results[i] = (path, pred)
    return results


def _unique_name(stem: str, used: set[str]) -> str:
    """``stem.png``, or ``stem-2.png``... when two inputs share a name (a/x.jpg, b/x.png)."""
    name, n = f"{stem}.png", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name)
    return name
