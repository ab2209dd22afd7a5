"""Every JSON file fmnist reads back from a run or study folder: damaged (cut short, emptied,
made a list, a value of the wrong type or out of range) is one `error:` line naming the file,
in the API and in the command that reads it; edited but still valid keeps working."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

from fmnist.core.errors import FmnistError
from fmnist.runtime.runs import RunFolder
from fmnist.training.config import read_run_config

TEST_METRICS = {
    "test_accuracy": 0.81,
    "test_loss": 0.52,
    "test_images": 500,
    "errors": 95,
    "macro_f1": 0.8,
    "ece": 0.03,
    "ece_uncalibrated": 0.05,
    "temperature": 1.2,
    "calibrated": True,
    "tta": False,
    "model": "seed",
    "val_accuracy": 0.8,
    "per_class": [],
    "confusion_matrix": [],
    "class_names": [],
}
# file -> (a wrong type, an impossible value), each as (key, value)
BAD_VALUES = {
    "config.json": (("epochs", "three"), ("lr", -1.0)),
    "summary.json": (("val_accuracy", "high"), ("val_accuracy", 1.7)),
    "test_metrics.json": (("test_images", [500]), ("test_accuracy", -0.2)),
}


@pytest.fixture
def run(synthetic_run, tmp_path) -> Path:
    """A finished run with a test_metrics.json, written after the model (so it is current)."""
    out = tmp_path / "run"
    shutil.copytree(synthetic_run, out)
    (out / "test_metrics.json").write_text(json.dumps(TEST_METRICS))
    return out


def damaged(path: Path, how: str) -> None:
    text = path.read_text()
    value = json.loads(text)
    if how == "truncated":
        path.write_text(text[: len(text) // 2])
    elif how == "empty":
        path.write_text("")
    elif how == "list":
        path.write_text(json.dumps(list(value.items())))
    else:
        key, bad = BAD_VALUES[path.name][0 if how == "wrong type" else 1]
        path.write_text(json.dumps({**value, key: bad}))


HOWS = ["truncated", "empty", "list", "wrong type", "impossible"]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", list(BAD_VALUES))
def test_a_damaged_run_file_is_one_error_naming_it(run, name, how):
    damaged(run / name, how)
    with pytest.raises(FmnistError) as e:
        # config.json's settings are checked by the training schema, one layer up
        read_run_config(RunFolder(run)) if name == "config.json" else RunFolder(run).read_json(name)
    message = str(e.value)
    assert message.startswith(f"{run / name}: ") and "\n" not in message
    if how in ("wrong type", "impossible"):
        assert repr(BAD_VALUES[name][0 if how == "wrong type" else 1][0]) in message  # names the key


@pytest.mark.parametrize("how", HOWS)
def test_calibrate_refuses_a_damaged_config(run, how, monkeypatch, capsys):
    damaged(run / "config.json", how)
    code, _, err = run_cli(monkeypatch, capsys, "calibrate", run)
    assert code == 2 and err.startswith(f"error: {run / 'config.json'}: ") and err.count("\n") == 1


@pytest.mark.parametrize("how", HOWS)
def test_report_refuses_a_damaged_summary_before_evaluating(run, how, monkeypatch, capsys, tmp_path):
    damaged(run / "summary.json", how)
    # No data folder: the summary is read first, so the test set is never needed.
    code, _, err = run_cli(monkeypatch, capsys, "report", run, "--data-dir", tmp_path / "no-data")
    assert code == 2 and err.startswith(f"error: {run / 'summary.json'}: ") and err.count("\n") == 1
    assert not (run / "report.html").exists()


@pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="the serve extra is not installed")
@pytest.mark.parametrize("how", HOWS)
def test_the_server_does_not_start_on_damaged_test_metrics(run, how):
    from fmnist.serve.app import create_app
    from fmnist.serve.settings import ServeSettings

    damaged(run / "test_metrics.json", how)
    with pytest.raises(FmnistError, match="test_metrics.json: .*fmnist evaluate"):
        create_app(run, ServeSettings())


def test_valid_edits_keep_working(run):
    config = json.loads((run / "config.json").read_text())
    edited = {"epochs": 7, **{k: v for k, v in reversed(list(config.items())) if k != "epochs"}}
    (run / "config.json").write_text(json.dumps(edited, indent=4))
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "note": "mine", "val_accuracy": 0.5}))
    folder = RunFolder(run)
    assert folder.read_config()["epochs"] == 7 and folder.read_summary().val_accuracy == 0.5
    assert folder.status == "finished"


@pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="the tune extra is not installed")
@pytest.mark.parametrize(
    "content",
    [b'{"op_code": 0, "worker_id": "w"\xff}\n{}\n', b"[1, 2]\n{}\n", b'{"op_code": 99}\n'],
    ids=["bytes", "list", "wrong op"],
)
def test_a_damaged_study_journal_is_one_error_line(tmp_path, content, monkeypatch, capsys):
    (tmp_path / "journal.log").write_bytes(content)
    code, _, err = run_cli(monkeypatch, capsys, "tune", "--study", "s", "--show", "--out", tmp_path)
    assert code == 2 and err.startswith(f"error: {tmp_path / 'journal.log'}")
    assert " is damaged: line 1 " in err or "Optuna cannot replay this journal" in err
    assert err.count("\n") == 1
