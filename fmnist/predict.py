"""Inference: predictions for test images by index (the notebook's question) with the
predicted and actual label, whether they match, and a real softmax confidence."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .checkpoint import load_model
from .data import CLASS_NAMES, load_split
from .errors import FmnistError


@dataclass
class Prediction:
    index: int | None  # test-set index, or None for a user's image
    predicted: int
    predicted_name: str
    confidence: float  # softmax probability of the predicted class, in [0, 1]
    top: list[dict[str, Any]]  # [{"label", "name", "probability"}], best first
    actual: int | None = None
    actual_name: str | None = None
    match: bool | None = None
    source: str | None = None  # file name for a user's image

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: v for k, v in d.items() if v is not None or k in ("actual", "actual_name", "match")}


def probabilities(model: torch.nn.Module, images: torch.Tensor, tta: bool = False) -> np.ndarray:
    """Softmax probabilities (float64, N×10) for pixel images shaped N×1×28×28 (0–255)."""
    from .train import predict_logits

    logits = predict_logits(model, images, 1000, tta)
    return torch.softmax(logits.double(), 1).cpu().numpy()


def _prediction(p: np.ndarray, k: int, **extra) -> Prediction:
    order = np.argsort(-p, kind="stable")[:k]
    top = [{"label": int(i), "name": CLASS_NAMES[i], "probability": float(p[i])} for i in order]
    best = int(order[0])
    return Prediction(predicted=best, predicted_name=CLASS_NAMES[best], confidence=float(p[best]), top=top, **extra)


def predict(
    run: str | os.PathLike | torch.nn.Module,
    indices: list[int] | None = None,
    data_dir: str | os.PathLike | None = None,
    top_k: int = 3,
    tta: bool | None = None,
    verify: bool = True,
) -> list[Prediction]:
    """Predict test images by index (default: image 0). ``run`` is a run folder, a model
    file or an already loaded model."""
    indices = [0] if indices is None else list(indices)
    if not 1 <= top_k <= len(CLASS_NAMES):
        raise FmnistError(f"--top must be between 1 and {len(CLASS_NAMES)}, got {top_k}")
    if isinstance(run, torch.nn.Module):
        model, info = run, {}
    else:
        model, info = load_model(run)
    test = load_split("test", data_dir, verify=verify)
    bad = [i for i in indices if not -len(test) <= i < len(test)]
    if bad:
        raise FmnistError(
            f"--index {bad[0]} is out of range; the test set has {len(test):,} images (0..{len(test) - 1})"
        )
    idx = np.array([i % len(test) for i in indices], dtype=np.int64)
    images = torch.from_numpy(test.images[idx]).unsqueeze(1)
    use_tta = bool(info.get("tta", False)) if tta is None else tta
    probs = probabilities(model, images, use_tta)
    out = []
    for i, p in zip(idx, probs):
        actual = int(test.labels[i])
        pred = _prediction(p, top_k, index=int(i), actual=actual, actual_name=CLASS_NAMES[actual])
        pred.match = pred.predicted == actual
        out.append(pred)
    return out
