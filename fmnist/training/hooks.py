"""What training tells the outside and hears from it: the :class:`Callback` hooks, the
:class:`Run` it returns, the :class:`Interrupted` stop after a Ctrl-C or SIGTERM, and the
signal handlers that turn those signals into a stop request."""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from fmnist.runtime.modelfile import ModelInfo
from fmnist.training.config import TrainConfig


@dataclass
class Run:
    """The result of :func:`fmnist.training.trainer.train`: where it was written, what was
    measured, the best model."""

    out_dir: Path
    config: TrainConfig
    history: list[dict[str, float]]
    best: dict[str, float]
    model: torch.nn.Module
    info: ModelInfo
    seconds: float
    val_confusion: list[list[int]] | None = None  # the final model's, on the validation split


class Callback:
    """Hooks into training; override what you need. Called on rank 0 only."""

    wants_running_stats = False  # ask for the running loss/accuracy every few steps (a sync point)

    def on_train_start(self, config: TrainConfig, info: ModelInfo, start_epoch: int) -> None: ...
    def on_epoch_start(self, epoch: int, steps: int) -> None: ...
    def on_step(self, state: dict[str, float]) -> None: ...
    def on_epoch_end(self, row: dict[str, float]) -> None: ...
    def on_train_end(self, run: Run) -> None: ...


class Interrupted(Exception):
    """Training stopped on request (SIGINT or SIGTERM) after saving its resume state."""

    def __init__(self, folder: Path, epoch: int, step: int, steps: int):
        self.folder, self.epoch, self.step, self.steps = folder, epoch, step, steps
        super().__init__(
            f"interrupted in epoch {epoch} after step {step} of {steps}; the state is saved. "
            f"Continue with: fmnist train --resume {folder}"
        )


class StopRequest:
    """Ctrl-C and SIGTERM, inside :meth:`handled`, only note that a stop was asked for: the
    loop finishes its step, saves and stops. A second Ctrl-C stops at once."""

    def __init__(self, distributed: bool = False):
        self.signum: int | None = None
        self.distributed = distributed

    @property
    def asked(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        # Under torchrun the launcher passes the signal on too: only a lone process
        # takes a second Ctrl-C as "stop at once".
        if self.signum is not None and signum == signal.SIGINT and not self.distributed:
            raise KeyboardInterrupt
        self.signum = signum

    def handled(self):
        return signal_handlers(self._handle, signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signal_handlers(handler, *signums: int):
    """``handler`` for ``signums`` inside the block, the previous handlers after it. Outside the
    main thread (where Python cannot set handlers) the block runs with them unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
