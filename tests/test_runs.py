"""The run folder: its status, the files fmnist owns, reading what training wrote, the claim a
training run holds on it, the files commands derive from its model, and summary.json."""

import json
import shutil

import pytest
from conftest import synthetic_config

from fmnist.core.errors import FmnistError
from fmnist.reporting.evaluate import evaluate
from fmnist.reporting.report import write_report
from fmnist.runtime.modelfile import read_model_info
from fmnist.runtime.runs import DERIVED_FILES, DERIVED_LIST, RunFolder, RunSummary
from fmnist.training import trainer


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
    assert sorted(p.name for p in run.iterdir()) == ["mine.txt"]


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


# --- files derived from the model ---------------------------------------------------------------


def test_a_new_derived_file_goes_with_overwrite_without_being_listed(
    synthetic_run, synthetic_dir, tmp_path, monkeypatch
):
    """A command that writes a file no list names (here a made-up one) still cannot leave it
    stale: write_derived records it, and --overwrite removes it with the old model."""
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    name = "brand_new_figure.svg"
    assert name not in DERIVED_FILES
    assert RunFolder(run).write_derived(name, "<svg/>") == run / name
    RunFolder(run).write_derived(name, "<svg/>")  # written twice, recorded once
    assert (run / DERIVED_LIST).read_text() == name + "\n"
    (run / "mine.svg").write_text("the user's")

    # A replacement that fails before saving a model gives it back with the old run...
    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trainer, "save_model", full_disk)
    with pytest.raises(OSError):
        trainer.train(synthetic_config(synthetic_dir, run, epochs=1, subset=300, overwrite=True))
    assert (run / name).read_text() == "<svg/>" and (run / DERIVED_LIST).is_file()
    monkeypatch.undo()
    # ... one that finishes removes it, and never the user's own file.
    trainer.train(synthetic_config(synthetic_dir, run, epochs=1, subset=300, overwrite=True))
    assert not (run / name).exists() and not (run / DERIVED_LIST).exists()
    assert (run / "mine.svg").read_text() == "the user's"


def test_the_derived_list_trusts_only_whole_plain_names(synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    (run / "a.png").write_bytes(b"a")
    (run / "b.png").write_bytes(b"b")
    (run / "mine.txt").write_text("x")
    # A line cut short by a crash, and names that are not the folder's own derived files.
    (run / ".fmnist-derived").write_text("a.png\n../escape\nconfig.json\n\nb.p")
    folder = RunFolder(run)
    assert folder.recorded_derived() == ["a.png"]
    folder.clear()
    assert sorted(p.name for p in run.iterdir()) == ["b.png", "mine.txt"]
    with pytest.raises(FmnistError, match="one of the run's own files"):
        folder.write_derived("model.safetensors", b"x")
    with pytest.raises(ValueError):
        folder.write_derived("../x.png", b"x")


def test_a_folder_without_a_run_gets_no_derived_list(tmp_path):
    RunFolder(tmp_path).write_derived("test_metrics.json", {"accuracy": float("nan")})
    assert json.loads((tmp_path / "test_metrics.json").read_text()) == {"accuracy": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_metrics.json"]


def test_evaluate_records_what_it_writes(synthetic_run, synthetic_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    evaluate(run, synthetic_dir, verify=False)
    assert RunFolder(run).recorded_derived() == ["test_metrics.json", "confusion_matrix.png"]


# --- the claim ----------------------------------------------------------------------------------


def test_a_claim_gives_the_folder_back_unless_kept(synthetic_run, tmp_path):
    fresh = RunFolder(tmp_path / "fresh")
    with pytest.raises(RuntimeError), fresh.claim():
        assert fresh.running
        fresh.write_config({"model": "seed", "resolved": {}})
        raise RuntimeError("crash before anything worth keeping")
    assert fresh.status == "missing"  # no folder, no lock file

    with pytest.raises(RuntimeError), fresh.claim() as claim:
        fresh.write_config({"model": "seed", "resolved": {}})
        claim.keep()
        raise RuntimeError("crash after the first model")
    assert fresh.status == "unfinished" and not fresh.running

    run = tmp_path / "old"
    shutil.copytree(synthetic_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    old = RunFolder(run)
    with pytest.raises(FmnistError, match="already holds a run"), old.claim():
        pass
    with pytest.raises(KeyboardInterrupt), old.claim(overwrite=True):
        assert old.status == "empty"  # the old run is set aside
        old.write_config({"model": "seed", "resolved": {}})
        raise KeyboardInterrupt
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_claim_to_resume_wants_an_unfinished_run_with_its_state(synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    with pytest.raises(FmnistError, match="finished run"), RunFolder(run).claim(resuming=True):
        pass
    (run / "summary.json").unlink()
    with pytest.raises(FmnistError, match="no resume state"), RunFolder(run).claim(resuming=True):
        pass
    (run / "resume.safetensors").write_bytes(b"")
    with pytest.raises(RuntimeError), RunFolder(run).claim(resuming=True):
        raise RuntimeError("a resumed run keeps its files whatever happens")
    assert RunFolder(run).status == "unfinished"


# --- summary.json ---------------------------------------------------------------------------------


def test_the_summary_is_one_typed_record_with_the_same_keys(synthetic_run, tmp_path):
    summary = RunFolder(synthetic_run).read_summary()
    assert isinstance(summary, RunSummary)
    stored = json.loads((synthetic_run / "summary.json").read_text())
    assert sorted(stored) == sorted(SUMMARY_KEYS) and summary.to_dict() == stored
    info = read_model_info(synthetic_run)
    assert (summary.best_epoch, summary.val_accuracy, summary.temperature) == (
        info.epoch,
        info.val_accuracy,
        info.temperature,
    )
    newer = RunSummary.from_dict({**stored, "gpu_hours": 1.5})  # a key from a newer fmnist is kept
    assert newer.extra == {"gpu_hours": 1.5} and newer.to_dict()["gpu_hours"] == 1.5
    assert RunSummary.from_dict({"model": "seed"}).epochs_run is None  # an older file lacks keys


# What readers of summary.json (report, benchmarks, tests, users' scripts) rely on.
SUMMARY_KEYS = (
    "model",
    "preset",
    "best_epoch",
    "val_accuracy",
    "val_loss",
    "epochs_run",
    "train_seconds",
    "params",
    "flops_per_image",
    "device",
    "precision",
    "threads",
    "processes",
    "temperature",
    "finished",
    "versions",
)


def test_every_file_the_commands_write_into_a_run_goes_with_overwrite(synthetic_run, synthetic_dir, tmp_path):
    """Whatever evaluate and report write (today's names or a future one), the folder owns it,
    and --overwrite leaves only the new run and the user's own files."""
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    (run / "notes.txt").write_text("mine")
    evaluate(run, synthetic_dir, verify=False)
    write_report(run, synthetic_dir, verify=False)
    owned = {p.name for p in RunFolder(run).owned_files()}
    assert {p.name for p in run.iterdir()} - owned == {"notes.txt"}
    assert "report.html" in owned and DERIVED_LIST in owned
    trainer.train(synthetic_config(synthetic_dir, run, epochs=1, subset=300, overwrite=True))
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["config.json", "metrics.csv", "model.safetensors", "notes.txt", "summary.json"]
    )


def test_a_finished_run_leaves_no_lock_file(synthetic_run):
    assert (synthetic_run / "summary.json").is_file()
    assert not (synthetic_run / ".fmnist.lock").exists()
