"""Test-set metrics: accuracy, loss, per-class precision / recall / F1, the confusion
matrix and calibration (expected calibration error before and after the model's fitted
temperature), and :func:`calibrate`, which fits or refits a run's temperature on its
validation split (for model files written before temperature scaling)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fmnist.core.errors import FmnistError
from fmnist.core.files import check_writable
from fmnist.core.schema import accepts_settings, calibrate_param, data_dir_param, device_param, tta_param, verify_param
from fmnist.core.spec import CLASS_NAMES, NUM_CLASSES
from fmnist.data import Split, load_split, validation_split
from fmnist.reporting.events import log_evaluation_or_warn
from fmnist.reporting.plots import confusion_png
from fmnist.runtime.calibration import calibration_summary, expected_calibration_error, fit_temperature
from fmnist.runtime.inference import predict_logits, resolve_device, softmax, temperature_of
from fmnist.runtime.modelfile import ModelInfo, load_model, resolve_model_path, save_model
from fmnist.runtime.runs import CONFIG, CONFUSION, TENSORBOARD, TEST_METRICS, RunFolder
from fmnist.training.config import read_run_config


@dataclass(frozen=True)
class EvaluateSettings:
    """How `fmnist evaluate` measures a run on the test set."""

    tta: bool | None = tta_param()
    device: str = device_param()
    calibrate: bool = calibrate_param()
    data_dir: str | None = data_dir_param()
    verify: bool = verify_param()


@dataclass(frozen=True)
class CalibrateSettings:
    """Where `fmnist calibrate` fits a run's temperature."""

    device: str = device_param()
    data_dir: str | None = data_dir_param()
    verify: bool = verify_param()


@dataclass(frozen=True)
class ReportSettings:
    """What the figures of `fmnist report` are computed from (reporting/report.py)."""

    calibrate: bool = calibrate_param()
    data_dir: str | None = data_dir_param()
    verify: bool = verify_param()


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    per_class: list[dict[str, Any]]  # name, precision, recall, f1, support
    confusion: np.ndarray  # rows: actual, columns: predicted
    ece: float  # of ``probs``, the probabilities reported
    probs: np.ndarray  # N×10 probabilities as reported: calibrated unless asked not to be
    labels: np.ndarray
    info: ModelInfo
    tta: bool
    temperature: float = 1.0  # what ``probs`` used (1: the raw softmax)
    raw_probs: np.ndarray | None = None  # the raw softmax, for the before/after comparison
    ece_raw: float | None = None  # ECE of the raw softmax
    logits: np.ndarray | None = None  # float32 N×10, what both come from

    @property
    def calibrated(self) -> bool:
        return self.temperature != 1.0

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
            "ece_uncalibrated": self.ece_raw,
            "temperature": self.temperature,
            "calibrated": self.calibrated,
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


@accepts_settings(EvaluateSettings)
def evaluate(
    run: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    tta: bool | None = None,
    device: str = "auto",
    write: bool = True,
    verify: bool = True,
    test: Split | None = None,
    calibrate: bool = True,
) -> EvalResult:
    """Evaluate a run folder or model file on the 10,000 test images.

    ``tta=None`` uses what the model was trained with. ``calibrate=False`` reports the raw
    softmax instead of the temperature-scaled probabilities (the argmax, so the accuracy, is
    the same either way). With ``write`` the run folder (or the
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
    logits = predict_logits(model, images, tta=use_tta)
    temperature = temperature_of(info, calibrate)
    labels_t = torch.from_numpy(test.labels).to(logits.device)
    loss = F.cross_entropy(logits.double() / temperature, labels_t).item()
    raw = softmax(logits)
    probs = softmax(logits, temperature) if temperature != 1.0 else raw
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
        temperature=temperature,
        raw_probs=raw,
        ece_raw=expected_calibration_error(raw, test.labels),
        logits=logits.cpu().numpy(),
    )
    if write:
        save_evaluation(path.parent, result)
    return result


def save_evaluation(folder: str | os.PathLike, result: EvalResult) -> list[Path]:
    """Write ``test_metrics.json`` and ``confusion_matrix.png`` into ``folder`` (and, into a run
    trained with ``--tensorboard``, the test metrics and confusion matrix into its event files);
    the paths written."""
    run = RunFolder(folder)
    written = [
        run.write_derived(TEST_METRICS, result.to_dict()),
        run.write_derived(CONFUSION, confusion_png(result.confusion)),
    ]
    if (run / TENSORBOARD).is_dir():  # trained with --tensorboard: the test set's results beside its curves
        log_evaluation_or_warn(run.path)
    return written


@dataclass
class Calibration:
    """What :func:`calibrate` fitted: the temperature and the validation figures."""

    path: Path
    temperature: float
    previous: float | None  # the model file's temperature before (None: it had none)
    summary: dict[str, Any]


@accepts_settings(CalibrateSettings)
def calibrate(
    run: str | os.PathLike, data_dir: str | os.PathLike | None = None, verify: bool = True, device: str = "auto"
) -> Calibration:
    """Fit (or refit) a run's temperature on its validation split and write it into its
    model file: for model files from before temperature scaling, or after a change of mind.

    The validation split is the one training held out, rebuilt from the run's config.json
    (``val_size``, ``split_seed``): never the test set, never images the model trained on.
    The weights do not change; derived files (an ONNX export) must be redone afterwards."""
    path = resolve_model_path(run)
    folder = RunFolder(path.parent)
    if folder.running:
        raise FmnistError(f"{folder.path} is being trained right now; calibrate it when training has finished")
    config = read_run_config(folder)
    val_size, split_seed = config.get("val_size"), config.get("split_seed", 0)
    if not isinstance(val_size, int) or isinstance(val_size, bool) or not isinstance(split_seed, int):
        raise FmnistError(f"{folder / CONFIG}: lacks val_size or split_seed; retrain or restore it")
    if val_size == 0:
        raise FmnistError(f"{folder.path} was trained without a validation split (--val-size 0); nothing to fit on")
    dev = resolve_device(device)
    model, info = load_model(path, dev)
    check_writable(folder.path)  # a read-only folder fails now, not after the work
    train = load_split("train", data_dir, verify=verify)
    _, val_idx = validation_split(train.labels, val_size, split_seed)
    images = torch.from_numpy(train.images[val_idx]).unsqueeze(1)
    logits = predict_logits(model, images, tta=info.tta).cpu().numpy()
    labels = train.labels[val_idx].astype(np.int64)
    temperature = fit_temperature(logits, labels)
    summary = calibration_summary(logits, labels, temperature, "validation")
    with folder.lock("calibrated"):
        save_model(path, model, dataclasses.replace(info, temperature=temperature, calibration=summary))
    return Calibration(path, temperature, info.temperature, summary)
