"""`fmnist runs` and `fmnist runs compare`: every kind of folder a user ends up with, found and
shown as what it is; compare lists exactly the settings that differ."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from conftest import run_cli, synthetic_config

from fmnist.core.errors import FmnistError
from fmnist.core.machine import cpu_kind, cpu_name
from fmnist.reporting.runs_compare import compare, differing_settings
from fmnist.reporting.runs_table import list_runs, parse_where, read_row
from fmnist.training.trainer import Callback, Interrupted, train


class _StopAfterFirstEpoch(Callback):
    """Ctrl-C as a user sends it: the trainer saves its state after the epoch and stops."""

    def on_epoch_end(self, row):
        os.kill(os.getpid(), signal.SIGINT)


class _CrashInSecondEpoch(Callback):
    def on_epoch_end(self, row):
        if row["epoch"] == 2:
            raise RuntimeError("the machine fell over")


@pytest.fixture(scope="module")
def zoo(synthetic_run, synthetic_dir, tmp_path_factory) -> Path:
    """A folder of runs in every state: finished, interrupted (resumable), failed (no resume
    state), foreign, damaged, and one evaluated, beside a folder that holds no run."""
    root = tmp_path_factory.mktemp("zoo") / "runs"
    shutil.copytree(synthetic_run, root / "finished")
    evaluated = root / "group" / "evaluated"
    shutil.copytree(synthetic_run, evaluated)
    (evaluated / "test_metrics.json").write_text(
        json.dumps({"test_accuracy": 0.875, "test_images": 10_000, "ece": 0.0123})
    )
    tiny = dict(subset=256, epochs=3, val_size=200)
    train(synthetic_config(synthetic_dir, root / "variant", subset=256, epochs=1, lr=3e-3, flip=True))
    with pytest.raises(Interrupted):
        train(synthetic_config(synthetic_dir, root / "interrupted", **tiny), [_StopAfterFirstEpoch()])
    with pytest.raises(RuntimeError, match="fell over"):
        train(synthetic_config(synthetic_dir, root / "failed", **tiny), [_CrashInSecondEpoch()])
    # A crash leaves a resume state (resumable, like an interrupted run); one that lost it has failed.
    assert read_row("crashed", root / "failed").state == "interrupted"
    (root / "failed" / "resume.safetensors").unlink()
    (root / "foreign").mkdir()
    (root / "foreign" / "config.json").write_text('{"learning_rate": 0.1}')
    (root / "foreign" / "metrics.csv").write_text("step,loss\n1,0.5\n")
    shutil.copytree(synthetic_run, root / "damaged")
    (root / "damaged" / "summary.json").write_text("{not json")
    (root / "notes").mkdir()
    (root / "notes" / "README.txt").write_text("no run here")
    return root


def test_every_folder_is_a_row_saying_what_it_is(zoo):
    rows = {r.name: r for r in list_runs([zoo], sort="name")}
    names = {Path(n).relative_to(zoo).as_posix(): r for n, r in rows.items()}
    assert {k: r.state for k, r in names.items()} == {
        "damaged": "damaged",
        "failed": "failed",
        "finished": "finished",
        "foreign": "foreign",
        "group/evaluated": "finished",
        "interrupted": "interrupted",
        "variant": "finished",
    }
    finished = names["finished"]
    assert finished.model == "seed" and finished.params > 0 and finished.epochs_run == 2 == finished.epochs
    assert 0 < finished.val_accuracy <= 1 and finished.train_seconds > 0 and finished.device == "cpu"
    assert finished.test_accuracy is None and finished.date
    assert finished.hardware == cpu_kind()  # the CPU kind, recorded when it trained
    assert names["group/evaluated"].test_accuracy == 0.875 and names["group/evaluated"].ece == 0.0123
    interrupted = names["interrupted"]
    assert interrupted.resumable and interrupted.epochs_run == 1 and interrupted.epochs == 3
    assert "fmnist train --resume" in interrupted.note and interrupted.val_accuracy is not None
    assert names["failed"].epochs_run == 2 and "without a resume state" in names["failed"].note
    assert "summary.json" in names["damaged"].note


def test_a_model_without_its_config_is_damaged_not_foreign(synthetic_run, tmp_path):
    shutil.copytree(synthetic_run, tmp_path / "run")
    (tmp_path / "run" / "config.json").unlink()
    row = read_row("run", tmp_path / "run")
    assert row.state == "damaged" and row.model == "seed" and "config.json" in row.note


def test_summary_with_text_where_numbers_belong_is_a_damaged_row_not_a_crash(synthetic_run, tmp_path):
    shutil.copytree(synthetic_run, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    summary.update(val_accuracy="high", epochs_run=None, train_seconds=float("nan"))
    (tmp_path / "run" / "summary.json").write_text(json.dumps(summary))
    row = read_row("run", tmp_path / "run")  # summary.json is validated when read (issue 25)
    assert row.state == "damaged" and "val_accuracy" in row.note and row.val_accuracy is None


def test_where_and_sort(zoo):
    by_state = list_runs([zoo], ["state=FINISHED"], sort="name")
    assert [Path(r.name).name for r in by_state] == [
        "finished",
        "evaluated",
        "variant",
    ]  # runs/group/... sorts before v
    assert [Path(r.name).name for r in list_runs([zoo], ["test_accuracy>=87.5%"])] == ["evaluated"]
    assert all(r.state != "finished" for r in list_runs([zoo], ["state!=finished"]))
    rows = list_runs([zoo], ["model=seed"], sort="-epochs_run")
    assert [r.epochs_run for r in rows] == [2, 2, 2, 1, 1, None]  # the damaged run has no count: last
    for bad, message in [
        ("nonsense", "use FIELD=VALUE"),
        ("lr=1", "no field 'lr'"),
        ("model>3", "is text"),
        ("val_accuracy>high", "is a number"),
    ]:
        with pytest.raises(FmnistError, match=message):
            parse_where(bad)
    with pytest.raises(FmnistError, match="--sort: no field"):
        list_runs([zoo], sort="speed")
    with pytest.raises(FmnistError, match="no such folder"):
        list_runs([zoo / "nowhere"])


def test_cli_table_and_json(zoo, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "runs", zoo, "--sort", "name")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["run", "state", "preset"]
    assert any("interrupted" in line and "1/3" in line for line in lines)
    assert any("evaluated" in line and "87.50%" in line for line in lines)
    assert lines[0].split()[-3:] == ["ran", "on", "date"] and cpu_name() in out
    assert "resumable: fmnist train --resume" in out and "Traceback" not in out + err
    code, out, _ = run_cli(monkeypatch, capsys, "runs", zoo, "--json", "--where", "state=foreign")
    assert code == 0 and [r["state"] for r in json.loads(out)] == ["foreign"]
    code, _, err = run_cli(monkeypatch, capsys, "runs", zoo, "--where", "lr>1")
    assert code == 2 and err.startswith("error: --where: no field 'lr'") and len(err.splitlines()) == 1
    monkeypatch.chdir(zoo.parent)  # the default folder is runs/
    code, out, _ = run_cli(monkeypatch, capsys, "runs", "--json")
    assert code == 0 and len(json.loads(out)) == 7


def test_compare_lists_exactly_the_settings_that_differ(zoo, tmp_path, monkeypatch, capsys):
    a, b = zoo / "finished", zoo / "variant"
    c = compare([a, b])
    assert c.settings == {"epochs": [2, 1], "lr": [0.001, 0.003], "flip": [False, True], "subset": [0, 256]}
    assert dict(c.metrics())["epochs run"] == ["2", "1"]
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "runs", "compare", a, b, "--html", "page.html")
    assert code == 0, err
    assert "settings that differ" in out and "flip" in out and "wrote compare.png and page.html" in out
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "page.html").read_text()
    assert "Settings that differ" in page and "data:image/png;base64," in page and "<td>lr</td>" in page
    code, out, _ = run_cli(monkeypatch, capsys, "runs", "compare", a, b, "--json", "--plot", "c.png")
    assert code == 0 and json.loads(out)["settings_that_differ"]["flip"] == [False, True]


def test_compare_refuses_what_it_cannot_read(synthetic_run, tmp_path, monkeypatch, capsys):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "metrics.csv").write_text("x\n")
    for args, message in [
        ([synthetic_run], "two or more run folders"),
        ([synthetic_run, tmp_path / "foreign"], "not a run folder to compare"),
        ([synthetic_run, tmp_path / "missing"], "not a run folder to compare (no run in it)"),
    ]:
        code, _, err = run_cli(monkeypatch, capsys, "runs", "compare", *args)
        assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_a_setting_an_older_run_lacks_differs():
    assert differing_settings([{"lr": 1, "new": True}, {"lr": 1}]) == {"new": [True, "—"]}


def test_a_run_from_before_the_hardware_was_recorded_shows_its_device(synthetic_run, tmp_path, monkeypatch, capsys):
    shutil.copytree(synthetic_run, tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["resolved"]["hardware"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    row = read_row("old", tmp_path / "old")
    assert row.state == "finished" and row.hardware is None and row.device == "cpu"
    code, out, _ = run_cli(monkeypatch, capsys, "runs", tmp_path)
    assert code == 0 and out.splitlines()[1].split()[-3] == "cpu"
