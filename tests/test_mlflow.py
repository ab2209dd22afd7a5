"""MLflow tracking, queried back with MLflow's own client: a SQLite store and the real
PostgreSQL server (a schema of its own), a resumed run continuing its MLflow run, a store that
fails mid-run, an unreachable one refused before training, and fmnist tune's nested runs.

Slow: importing MLflow and creating a store's tables take seconds each."""

from __future__ import annotations

import os
import signal
import time
import uuid
import warnings

import pytest

# An sdist installed with only [dev] runs the other tests; these need their extra.
pytest.importorskip("psycopg", reason="an extra of fmnist (tune, track) is not installed")
pytest.importorskip("optuna", reason="an extra of fmnist (tune, track) is not installed")
pytest.importorskip("mlflow", reason="an extra of fmnist (tune, track) is not installed")

import psycopg  # noqa: E402
from conftest import synthetic_config  # noqa: E402

from fmnist import tracking  # noqa: E402
from fmnist.core.errors import FmnistError  # noqa: E402
from fmnist.runtime.runs import RunFolder  # noqa: E402
from fmnist.studies import tune as ftune  # noqa: E402
from fmnist.tracking.mlflow_log import EXPERIMENT, RUN_DIR_TAG, open_store, resolve_uri  # noqa: E402
from fmnist.training.trainer import Callback, Interrupted  # noqa: E402

pytestmark = pytest.mark.slow
mlflow_tracking = pytest.importorskip("mlflow.tracking")


def only_run(uri: str):
    client = mlflow_tracking.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    return client, run


def check_logged(uri: str, result) -> None:
    """The run's settings, every epoch, the summary and the files, as MLflow returns them."""
    client, run = only_run(uri)
    assert run.info.status == "FINISHED" and run.info.run_name == result.out_dir.name
    assert run.data.tags[RUN_DIR_TAG] == str(result.out_dir.resolve())
    params = run.data.params
    assert params["lr"] == str(result.config.lr) and params["model"] == "seed" and params["epochs"] == "2"
    assert "mlflow" not in params and "out" not in params  # a store URI may hold a password
    history = RunFolder(result.out_dir).read_metrics()
    logged = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [(m.step, m.value) for m in logged] == [(int(r["epoch"]), pytest.approx(r["val_accuracy"])) for r in history]
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(result.best["val_accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert {"run/config.json", "run/metrics.csv", "run/model.safetensors", "run/summary.json"} <= artifacts


def test_a_sqlite_store_holds_params_history_summary_and_files(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow keeps a SQLite store's artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path}/store/mlruns.db"
    monkeypatch.setenv("FMNIST_MLFLOW_URI", uri)
    assert resolve_uri("default") == uri and resolve_uri("sqlite:///x.db") == "sqlite:///x.db"
    result = tracking.train(synthetic_config(synthetic_dir, tmp_path / "run", mlflow="default"))
    check_logged(uri, result)


class _StopAfterFirstEpoch(Callback):
    def on_epoch_end(self, row):
        os.kill(os.getpid(), signal.SIGINT)


def test_a_resumed_run_continues_its_mlflow_run(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    config = synthetic_config(synthetic_dir, tmp_path / "run", subset=256, epochs=3, mlflow=uri)
    with pytest.raises(Interrupted):
        tracking.train(config, [_StopAfterFirstEpoch()])
    _, run = only_run(uri)
    assert run.info.status == "KILLED"
    tracking.resume(tmp_path / "run")
    client, run = only_run(uri)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]


def test_a_store_failing_mid_run_costs_a_warning_not_the_run(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = synthetic_config(synthetic_dir, tmp_path / "run", mlflow=f"sqlite:///{tmp_path}/mlruns.db")
    trackers = tracking.tracking_callbacks(config)
    client = trackers[0].store.client
    log_batch = client.log_batch

    def flaky(run_id, metrics=(), **kw):
        if any(m.step == 2 for m in metrics):
            raise ConnectionError("the tracking server went away")
        return log_batch(run_id, metrics=metrics, **kw)

    monkeypatch.setattr(client, "log_batch", flaky)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tracking.trainer.train(config, trackers)
    messages = [str(w.message) for w in caught if str(w.message).startswith("MLflow")]
    assert messages == [
        "MLflow: epoch 2's metrics not logged (ConnectionError: the tracking server went away); "
        "the run folder is complete"
    ]
    assert RunFolder(result.out_dir).status == "finished"
    history = client.get_metric_history(trackers[0].run_id, "val_accuracy")
    assert [m.step for m in history] == [1]


@pytest.mark.parametrize(
    "uri, message",
    [
        ("postgresql://fmnist:secret@127.0.0.1:1/fmnist", "Connection refused"),
        ("nosuch://somewhere", "nosuch"),
        ("http://127.0.0.1:1", "--mlflow http://127.0.0.1:1"),
    ],
)
def test_an_unreachable_store_is_one_error_before_training(uri, message, synthetic_dir, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(FmnistError, match=message) as e:
        tracking.train(synthetic_config(synthetic_dir, tmp_path / "run", mlflow=uri))
    assert time.monotonic() - t0 < 30 and "\n" not in str(e.value) and "secret" not in str(e.value)
    assert not (tmp_path / "run").exists()


@pytest.fixture
def pg_schema(pg_url):
    """A PostgreSQL database of this test's own on the tests' server (MLflow's tables and its
    alembic_version never meet Optuna's, which fmnist tune's tests keep in theirs); a role
    that may not create databases gets a schema of its own in the tests' database instead."""
    name = f"mlflow_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        try:
            conn.execute(f"CREATE DATABASE {name}")
            kind, url = "DATABASE", pg_url.rsplit("/", 1)[0] + f"/{name}"
        except psycopg.errors.InsufficientPrivilege:
            conn.execute(f"CREATE SCHEMA {name}")
            kind, url = "SCHEMA", f"{pg_url}?options=-csearch_path%3D{name}"
    try:
        yield url
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            # MLflow's connection pool may still hold the database open.
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)" if kind == "DATABASE" else f"DROP SCHEMA {name} CASCADE")


def test_a_postgresql_store(pg_schema, synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = tracking.train(synthetic_config(synthetic_dir, tmp_path / "run", mlflow=pg_schema))
    check_logged(pg_schema, result)


def test_tune_logs_each_trial_as_a_nested_run_and_its_own_event_folder(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    space = tmp_path / "space.json"
    space.write_text('{"model": {"choices": ["seed"]}, "batch_size": {"choices": [128]}}')
    opts = ftune.TuneOptions(
        study="s",
        out=str(tmp_path / "study"),
        trials=2,
        epochs_per_trial=1,
        space_file=str(space),
        data_dir=str(synthetic_dir),
        verify=False,
        val_size=200,
        subset=512,
        threads=1,
        tensorboard=True,
        mlflow=uri,
    )
    ftune.tune(opts, log=lambda m: None)
    client = open_store(uri).client
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = sorted(
        (r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id), key=lambda r: r.info.run_name
    )
    assert parent.info.status == "FINISHED" and parent.data.params["trials"] == "2"
    assert [r.info.run_name for r in trials] == ["trial 0000", "trial 0001"]
    assert all(r.info.status == "FINISHED" and "val_accuracy" in r.data.metrics for r in trials)
    assert sorted(p.name for p in (tmp_path / "study" / "tensorboard").iterdir()) == ["0000", "0001"]
