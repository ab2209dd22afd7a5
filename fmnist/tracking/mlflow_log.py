"""MLflow tracking: a run's settings as parameters, its epochs as metric history, its summary,
and the run folder's files as artifacts, in an MLflow tracking store: a SQLite file
(``sqlite:///mlruns.db``, MLflow's own default), a PostgreSQL database shared by a team, or an
MLflow server (``http://HOST:5000``).

The store is opened and checked before training starts, so an unreachable one is one
``error:`` line and not a run that trains for an hour and then cannot log. Once training runs,
a store that fails costs warnings, never the run (:class:`~fmnist.tracking.guard.Tracker`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist.core.errors import FmnistError
from fmnist.runtime.modelfile import ModelInfo
from fmnist.runtime.runs import RunFolder
from fmnist.tracking.guard import Tracker, first_line, missing_extra
from fmnist.tracking.tensorboard import hparams_of
from fmnist.training.config import TrainConfig
from fmnist.training.trainer import Run

DEFAULT_URI = "sqlite:///mlruns.db"
URI_ENV = "FMNIST_MLFLOW_URI"
EXPERIMENT = "fmnist"
RUN_DIR_TAG = "fmnist.run_dir"  # which run folder an MLflow run belongs to (found again on --resume)
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")
SUMMARY_METRICS = ("val_accuracy", "val_loss", "best_epoch", "epochs_run", "train_seconds", "params", "temperature")
PARAM_LIMIT = 6000  # characters MLflow 2.10+ keeps of a parameter's value
BATCH_LIMIT = 100  # parameters MLflow takes in one log_batch call


def resolve_uri(value: str) -> str:
    """The store a ``--mlflow`` value names: itself, or for ``default`` (or an empty value)
    $FMNIST_MLFLOW_URI, else ``sqlite:///mlruns.db`` in the current folder."""
    if value.strip().lower() in ("", "default"):
        return os.environ.get(URI_ENV) or DEFAULT_URI
    return value


def hide_password(uri: str) -> str:
    return re.sub(r"(//[^/:@]+):[^@/]*@", r"\1:***@", uri)


@dataclass
class Store:
    """An open MLflow tracking store and fmnist's experiment in it."""

    client: Any  # mlflow.tracking.MlflowClient
    experiment_id: str
    uri: str


def _client_class():
    try:
        from mlflow.tracking import MlflowClient
    except ModuleNotFoundError as e:
        raise missing_extra("--mlflow", e) from None
    # MLflow and its migrations announce every table they create; fmnist's own lines are enough.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient


def open_store(value: str) -> Store:
    """Open the store ``value`` names and fmnist's experiment in it (created on first use);
    anything unreachable or refused is one :class:`FmnistError`."""
    uri = resolve_uri(value)
    shown = hide_password(uri)
    client_class = _client_class()
    if uri.split(":", 1)[0].split("+", 1)[0] in SQL_SCHEMES:
        _check_database(uri, shown)
    with _few_retries():
        try:
            client = client_class(tracking_uri=uri)
            return Store(client, _experiment(client), uri)
        except Exception as e:  # MLflow raises many kinds; each is "this store does not work"
            raise FmnistError(
                f"--mlflow {shown}: {first_line(e)} (check the URI, e.g. {DEFAULT_URI}, "
                "postgresql://USER@HOST:5432/DB or http://HOST:5000, and that the server runs)"
            ) from None


def _experiment(client) -> str:
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(EXPERIMENT)
    except Exception:
        # Another process created it in the meantime.
        found = client.get_experiment_by_name(EXPERIMENT)
        if found is None:
            raise
        return found.experiment_id


def _check_database(uri: str, shown: str) -> None:
    """Connect once with a short timeout: MLflow itself retries an unreachable database for
    about two minutes before it gives up."""
    try:
        import sqlalchemy
    except ModuleNotFoundError as e:
        raise missing_extra(f"--mlflow {shown}", e) from None
    kwargs: dict[str, Any] = {}
    if uri.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 10}
    elif uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = sqlalchemy.create_engine(uri, **kwargs)
        with engine.connect():
            pass
        engine.dispose()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, OSError) as e:
        cause = getattr(e, "orig", None) or e
        raise FmnistError(f"--mlflow {shown}: {first_line(cause)} (check the URI and that the server runs)") from None


