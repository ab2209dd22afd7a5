"""TensorBoard event files for a run, written with tensorboardX (numpy and protobuf only, no
TensorFlow): per-epoch loss, accuracy, learning rate and images/s; at the end the settings
with the final metrics (TensorBoard's HParams view), and the test set's confusion matrix as
an image: the validation split's when training ends, the test set's once ``fmnist evaluate``
has measured it (:mod:`fmnist.reporting.events`, which evaluate uses without training).

``tensorboard --logdir runs/`` then shows every run that was trained with ``--tensorboard``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fmnist.reporting.events import (
    EVENT_FILES,
    hparams_of,
    log_evaluation,
    summary_writer_class,
    test_metrics_of,
    write_confusion,
    write_hparams,
    write_test_metrics,
)
from fmnist.runtime.modelfile import ModelInfo
from fmnist.runtime.runs import TENSORBOARD
from fmnist.tracking.guard import Tracker
from fmnist.training.config import TrainConfig
from fmnist.training.trainer import Run

__all__ = ["EVENT_FILES", "TensorBoardLogger", "hparams_of", "log_evaluation", "summary_writer_class"]


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
        test = test_metrics_of(run.out_dir)  # a resumed run may have been evaluated in between
        write_hparams(self.writer, hparams_of(run.config.to_dict()), metrics, step)
        if run.val_confusion:
            write_confusion(self.writer, "confusion_matrix/validation", run.val_confusion, step)
        if test:
            write_test_metrics(self.writer, test, step)
        self.writer.flush()

    def close(self, status: str = "FINISHED") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
