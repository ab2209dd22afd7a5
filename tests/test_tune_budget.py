"""`fmnist tune --trial-budget`: each trial trains for a time, planned like `fmnist train
--time-budget`, on the synthetic data and a clock that only training steps move (no timing
is asserted: what is tested is that the budget, not epochs, decides each trial's length)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

pytest.importorskip("optuna", reason="an extra of fmnist (tune, track) is not installed")

import optuna  # noqa: E402
from conftest import run_cli  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from test_budget_train import StepClock, step_clock  # noqa: E402,F401  (the fixture, by name)

from fmnist.studies import tune as ftune  # noqa: E402
from fmnist.training.config import TrainConfig  # noqa: E402

SEED_ONLY = {"model": {"choices": ["seed"]}, "batch_size": {"choices": [64, 128]}}


def budget_args(data_dir: Path, out: Path, space: Path, *extra) -> list[str]:
    return [
        "tune",
        *("--data-dir", data_dir, "--no-verify", "--out", out, "--space", space),
        *("--val-size", 200, "--threads", 1, "--pruner", "none", "--study", "b"),
        *extra,
    ]


def space_file(tmp_path: Path, **entries) -> Path:
    path = tmp_path / "space.json"
    path.write_text(json.dumps({**SEED_ONLY, **entries}))
    return path


def test_each_trial_trains_for_the_budget_and_best_config_repeats_its_plan(
    monkeypatch,
    capsys,
    tmp_path,
    synthetic_dir,
    step_clock,  # noqa: F811
):
    clock = StepClock(0.05)
    step_clock.append(clock)
    monkeypatch.setattr(ftune, "Trainer", functools.partial(ftune.Trainer, clock=clock))
    out = tmp_path / "s"
    code, stdout, err = run_cli(
        monkeypatch,
        capsys,
        *budget_args(synthetic_dir, out, space_file(tmp_path), "--trials", 2, "--trial-budget", "6s"),
    )
    assert code in (0, None), err
    study = optuna.load_study(study_name="b", storage=ftune.open_storage(None, out))
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    assert "epochs" not in trials[0].params  # the budget decides the length, not the sampler
    for t in trials:
        config = json.loads((out / "trials" / f"{t.number:04d}" / "config.json").read_text())
        assert config["time_budget"] == "6s" and config["resolved"]["time_budget_seconds"] == 6.0
        plan = config["plan"]
        # a batch of 64 makes twice the steps of 128 in the same time: each trial is planned alone
        assert plan["steps"] > plan["steps_per_epoch"]
        # reported at tenths of the plan, the last one at its end
        assert set(t.intermediate_values) <= set(range(1, 11)) and 10 in t.intermediate_values
        assert t.user_attrs["config"]["plan"] == plan
    best = json.loads((out / "best_config.json").read_text())
    assert best["plan"] and best["time_budget"] == "6s"
    # `fmnist train --config best_config.json` repeats that trial step for step: the plan is kept
    code, stdout, err = run_cli(monkeypatch, capsys, "train", "--config", out / "best_config.json", "--show-config")
    assert code in (0, None), err
    assert json.loads(stdout)["plan"] == best["plan"]


def test_reports_at_tenths_of_the_plan():
    class Trial:
        def __init__(self):
            self.reports: list[tuple[float, int]] = []

        def report(self, value, step):
            self.reports.append((value, step))

        def should_prune(self):
            return False

    trial = Trial()
    cb = ftune.ReportToOptuna(trial, epochs=3)
    cb.on_train_start(TrainConfig(time_budget="1m", plan={"steps": 100, "steps_per_epoch": 30}), None, 0)
    for epoch in range(1, 5):  # 30, 60, 90, then the 10 steps left
        cb.on_epoch_end({"epoch": epoch, "val_accuracy": epoch / 10})
    assert [s for _, s in trial.reports] == [3, 6, 9, 10]
    # without a budget, at the epoch, as before
    trial = Trial()
    cb = ftune.ReportToOptuna(trial, epochs=3)
    cb.on_train_start(TrainConfig(), None, 0)
    cb.on_epoch_end({"epoch": 1, "val_accuracy": 0.5})
    assert trial.reports == [(0.5, 1)]


@pytest.mark.parametrize(
    "extra, entries, message",
    [
        (("--trial-budget", "30s", "--epochs-per-trial", 2), {}, "give one"),
        (("--trial-budget", "soon"), {}, "--trial-budget 'soon': not a duration"),
        (("--trial-budget", "-5s"), {}, "--trial-budget"),
        (("--trial-budget", "30s"), {"epochs": {"low": 1, "high": 2}}, "leave epochs out of the space file"),
    ],
)
def test_bad_trial_budget_is_one_error_line(monkeypatch, capsys, tmp_path, synthetic_dir, extra, entries, message):
    space = space_file(tmp_path, **entries)
    code, _, err = run_cli(monkeypatch, capsys, *budget_args(synthetic_dir, tmp_path / "s", space, *extra))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "s" / "trials").exists()


def test_a_study_of_epochs_is_not_continued_with_a_budget(monkeypatch, capsys, tmp_path, synthetic_dir):
    space = space_file(tmp_path)
    out = tmp_path / "s"
    code, _, err = run_cli(monkeypatch, capsys, *budget_args(synthetic_dir, out, space, "--trials", 1, "--subset", 400))
    assert code in (0, None), err
    code, _, err = run_cli(monkeypatch, capsys, *budget_args(synthetic_dir, out, space, "--trial-budget", "30s"))
    assert code == 2 and "different search space" in err and "--trial-budget" in err
