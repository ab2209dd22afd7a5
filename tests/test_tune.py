"""fmnist tune: the search space file, storages (journal file and PostgreSQL), several
workers on one study, Ctrl-C, the results, and one error line for each user mistake.
Every search trains the seed CNN for an epoch or two on the synthetic data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# An sdist installed with only [dev] runs the other tests; these need their extra.
pytest.importorskip("optuna", reason="an extra of fmnist (tune, track) is not installed")

import optuna  # noqa: E402
from conftest import run_cli  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from fmnist.core.errors import TrainingDiverged  # noqa: E402
from fmnist.studies import tune as ftune  # noqa: E402
from fmnist.studies.tune_results import importances  # noqa: E402
from fmnist.training.config import TrainConfig  # noqa: E402
from fmnist.training.trainer import Trainer  # noqa: E402

SEED_ONLY = {"model": {"choices": ["seed"]}, "batch_size": {"choices": [128, 256]}}


def space_file(tmp_path: Path, name: str = "space.json", **entries) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({**SEED_ONLY, **entries}))
    return path


def tune_args(data_dir: Path, out: Path, space: Path, *extra) -> list[str]:
    return [
        "tune",
        *("--data-dir", data_dir, "--no-verify", "--out", out, "--space", space),
        *("--val-size", 200, "--epochs-per-trial", 2, "--threads", 1, "--pruner", "median"),
        *extra,
    ]


# --- the search space ---------------------------------------------------------------------


def test_default_space_makes_valid_configs():
    base = ftune.base_config(ftune.TuneOptions(study="x", epochs_per_trial=4))
    space = ftune.load_space(None, 4, base)
    assert space["epochs"].high == 4
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        values = ftune.suggest(study.ask(), space)
        ftune.trial_config(base, values, Path("x")).validate()


@pytest.mark.parametrize(
    "entries, message",
    [
        ({"nonsense": {"low": 1, "high": 2}}, "unknown setting 'nonsense'"),
        ({"lr": {"low": 0.5, "high": 0.1}}, "low 0.5 is above high 0.1"),
        ({"lr": {"low": 0, "high": 0.1, "log": True}}, "a log range needs low > 0"),
        ({"erase": {"low": 0, "high": 2.0}}, "'erase' must be <= 1"),
        ({"model": {"choices": ["wrn"]}}, "'model' may be seed or resnet"),
        ({"epochs": {"low": 1, "high": 9}}, "above the budget"),
        ({"lr": {"low": 0.1, "high": 0.5, "step": 2}}, "unknown keys"),
    ],
)
def test_bad_space_file_is_one_error_line(monkeypatch, capsys, tmp_path, synthetic_dir, entries, message):
    space = space_file(tmp_path, **entries)
    code, out, err = run_cli(monkeypatch, capsys, *tune_args(synthetic_dir, tmp_path / "s", space, "--study", "s"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: --space") and message in err, err
    assert not (tmp_path / "s").exists()


def test_space_file_in_toml_narrows_and_pins(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('flip = true\nlr = { low = 0.05, high = 0.2, log = true }\nmodel = { choices = ["resnet"] }\n')
    space = ftune.load_space(path, 3, ftune.base_config(ftune.TuneOptions(study="x")))
    assert space["flip"] == ftune.Dim("fixed", fixed=True)
    assert (space["lr"].low, space["lr"].high, space["lr"].log) == (0.05, 0.2, True)
    assert space["model"].choices == ("resnet",)


# --- a search, its results, and the best config -------------------------------------------------


@pytest.mark.slow  # a whole search in this process: seconds of training
def test_search_writes_results_and_best_config_trains(monkeypatch, capsys, tmp_path, synthetic_dir):
    ftrain = sys.modules["fmnist.training.data"]  # where training reads its images
    real_load = ftrain.load_split

    def train_split_only(split, *a, **k):
        assert split == "train", "a search must never read the test set"
        return real_load(split, *a, **k)

    monkeypatch.setattr(ftrain, "load_split", train_split_only)
    out = tmp_path / "study"
    space = space_file(tmp_path, epochs={"low": 1, "high": 1})
    code, stdout, err = run_cli(
        monkeypatch, capsys, *tune_args(synthetic_dir, out, space, "--study", "s", "--trials", 3)
    )
    assert code == 0, err
    assert stdout.count("trial ") >= 3 and "COMPLETE" in stdout
    for name in ("best_config.json", "summary.md", "history.png", "journal.log"):
        assert (out / name).is_file(), name
    summary = (out / "summary.md").read_text()
    assert "| trial | state | val acc" in summary and "Parameter importances" in summary
    assert (out / "history.png").read_bytes()[:4] == b"\x89PNG"

    best = json.loads((out / "best_config.json").read_text())
    assert best["model"] == "seed" and best["out"] is None
    code, stdout, err = run_cli(
        monkeypatch, capsys, "train", "--config", out / "best_config.json", "--out", tmp_path / "best", "--quiet"
    )
    assert code == 0, err
    trained = json.loads((tmp_path / "best" / "config.json").read_text())
    assert trained["lr"] == best["lr"] and trained["batch_size"] == best["batch_size"]

    # --show prints the same table; running again continues the study up to --trials in total
    code, stdout, _ = run_cli(monkeypatch, capsys, "tune", "--study", "s", "--show", "--out", out)
    assert code == 0 and stdout.count("COMPLETE") + stdout.count("PRUNED") == 3
    code, stdout, err = run_cli(
        monkeypatch, capsys, *tune_args(synthetic_dir, out, space, "--study", "s", "--trials", 4)
    )
    assert code == 0, err
    study = optuna.load_study(study_name="s", storage=ftune.open_storage(None, out))
    assert len(study.trials) == 4


def test_too_few_trials_for_importances():
    study = optuna.create_study(direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 0.1}, distributions={"lr": optuna.distributions.FloatDistribution(0.01, 1)}, value=0.5
        )
    )
    assert "not enough completed trials" in importances(study)


@pytest.mark.slow  # a whole search in this process: seconds of training
def test_ctrl_c_stops_after_the_current_trial(monkeypatch, capsys, tmp_path, synthetic_dir):
    report = ftune.ReportToOptuna.on_epoch_end

    def interrupt_once(self, row):
        report(self, row)
        if self.trial.number == 0 and row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(ftune.ReportToOptuna, "on_epoch_end", interrupt_once)
    out = tmp_path / "study"
    space = space_file(tmp_path, epochs={"low": 2, "high": 2})
    code, stdout, err = run_cli(
        monkeypatch, capsys, *tune_args(synthetic_dir, out, space, "--study", "s", "--trials", 5)
    )
    assert code == 0, err
    assert "stopping after this trial" in stdout and "Continue with the same command" in stdout
    study = optuna.load_study(study_name="s", storage=ftune.open_storage(None, out))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert study.trials[0].user_attrs["epochs_run"] == 2  # the trial ran to its end
    assert (out / "best_config.json").is_file()


@pytest.mark.slow  # a whole search in this process: seconds of training
def test_a_diverging_trial_is_pruned_and_the_search_goes_on(monkeypatch, capsys, tmp_path, synthetic_dir):
    """A learning rate that makes the loss NaN is a bad result, not the end of the study."""
    real_epoch = Trainer.train_epoch

    def diverge_in_trial_0(self):
        if Path(self.config.out).name == "0000":
            raise TrainingDiverged("the training loss became nan in epoch 1: training diverged")
        return real_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", diverge_in_trial_0)
    out = tmp_path / "study"
    space = space_file(tmp_path, epochs={"low": 1, "high": 1})
    code, stdout, err = run_cli(
        monkeypatch, capsys, *tune_args(synthetic_dir, out, space, "--study", "s", "--trials", 3)
    )
    assert code == 0, err
    assert "diverged" in stdout
    study = optuna.load_study(study_name="s", storage=ftune.open_storage(None, out))
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[0].user_attrs["diverged"] is True
    assert (out / "best_config.json").is_file()


# --- storages and several workers ----------------------------------------------------------------


def _workers(data_dir: Path, out: Path, space: Path, trials: int, storage: str | None) -> None:
    args = [sys.executable, "-m", "fmnist", *map(str, tune_args(data_dir, out, space, "--study", "w"))]
    args += ["--trials", str(trials)] + (["--storage", storage] if storage else [])
    env = {**os.environ, "FMNIST_NO_DOWNLOAD": "1"}
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        assert "trial " in stdout, "each worker ran trials"


def _check_study(study: optuna.Study, trials: int) -> None:
    # --trials counts the whole study; two workers can each start one last trial at once.
    assert trials <= len(study.trials) <= trials + 1
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == len(params), "no two trials with the same values"
    outs = [t.user_attrs["config"]["out"] for t in study.trials]
    assert outs == [None] * len(outs)


@pytest.mark.slow
def test_two_workers_share_a_journal_study(tmp_path, synthetic_dir):
    out, space = tmp_path / "study", space_file(tmp_path, epochs={"low": 1, "high": 2})
    _workers(synthetic_dir, out, space, 4, None)
    _check_study(optuna.load_study(study_name="w", storage=ftune.open_storage(None, out)), 4)
    assert sorted(p.name for p in (out / "trials").iterdir()) <= [f"{i:04d}" for i in range(5)]


@pytest.mark.slow
def test_two_workers_share_a_postgres_study(tmp_path, synthetic_dir, pg_url):
    out, space = tmp_path / "study", space_file(tmp_path, epochs={"low": 1, "high": 2})
    name = f"w{os.getpid()}"
    storage = ftune.open_storage(pg_url, out)
    with pytest.raises(KeyError):
        optuna.load_study(study_name=name, storage=storage)
    args = [sys.executable, "-m", "fmnist", *map(str, tune_args(synthetic_dir, out, space, "--study", name))]
    args += ["--trials", "4", "--storage", pg_url]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
    _check_study(optuna.load_study(study_name=name, storage=storage), 4)


# --- one error line each -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["nonsense", "nosuchdb://x/y", "postgresql://fmnist:secret@127.0.0.1:1/fmnist"],
    ids=["not-a-url", "unknown-dialect", "unreachable"],
)
def test_bad_storage_is_one_error_line(monkeypatch, capsys, tmp_path, synthetic_dir, url):
    space = space_file(tmp_path)
    code, out, err = run_cli(
        monkeypatch, capsys, *tune_args(synthetic_dir, tmp_path / "s", space, "--study", "s", "--storage", url)
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: --storage"), err
    assert "secret" not in err


def test_show_of_a_missing_study_is_one_error_line(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "tune", "--study", "nope", "--show", "--out", tmp_path / "x")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: no study journal"), err


def _mismatch(monkeypatch, capsys, tmp_path, data_dir, *storage):
    out = tmp_path / "s"
    first, second = space_file(tmp_path, "a.json"), space_file(tmp_path, "b.json", lr={"low": 0.1, "high": 0.2})
    name = f"m{os.getpid()}"
    # --timeout 0: create the study, run no trial
    code, _, err = run_cli(
        monkeypatch, capsys, *tune_args(data_dir, out, first, "--study", name, "--timeout", 0, *storage)
    )
    assert code == 0, err
    code, _, err = run_cli(
        monkeypatch, capsys, *tune_args(data_dir, out, second, "--study", name, "--timeout", 0, *storage)
    )
    assert code == 2
    assert err.count("\n") == 1 and "exists with a different search space" in err, err


def test_study_with_another_space_is_one_error_line(monkeypatch, capsys, tmp_path, synthetic_dir):
    _mismatch(monkeypatch, capsys, tmp_path, synthetic_dir)


def test_postgres_study_with_another_space_is_one_error_line(monkeypatch, capsys, tmp_path, synthetic_dir, pg_url):
    _mismatch(monkeypatch, capsys, tmp_path, synthetic_dir, "--storage", pg_url)


def test_best_config_is_a_train_config(tmp_path):
    cfg = ftune.trial_config(TrainConfig(), {"model": "seed", "model_args": {}, "lr": 0.3}, tmp_path)
    settings = ftune.settings_of(cfg)
    assert settings["out"] is None and settings["overwrite"] is False
    TrainConfig.from_mapping(settings, "best_config.json").validate()
