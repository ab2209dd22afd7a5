"""TensorBoard event files for a run, written with tensorboardX (numpy and protobuf only, no
TensorFlow): per-epoch loss, accuracy, learning rate and images/s; at the end the settings
with the final metrics (TensorBoard's HParams view), and the test set's confusion matrix as
an image once ``fmnist evaluate`` has measured one.

``tensorboard --logdir runs/`` then shows every run that was trained with ``--tensorboard``.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fmnist.reporting.plots import confusion_png
from fmnist.reporting.runs_table import flat_settings
from fmnist.runtime.modelfile import ModelInfo
from fmnist.runtime.runs import TENSORBOARD, TEST_METRICS, RunFolder
from fmnist.tracking.guard import Tracker, missing_extra
from fmnist.training.config import TrainConfig
from fmnist.training.trainer import Run

# Settings that say where things go, not how the model was trained: left out of the HParams view.
NOT_HPARAMS = ("data_dir", "verify", "tensorboard", "mlflow", "preset")
EVENT_FILES = "events.out.tfevents.*"


def summary_writer_class():
    """tensorboardX's SummaryWriter; without the extra, one line that says how to install it."""
    try:
        from tensorboardX import SummaryWriter
    except ModuleNotFoundError as e:
        raise missing_extra("--tensorboard", e) from None
    return SummaryWriter


class TensorBoardLogger(Tracker):
    """Event files in ``logdir`` (default ``RUN/tensorboard/``), one step per epoch."""

    what = "TensorBoard"

    def __init__(self, logdir: str | Path | None = None):
        super().__init__()
        self.writer_class = summary_writer_class()  # a missing extra fails before training starts
        self.logdir = Path(logdir) if logdir is not None else None
        self.writer: Any = None
        self.images_per_epoch = 0

    def start(self, config: TrainConfig, info: ModelInfo, start_epoch: int) -> None:
        logdir = self.logdir or Path(config.out) / TENSORBOARD
        if start_epoch == 1:
            # A new run in a folder that held another (--overwrite): its curves are not this run's.
            for old in logdir.glob(EVENT_FILES):
                old.unlink()
        # A resumed run may repeat epochs it logged after its last saved state: TensorBoard
        # drops what an earlier file says from purge_step on.
        purge = start_epoch if start_epoch > 1 else None
        # Event files are named by the second they were opened in: a run resumed within the
        # same second would overwrite the interrupted session's file without this suffix.
        suffix = f".from-epoch-{start_epoch}"
        self.writer = self.writer_class(logdir=str(logdir), purge_step=purge, flush_secs=30, filename_suffix=suffix)
        self.images_per_epoch = 0
        self.batch = min(config.batch_size, info.train_images or config.batch_size)

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.images_per_epoch = steps * self.batch if self.started else 0

    def epoch(self, row: dict[str, float]) -> None:
        step, w = int(row["epoch"]), self.writer
        for tag, key in (
            ("loss/train", "train_loss"),
            ("loss/validation", "val_loss"),
            ("accuracy/train", "train_accuracy"),
            ("accuracy/validation", "val_accuracy"),
            ("learning_rate", "lr"),
        ):
            if key in row:
                w.add_scalar(tag, row[key], step)
        # Images a second over the epoch's training steps (validation not counted); the part
        # of an epoch before a resume is not timed again, so that epoch shows none.
        if self.images_per_epoch and row.get("train_seconds"):
            w.add_scalar("images_per_second", self.images_per_epoch / row["train_seconds"], step)
        w.flush()

    def end(self, run: Run) -> None:
        step = int(run.history[-1]["epoch"]) if run.history else 0
        metrics = {
            "hparams/best_val_accuracy": run.best.get("val_accuracy"),
            "hparams/best_val_loss": run.best.get("val_loss"),
            "hparams/best_epoch": run.best.get("epoch"),
            "hparams/train_seconds": run.seconds,
        }
        test = _test_metrics(run.out_dir)
        if test:
            metrics["hparams/test_accuracy"] = test.get("test_accuracy")
            metrics["hparams/test_ece"] = test.get("ece")
        write_hparams(self.writer, hparams_of(run.config.to_dict()), metrics, step)
        if test:
            write_test_metrics(self.writer, test, step)
        self.writer.flush()

    def close(self, status: str = "FINISHED") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


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
    ``add_hparams`` would open a second run (a subfolder) for it."""
    from tensorboardX.summary import hparams as hparams_summary

    finite = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    for summary in hparams_summary(hparams, finite):
        writer.file_writer.add_summary(summary)
    for tag, value in finite.items():
        writer.add_scalar(tag, value, step)


def write_test_metrics(writer, test: dict[str, Any], step: int) -> None:
    """Test accuracy and ECE, and the confusion matrix drawn as `fmnist evaluate` draws it."""
    for tag, key in (("test/accuracy", "test_accuracy"), ("test/ece", "ece"), ("test/loss", "test_loss")):
        if isinstance(test.get(key), (int, float)):
            writer.add_scalar(tag, test[key], step)
    cm = test.get("confusion_matrix")
    if cm:
        png = confusion_png(np.asarray(cm, dtype=np.int64))
        writer.add_image(
            "confusion_matrix", np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), step, dataformats="HWC"
        )


def log_evaluation(run_dir: str | Path) -> Path | None:
    """After ``fmnist evaluate``: add the test metrics and the confusion matrix to the run's
    event files, if it has any. Returns the event folder written, else None."""
    folder = RunFolder(run_dir)
    logdir = folder / TENSORBOARD
    test = _test_metrics(folder.path)
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


def _test_metrics(run_dir: Path) -> dict[str, Any]:
    folder = RunFolder(run_dir)
    return folder.read_json(TEST_METRICS) if (folder / TEST_METRICS).is_file() else {}
