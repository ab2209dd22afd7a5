"""Test-set metrics: accuracy, loss, per-class precision / recall / F1, the confusion
matrix and calibration (expected calibration error)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data import Split, load_split
from .files import atomic_write_bytes, atomic_write_json
from .inference import predict_logits, resolve_device
from .modelfile import ModelInfo, load_model, resolve_model_path
from .plots import confusion_png
from .runs import CONFUSION, TEST_METRICS, RunFolder
from .spec import CLASS_NAMES, NUM_CLASSES


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    per_class: list[dict[str, Any]]  # name, precision, recall, f1, support
    confusion: np.ndarray  # rows: actual, columns: predicted
    ece: float
    probs: np.ndarray  # N×10 softmax probabilities
    labels: np.ndarray
    info: ModelInfo
    tta: bool

    @property
    def predictions(self) -> np.ndarray:
        return self.probs.argmax(1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "test_accuracy": self.accuracy,
            "test_loss": self.loss,
            "test_images": int(len(self.labels)),
            "errors": int((self.predictions != self.labels).sum()),
            "macro_f1": float(np.mean([c["f1"] for c in self.per_class])),
            "ece": self.ece,
            "tta": self.tta,
            "model": self.info.model,
            "val_accuracy": self.info.val_accuracy,
            "per_class": self.per_class,
            "confusion_matrix": self.confusion.tolist(),
            "class_names": list(CLASS_NAMES),
        }


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, k: int = NUM_CLASSES) -> np.ndarray:
    return np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)


def per_class_metrics(cm: np.ndarray) -> list[dict[str, Any]]:
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(0)
    actual = cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return [
        {
            "class": i,
            "name": CLASS_NAMES[i],
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(actual[i]),
        }
        for i in range(len(cm))
    ]


def calibration_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
    """Reliability-diagram data: per confidence bin, the count, mean confidence and accuracy."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    acc_sum = np.bincount(which, weights=correct, minlength=bins)
    safe = np.maximum(count, 1)
    return {"edges": edges, "count": count, "confidence": conf_sum / safe, "accuracy": acc_sum / safe}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over confidence bins, weighted by how many images fall in each."""
    b = calibration_bins(probs, labels, bins)
    n = max(1, b["count"].sum())
    return float(np.sum(b["count"] / n * np.abs(b["accuracy"] - b["confidence"])))


def evaluate(
    run: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    tta: bool | None = None,
    device: str = "auto",
    write: bool = True,
    verify: bool = True,
    test: Split | None = None,
) -> EvalResult:
    """Evaluate a run folder or model file on the 10,000 test images.

    ``tta=None`` uses what the model was trained with. With ``write`` the run folder (or the
    model file's folder) gets ``test_metrics.json`` and ``confusion_matrix.png``. ``test``:
    an already loaded test split, for callers that need its pixels too (the report).
    """
    dev = resolve_device(device)
    path = resolve_model_path(run)
    RunFolder(path.parent).warn_if_unfinished()
    model, info = load_model(path, dev)
    if test is None:
        test = load_split("test", data_dir, verify=verify)
    use_tta = info.tta if tta is None else tta
    images = torch.from_numpy(test.images).unsqueeze(1)
    # fp32 here (not bf16): the reported figures then match `fmnist predict` and the ONNX export exactly.
    logits = predict_logits(model, images, 1000, use_tta, None, channels_last=dev.type != "mps")
    labels_t = torch.from_numpy(test.labels).to(logits.device)
    loss = F.cross_entropy(logits, labels_t).item()
    probs = torch.softmax(logits, 1).cpu().numpy().astype(np.float64)
    preds = probs.argmax(1)
    cm = confusion_matrix(test.labels, preds)
    result = EvalResult(
        accuracy=float((preds == test.labels).mean()),
        loss=loss,
        per_class=per_class_metrics(cm),
        confusion=cm,
        ece=expected_calibration_error(probs, test.labels),
        probs=probs,
        labels=test.labels,
        info=info,
        tta=use_tta,
    )
    if write:
        save_evaluation(path.parent, result)
    return result


def save_evaluation(folder: str | os.PathLike, result: EvalResult) -> list[Path]:
    """Write ``test_metrics.json`` and ``confusion_matrix.png`` into ``folder``; the paths written."""
    folder = Path(folder)
    atomic_write_json(folder / TEST_METRICS, result.to_dict())
    atomic_write_bytes(folder / CONFUSION, confusion_png(result.confusion))
    return [folder / TEST_METRICS, folder / CONFUSION]
