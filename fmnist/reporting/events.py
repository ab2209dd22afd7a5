"""TensorBoard event files without the training engine: tensorboardX's writer (numpy and
protobuf only, no TensorFlow), a run's settings for the HParams view, the test metrics and a
confusion matrix drawn as an image. Here, below :mod:`fmnist.tracking`, so that
``fmnist evaluate`` (which must not load training) adds the test set's results to a run's
event files; the per-epoch logger that training calls is :mod:`fmnist.tracking.tensorboard`.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fmnist.core.errors import FmnistError
from fmnist.reporting.plots import confusion_png
from fmnist.reporting.runs_table import flat_settings
from fmnist.runtime.runs import TENSORBOARD, TEST_METRICS, RunFolder

# Settings that say where things go, not how the model was trained: left out of the HParams view.
NOT_HPARAMS = ("data_dir", "verify", "tensorboard", "mlflow", "preset")
EVENT_FILES = "events.out.tfevents.*"
# The HParams view's metrics; the test ones get their values once `fmnist evaluate` ran.
HPARAM_METRICS = (
    "hparams/best_val_accuracy",
    "hparams/best_val_loss",
    "hparams/best_epoch",
    "hparams/train_seconds",
    "hparams/test_accuracy",
    "hparams/test_ece",
)


def missing_extra(option: str, e: ModuleNotFoundError) -> FmnistError:
    """The one line for a tracking option whose optional package is not installed."""
    package = (e.name or "a package").split(".")[0]
    return FmnistError(f"{option} needs {package}: pip install 'fmnist[track]'")


def summary_writer_class():
    """tensorboardX's SummaryWriter; without the extra, one line that says how to install it."""
    try:
        from tensorboardX import SummaryWriter
    except ModuleNotFoundError as e:
        raise missing_extra("--tensorboard", e) from None
    return SummaryWriter


def hparams_of(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """A run's settings as the HParams plugin takes them: numbers, booleans and text only."""
    values: dict[str, bool | int | float | str] = {}
    for key, value in flat_settings(config).items():
        if key in NOT_HPARAMS:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        values[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return values


def write_hparams(writer, hparams: dict[str, Any], metrics: dict[str, Any], step: int) -> None:
    """The HParams view's record of this run, in the run's own event file: tensorboardX's
    ``add_hparams`` would open a second run (a subfolder) for it. Every name of
    :data:`HPARAM_METRICS` is declared, so test metrics logged later show beside the rest."""
    from tensorboardX.summary import hparams as hparams_summary

    finite = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    for summary in hparams_summary(hparams, dict.fromkeys(HPARAM_METRICS, 0.0) | finite):
        writer.file_writer.add_summary(summary)
    for tag, value in finite.items():
        writer.add_scalar(tag, value, step)


def write_test_metrics(writer, test: dict[str, Any], step: int) -> None:
    """Test accuracy, loss and ECE (also as the HParams view's metrics), and the test set's
    confusion matrix drawn as `fmnist evaluate` draws it."""
    for tag, key in (
        ("test/accuracy", "test_accuracy"),
        ("test/ece", "ece"),
        ("test/loss", "test_loss"),
        ("hparams/test_accuracy", "test_accuracy"),
        ("hparams/test_ece", "ece"),
    ):
        if isinstance(test.get(key), (int, float)):
            writer.add_scalar(tag, test[key], step)
    if test.get("confusion_matrix"):
        write_confusion(writer, "confusion_matrix/test", test["confusion_matrix"], step)


def write_confusion(writer, tag: str, counts: Any, step: int) -> None:
    """A confusion matrix (rows: actual, columns: predicted) as an image in TensorBoard's Images tab."""
    png = confusion_png(np.asarray(counts, dtype=np.int64))
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    writer.add_image(tag, image, step, dataformats="HWC")


def log_evaluation(run_dir: str | Path) -> Path | None:
    """After ``fmnist evaluate``: add the test metrics and the confusion matrix to the run's
    event files, if it has any. Returns the event folder written, else None."""
    folder = RunFolder(run_dir)
    logdir = folder / TENSORBOARD
    test = test_metrics_of(folder.path)
    if not logdir.is_dir() or not test:
        return None
    summary = folder.read_summary().to_dict() if folder.status == "finished" else {}
    step = int(summary.get("epochs_run") or 0)
    writer = summary_writer_class()(logdir=str(logdir), filename_suffix=".evaluation")
    try:
        write_test_metrics(writer, test, step)
    finally:
        writer.close()
    return logdir


def log_evaluation_or_warn(run_dir: str | Path) -> Path | None:
    """:func:`log_evaluation` for ``fmnist evaluate``, whose own files are written already: a
    missing extra or a failing writer is a warning that says what was not logged."""
    try:
        return log_evaluation(run_dir)
    except Exception as e:  # a missing extra (FmnistError) or any writer failure: the evaluation itself is done
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        warnings.warn(f"TensorBoard: the test metrics not logged ({text}); {TEST_METRICS} is written", stacklevel=2)
        return None


def test_metrics_of(run_dir: Path) -> dict[str, Any]:
    folder = RunFolder(run_dir)
    return folder.read_json(TEST_METRICS) if (folder / TEST_METRICS).is_file() else {}
