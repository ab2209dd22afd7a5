"""Tracking never loses a run: a tracker that fails (a full disk, a store that went away)
costs a warning that says what was not logged, never the training run."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from fmnist.reporting.events import missing_extra
from fmnist.runtime.modelfile import ModelInfo
from fmnist.training.config import TrainConfig
from fmnist.training.trainer import Callback, Run

__all__ = ["Tracker", "first_line", "missing_extra"]


def first_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0][:300]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class Tracker(Callback):
    """A :class:`Callback` whose hooks never raise: subclasses write ``start``, ``epoch`` and
    ``end``; a failure in one of them is a warning, and training goes on. After a failed
    ``start`` (nothing to log into) the tracker stays silent for the rest of the run."""

    what = "tracker"  # named in the warnings, e.g. "TensorBoard"

    def __init__(self) -> None:
        self.started = False
        self.closed = False

    # --- what subclasses write ------------------------------------------------------------

    def start(self, config: TrainConfig, info: ModelInfo, start_epoch: int) -> None: ...
    def epoch(self, row: dict[str, float]) -> None: ...
    def end(self, run: Run) -> None: ...
    def close(self, status: str = "FINISHED") -> None:
        """Release what the tracker holds; ``status``: FINISHED, FAILED or KILLED. Idempotent."""

    # --- the hooks training calls -----------------------------------------------------------

    def on_train_start(self, config: TrainConfig, info: ModelInfo, start_epoch: int) -> None:
        self.started = self.attempt("the whole run", self.start, config, info, start_epoch)

    def on_epoch_end(self, row: dict[str, float]) -> None:
        if self.started:
            self.attempt(f"epoch {int(row['epoch'])}'s metrics", self.epoch, row)

    def on_train_end(self, run: Run) -> None:
        if self.started:
            self.attempt("the final metrics and files", self.end, run)
        self.attempt("the run's end", self.close, "FINISHED")

    def attempt(self, what: str, fn: Callable[..., Any], *args: Any) -> bool:
        """``fn(*args)``; True if it worked, else a warning naming ``what`` was not logged."""
        try:
            fn(*args)
            return True
        except Exception as e:  # any failure of a tracker, by design: training must go on
            warnings.warn(f"{self.what}: {what} not logged ({first_line(e)}); the run folder is complete", stacklevel=2)
            return False
