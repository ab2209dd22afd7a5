"""TensorBoard event files, read back with TensorBoard's own reader; a tracker that fails
mid-run; missing extras; the options `fmnist train` gets from the config fields."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings

import pytest
from conftest import run_cli, synthetic_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fmnist import tracking
from fmnist.cli.options import with_optional_values
from fmnist.core.errors import FmnistError
from fmnist.runtime.runs import RunFolder
from fmnist.tracking.tensorboard import TensorBoardLogger, log_evaluation
from fmnist.training.config import TrainConfig
from fmnist.training.trainer import Callback, Interrupted


def events(logdir) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


class _FailingWriter:
    """Wraps tensorboardX's writer; its writes fail in epoch 2, as on a full disk."""

    def __init__(self, writer):
        self.writer = writer

    def __getattr__(self, name):
        return getattr(self.writer, name)

    def add_scalar(self, tag, value, step=None):
        if step == 2 and not tag.startswith("hparams/"):
            raise OSError(28, "No space left on device")
        self.writer.add_scalar(tag, value, step)


class _BrokenDiskLogger(TensorBoardLogger):
    def start(self, config, info, start_epoch):
        super().start(config, info, start_epoch)
        self.writer = _FailingWriter(self.writer)


@pytest.fixture(scope="module")
def logged(synthetic_dir, tmp_path_factory):
    """A three-epoch run with --tensorboard, beside a second TensorBoard logger whose disk fails in epoch 2."""
    out = tmp_path_factory.mktemp("tb") / "run"
    broken = out.parent / "broken"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = tracking.train(
            synthetic_config(synthetic_dir, out, epochs=3, subset=512, tensorboard=True), [_BrokenDiskLogger(broken)]
        )
    return run, [str(w.message) for w in caught if "checksums" not in str(w.message)]