@contextlib.contextmanager
def _few_retries() -> Iterator[None]:
    """A server that does not answer the first check is an error now, not after MLflow's
    default seven retries with back-off (minutes); a user's own setting wins."""
    given = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        yield
    finally:
        for k, v in given.items():
            if v is None:
                os.environ.pop(k, None)


def _entities():
    from mlflow.entities import Metric, Param, RunTag

    return Metric, Param, RunTag


class MLflowLogger(Tracker):
    """One MLflow run per training run (continued by ``--resume``); ``parent_run_id`` nests it
    (a tuning trial under its study)."""

    what = "MLflow"

    def __init__(self, store: Store, run_name: str | None = None, parent_run_id: str | None = None, tags=None):
        super().__init__()
        self.store, self.run_name, self.parent_run_id = store, run_name, parent_run_id
        self.tags = dict(tags or {})
        self.run_id: str | None = None

    def start(self, config: TrainConfig, info: ModelInfo, start_epoch: int) -> None:
        client, run_dir = self.store.client, str(Path(config.out).resolve())
        self.run_id = self._unfinished_run(run_dir) if start_epoch > 1 else None
        if self.run_id is not None:
            client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {
                RUN_DIR_TAG: run_dir,
                "fmnist.model": config.model,
                "fmnist.preset": config.preset or "",
                **self.tags,
            }
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            run = client.create_run(self.store.experiment_id, run_name=self.run_name or Path(run_dir).name, tags=tags)
            self.run_id = run.info.run_id
            self._log_params(config)
        atexit.register(self._at_exit)

    def _unfinished_run(self, run_dir: str) -> str | None:
        """The MLflow run an interrupted training run logged into, to continue it."""
        quoted = run_dir.replace("'", "\\'")
        found = self.store.client.search_runs(
            [self.store.experiment_id],
            filter_string=f"tags.`{RUN_DIR_TAG}` = '{quoted}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def _log_params(self, config: TrainConfig) -> None:
        _, Param, _ = _entities()
        params = [Param(k, str(v)[:PARAM_LIMIT]) for k, v in hparams_of(config.to_dict()).items()]
        for i in range(0, len(params), BATCH_LIMIT):
            self.store.client.log_batch(self.run_id, params=params[i : i + BATCH_LIMIT])

    def epoch(self, row: dict[str, float]) -> None:
        Metric, _, _ = _entities()
        now, step = int(time.time() * 1000), int(row["epoch"])
        metrics = [Metric(k, float(row[k]), now, step) for k in EPOCH_METRICS if _finite(row.get(k))]
        self.store.client.log_batch(self.run_id, metrics=metrics)

    def end(self, run: Run) -> None:
        Metric, _, RunTag = _entities()
        folder = RunFolder(run.out_dir)
        summary = folder.read_summary().to_dict()
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"best_{k}" if k.startswith("val_") else k, float(summary[k]), now, 0)
            for k in SUMMARY_METRICS
            if _finite(summary.get(k))
        ]
        tags = [RunTag(f"fmnist.{k}", str(summary[k])) for k in ("device", "precision", "finished") if summary.get(k)]
        tags += [RunTag(f"fmnist.version.{k}", str(v)) for k, v in (summary.get("versions") or {}).items()]
        self.store.client.log_batch(self.run_id, metrics=metrics, tags=tags)
        # The run folder's own files: a model file describes itself, so the artifact is a usable model.
        for path in folder.owned_files():
            self.store.client.log_artifact(self.run_id, str(path), "run")

    def close(self, status: str = "FINISHED") -> None:
        if self.run_id is not None and not self.closed:
            self.closed = True
            atexit.unregister(self._at_exit)
            self.store.client.set_terminated(self.run_id, status)

    def _at_exit(self) -> None:
        """A run whose training ended in an exception nobody closed it for: not left RUNNING."""
        with contextlib.suppress(Exception):
            self.close("FAILED")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
