"""Tracking: TensorBoard event files and MLflow runs beside the run folder, which stays the
record. Above training (it imports it), below the studies and the CLI (they import it).

``tracking_callbacks(config)`` gives the trackers a :class:`TrainConfig` asks for
(``tensorboard``, ``mlflow``), checked before training starts; :func:`train` and
:func:`resume` are :mod:`fmnist.training.trainer`'s with them added, and closed with the right
status however the run ends. :class:`StudyTracking` does the same for ``fmnist tune``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from fmnist.core.errors import FmnistError
from fmnist.runtime.runs import CONFIG, TENSORBOARD, RunFolder
from fmnist.tracking.guard import Tracker, first_line
from fmnist.tracking.mlflow_log import MLflowLogger, Store, hide_password, open_store
from fmnist.tracking.tensorboard import TensorBoardLogger, log_evaluation, summary_writer_class
from fmnist.training import trainer
from fmnist.training.config import TrainConfig
from fmnist.training.trainer import Callback, Interrupted, Run

__all__ = [
    "MLflowLogger",
    "StudyTracking",
    "TensorBoardLogger",
    "closed_on_failure",
    "log_evaluation",
    "open_store",
    "resume",
    "tracking_callbacks",
    "train",
]

STUDY_RUN_TAG = "fmnist.study_run"  # the MLflow run of a whole study (its trials carry fmnist.study)


def tracking_callbacks(config: TrainConfig) -> list[Callback]:
    """The trackers ``config`` turns on. A missing extra or an unreachable MLflow store is an
    :class:`~fmnist.core.errors.FmnistError` here, before anything trains."""
    callbacks: list[Callback] = []
    if config.tensorboard:
        callbacks.append(TensorBoardLogger())
    if config.mlflow is not None:
        callbacks.append(MLflowLogger(open_store(config.mlflow)))
    return callbacks


def status_of(error: BaseException, stopped: tuple[type[BaseException], ...] = ()) -> str:
    """MLflow's word for how a run ended: KILLED when someone stopped it, else FAILED."""
    return "KILLED" if isinstance(error, (Interrupted, KeyboardInterrupt, *stopped)) else "FAILED"


@contextlib.contextmanager
def closed_on_failure(
    callbacks: Sequence[Callback], stopped: tuple[type[BaseException], ...] = ()
) -> Iterator[Sequence[Callback]]:
    """Inside the block the trackers among ``callbacks`` log; if it raises, they are closed
    with the status the error means (training closes them itself when it finishes)."""
    try:
        yield callbacks
    except BaseException as e:
        for cb in callbacks:
            if isinstance(cb, Tracker):
                cb.attempt("the run's end", cb.close, status_of(e, stopped))
        raise


def train(config: TrainConfig, callbacks: Sequence[Callback] = ()) -> Run:
    """:func:`fmnist.training.trainer.train`, with the trackers ``config`` asks for."""
    trackers = tracking_callbacks(config)
    with closed_on_failure(trackers):
        return trainer.train(config, [*trackers, *callbacks])


def resume(run_dir: str | Path, callbacks: Sequence[Callback] = ()) -> Run:
    """:func:`fmnist.training.trainer.resume`, with the trackers the run was started with."""
    folder = RunFolder(run_dir)
    config = TrainConfig.from_mapping(folder.read_config(), str(folder / CONFIG))
    trackers = tracking_callbacks(config)
    with closed_on_failure(trackers):
        return trainer.resume(run_dir, [*trackers, *callbacks])


class StudyTracking:
    """``fmnist tune``'s trackers: one TensorBoard event folder per trial
    (``STUDY/tensorboard/NNNN``, kept when the trial is pruned) and one MLflow run per trial,
    nested in one run for the study. ``stopped``: the errors that mean a trial was stopped on
    purpose (pruned), not failed."""

    def __init__(
        self,
        folder: Path,
        study: str,
        tensorboard: bool = False,
        mlflow: str | None = None,
        stopped: tuple[type[BaseException], ...] = (),
    ):
        self.folder, self.study, self.tensorboard, self.stopped = Path(folder), study, tensorboard, stopped
        if tensorboard:
            summary_writer_class()  # the extra is checked before the first trial
        self.store: Store | None = open_store(mlflow) if mlflow is not None else None
        self.parent_run_id: str | None = None

    def start(self, settings: dict[str, object]) -> None:
        """Open (or find again, for a study continued) the study's MLflow run."""
        if self.store is None:
            return
        client, tag = self.store.client, STUDY_RUN_TAG
        quoted = self.study.replace("'", "\\'")
        try:
            found = client.search_runs([self.store.experiment_id], f"tags.`{tag}` = '{quoted}'", max_results=1)
            if found:
                self.parent_run_id = found[0].info.run_id
                client.update_run(self.parent_run_id, status="RUNNING")
                return
            run = client.create_run(self.store.experiment_id, run_name=f"study {self.study}", tags={tag: self.study})
            self.parent_run_id = run.info.run_id
            for key, value in settings.items():
                client.log_param(self.parent_run_id, key, str(value))
        except Exception as e:  # the store answered the first check; this is before any trial
            raise FmnistError(f"--mlflow {hide_password(self.store.uri)}: {first_line(e)}") from None

    @contextlib.contextmanager
    def trial(self, number: int) -> Iterator[list[Callback]]:
        """The trial's trackers, closed as KILLED (pruned, stopped) or FAILED if it raises."""
        callbacks: list[Callback] = []
        if self.tensorboard:
            callbacks.append(TensorBoardLogger(self.folder / TENSORBOARD / f"{number:04d}"))
        if self.store is not None:
            tags = {"fmnist.study": self.study, "fmnist.trial": str(number)}
            callbacks.append(MLflowLogger(self.store, f"trial {number:04d}", self.parent_run_id, tags))
        with closed_on_failure(callbacks, self.stopped):
            yield callbacks

    def close(self, status: str = "FINISHED") -> None:
        if self.store is not None and self.parent_run_id is not None:
            self.store.client.set_terminated(self.parent_run_id, status)
            self.parent_run_id = None