def test_event_files_hold_the_epochs_and_the_hparams(logged):
    run, _ = logged
    acc = events(run.out_dir / "tensorboard")
    history = RunFolder(run.out_dir).read_metrics()
    assert [s for s, _ in scalars(acc, "loss/train")] == [1, 2, 3]
    # metrics.csv keeps 6 significant digits, an event file a float32
    for tag, key in (("accuracy/validation", "val_accuracy"), ("loss/validation", "val_loss")):
        assert [v for _, v in scalars(acc, tag)] == pytest.approx([r[key] for r in history], rel=1e-5)
    assert [v for _, v in scalars(acc, "learning_rate")] == pytest.approx([r["lr"] for r in history], rel=1e-5)
    assert all(v > 0 for _, v in scalars(acc, "images_per_second"))
    assert scalars(acc, "hparams/best_val_accuracy") == [(3, pytest.approx(run.best["val_accuracy"]))]
    hparams = acc.PluginTagToContent("hparams")
    assert set(hparams) == {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    assert b"batch_size" in hparams["_hparams_/session_start_info"] and b"lr" in hparams["_hparams_/experiment"]


def test_a_tracker_that_fails_mid_run_costs_a_warning_not_the_run(logged):
    run, messages = logged
    assert RunFolder(run.out_dir).status == "finished" and len(run.history) == 3
    assert messages == [
        "TensorBoard: epoch 2's metrics not logged (OSError: [Errno 28] No space left on device); "
        "the run folder is complete"
    ]
    acc = events(run.out_dir.parent / "broken")
    assert [s for s, _ in scalars(acc, "loss/train")] == [1, 3]


def test_evaluation_adds_test_metrics_and_the_confusion_matrix(logged, tmp_path):
    run, _ = logged
    copy = tmp_path / "run"
    shutil.copytree(run.out_dir, copy)
    assert log_evaluation(copy) is None  # not evaluated yet: nothing to add
    cm = [[10 if i == j else 1 for j in range(10)] for i in range(10)]
    (copy / "test_metrics.json").write_text(
        json.dumps({"test_accuracy": 0.9, "test_images": 10_000, "ece": 0.02, "confusion_matrix": cm})
    )
    assert log_evaluation(copy) == copy / "tensorboard"
    acc = events(copy / "tensorboard")
    assert scalars(acc, "test/accuracy") == [(3, pytest.approx(0.9))]
    assert scalars(acc, "hparams/test_accuracy") == [(3, pytest.approx(0.9))]  # the HParams view's too
    (image,) = acc.Images("confusion_matrix/test")
    assert image.width > 300 and image.encoded_image_string[:4] == b"\x89PNG"


def test_training_ends_with_the_validation_confusion_matrix(logged):
    run, _ = logged
    assert sum(map(sum, run.val_confusion)) == run.info.val_images
    (image,) = events(run.out_dir / "tensorboard").Images("confusion_matrix/validation")
    assert image.step == 3 and image.encoded_image_string[:4] == b"\x89PNG"


def test_evaluate_writes_into_the_runs_event_files_without_training_code(logged, tmp_path):
    run, _ = logged
    copy = tmp_path / "run"
    shutil.copytree(run.out_dir, copy)
    code = (
        "import sys, numpy as np\n"
        "from fmnist.reporting.evaluate import EvalResult, save_evaluation\n"
        "cm = np.eye(10, dtype=np.int64) * 5\n"
        "r = EvalResult.__new__(EvalResult)\n"
        "r.to_dict = lambda: {'test_accuracy': 1.0, 'test_images': 50, 'ece': 0.0, 'confusion_matrix': cm.tolist()}\n"
        "r.confusion = cm\n"
        f"save_evaluation({str(copy)!r}, r)\n"
        "assert 'fmnist.training.trainer' not in sys.modules and 'fmnist.tracking' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert events(copy / "tensorboard").Images("confusion_matrix/test")


class _StopAfterFirstEpoch(Callback):
    def on_epoch_end(self, row):
        os.kill(os.getpid(), signal.SIGINT)


def test_resume_and_overwrite_keep_one_curve(synthetic_dir, tmp_path):
    out = tmp_path / "run"
    config = synthetic_config(synthetic_dir, out, subset=256, epochs=3, tensorboard=True)
    with pytest.raises(Interrupted):
        tracking.train(config, [_StopAfterFirstEpoch()])
    tracking.resume(out)
    assert [s for s, _ in scalars(events(out / "tensorboard"), "loss/train")] == [1, 2, 3]
    config.overwrite, config.epochs = True, 1
    tracking.train(config)
    assert len(list((out / "tensorboard").iterdir())) == 1  # the replaced run's events went with it
    assert [s for s, _ in scalars(events(out / "tensorboard"), "loss/train")] == [1]
    config.tensorboard = False
    tracking.train(config)  # a new run without --tensorboard: the old run's curves go with the old run
    assert not (out / "tensorboard").exists() and not (out / ".fmnist-replaced").exists()


def test_a_missing_extra_is_one_line_saying_how_to_install_it(monkeypatch, tmp_path, synthetic_dir):
    monkeypatch.chdir(tmp_path)  # were MLflow found after all, its default store would land here
    # The submodules too: another test in this process may have imported them already.
    for name in ("tensorboardX", "mlflow", "mlflow.tracking"):
        monkeypatch.setitem(sys.modules, name, None)
    for field, value in (("tensorboard", True), ("mlflow", "default")):
        config = synthetic_config(synthetic_dir, tmp_path / "run", **{field: value})
        with pytest.raises(FmnistError, match=r"needs (tensorboardX|mlflow): pip install 'fmnist\[track\]'"):
            tracking.train(config)
        assert not (tmp_path / "run").exists()  # refused before the run folder was claimed


def test_train_help_lists_the_tracking_options(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "train", "--help")
    assert code == 0 and "--tensorboard" in out and "--mlflow" in out and "FMNIST_MLFLOW_URI" in out


def test_mlflow_alone_means_the_default_store(monkeypatch, capsys):
    for args, expected in (
        (("--mlflow", "--epochs", "2"), "default"),
        (("--epochs", "2", "--mlflow"), "default"),
        (("--mlflow", "sqlite:///team.db"), "sqlite:///team.db"),
    ):
        code, out, _ = run_cli(monkeypatch, capsys, "train", *args, "--show-config")
        assert code == 0 and json.loads(out)["mlflow"] == expected, args
    assert tracking.mlflow_log.resolve_uri("default") in ("sqlite:///mlruns.db", os.environ.get("FMNIST_MLFLOW_URI"))


def test_an_optional_value_is_put_in_only_where_it_was_left_out():
    optional = {"--mlflow": "default"}
    assert with_optional_values(["--mlflow"], optional) == ["--mlflow", "default"]
    assert with_optional_values(["--mlflow", "-q"], optional) == ["--mlflow", "default", "-q"]
    assert with_optional_values(["--mlflow", "x.db", "-q"], optional) == ["--mlflow", "x.db", "-q"]
    assert with_optional_values(["--", "--mlflow"], optional) == ["--", "--mlflow"]


def test_a_run_from_before_the_tracking_settings_resumes(synthetic_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        tracking.train(synthetic_config(synthetic_dir, out, subset=256, epochs=2), [_StopAfterFirstEpoch()])
    config = json.loads((out / "config.json").read_text())
    old = {k: v for k, v in config.items() if k not in ("tensorboard", "mlflow")}
    (out / "config.json").write_text(json.dumps(old))
    assert TrainConfig.from_mapping(old).tensorboard is False  # what --config RUN/config.json reads too
    with pytest.raises(FmnistError, match="unknown"):
        TrainConfig.from_mapping({**old, "tensorbored": True})
    run = tracking.resume(out)
    assert len(run.history) == 2 and RunFolder(out).status == "finished"
