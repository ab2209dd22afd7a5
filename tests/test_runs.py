"""The run folder: its status, the files fmnist owns, and reading what training wrote."""

import json
import shutil

import pytest

from fmnist.core.errors import FmnistError
from fmnist.runtime.runs import DERIVED_FILES, RunFolder


def test_status_follows_the_files(synthetic_run, tmp_path):
    assert RunFolder(tmp_path / "nothing").status == "missing"
    assert RunFolder(tmp_path).status == "empty"
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    folder = RunFolder(run)
    assert folder.status == "finished" and folder.is_ours() and not folder.running
    (run / "summary.json").unlink()
    assert folder.status == "unfinished"
    (run / "config.json").write_text('{"lr": 1}')  # the user's own file
    assert folder.status == "foreign" and not folder.is_ours()
    (run / "config.json").unlink()
    assert folder.status == "foreign"  # a model without the config that says who wrote it


def test_a_config_from_fmnist_0_1_is_recognised_by_its_model_file(synthetic_run, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(synthetic_run, run)
    config = json.loads((run / "config.json").read_text())
    del config["format"]
    (run / "config.json").write_text(json.dumps(config))
    assert RunFolder(run).status == "finished"


def test_owned_files_are_only_fmnists(synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    (run / "mine.txt").write_text("x")
    (run / DERIVED_FILES[0]).write_text("{}")
    names = {p.name for p in RunFolder(run).owned_files()}
    assert names == {"config.json", "metrics.csv", "model.safetensors", "summary.json", DERIVED_FILES[0]}
    RunFolder(run).clear()
    assert sorted(p.name for p in run.iterdir()) == [".fmnist.lock", "mine.txt"]


@pytest.mark.parametrize(
    "text,match",
    [
        ("epoch,train_loss\n1,0.5\n", "lacks one of the columns"),
        ("epoch,train_loss,train_accuracy,val_loss,val_accuracy\n1,0.5,x,0.4,0.9\n", "line 2 is not all numbers"),
        ("epoch,train_loss,train_accuracy,val_loss,val_accuracy\n1,0.5\n", "not all numbers"),
    ],
)
def test_damaged_metrics_are_one_error(tmp_path, text, match):
    (tmp_path / "metrics.csv").write_text(text)
    with pytest.raises(FmnistError, match=match):
        RunFolder(tmp_path).read_metrics()


def test_metrics_round_trip(tmp_path):
    rows = [{"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.4, "val_accuracy": 0.85}]
    RunFolder(tmp_path).write_metrics(rows)
    assert RunFolder(tmp_path).read_metrics() == rows
    (tmp_path / "summary.json").write_text("[1, 2]")
    with pytest.raises(FmnistError, match="expected a JSON object"):
        RunFolder(tmp_path).read_summary()
