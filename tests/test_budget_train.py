"""`--time-budget` in the engine, on synthetic data and an injected clock that each training
step advances by a fixed amount: what is tested is the plan and the schedule, never a timing."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import run_cli, synthetic_config
from test_train import StopAt

from fmnist.core.errors import FmnistError
from fmnist.runtime.runs import RunFolder
from fmnist.training import learner as flearner
from fmnist.training.budget import safety
from fmnist.training.config import TrainConfig
from fmnist.training.trainer import Interrupted, Trainer, resume, train

RECIPE = dict(model="seed", optimizer="sgd", schedule="onecycle", lr=0.05, batch_size=64, flip=True, epochs=1)


class StepClock:
    """A clock that only training steps move: each one costs ``dt`` fake seconds; after
    ``slow_after`` steps, ``slow_dt``."""

    def __init__(self, dt: float, slow_after: int | None = None, slow_dt: float | None = None):
        self.t, self.steps, self.dt, self.slow_after, self.slow_dt = 1000.0, 0, dt, slow_after, slow_dt

    def __call__(self) -> float:
        return self.t

    def tick(self) -> None:
        self.steps += 1
        slow = self.slow_after is not None and self.steps > self.slow_after
        self.t += self.slow_dt if slow else self.dt


@pytest.fixture
def step_clock(monkeypatch):
    clocks: list[StepClock] = []
    real_step = flearner.Learner.step

    def step(self, *args, **kwargs):
        if clocks:
            clocks[-1].tick()
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(flearner.Learner, "step", step)
    return clocks


def rows(run) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def budget_run(synthetic_dir, out, clock, budget="5s", **more):
    cfg = synthetic_config(synthetic_dir, out, **{**RECIPE, "time_budget": budget, **more})
    return Trainer(cfg, clock=clock, started=clock()).run()


def test_the_plan_fills_the_budget_and_the_schedule_ends_on_its_last_step(synthetic_dir, tmp_path, step_clock):
    clock = StepClock(0.02)
    step_clock.append(clock)
    run = budget_run(synthetic_dir, tmp_path / "b", clock)
    config = json.loads((tmp_path / "b/config.json").read_text())
    plan = config["plan"]
    assert plan == config["resolved"]["plan"]
    # On this clock validation takes no time against the probe's reservation of 0.2 s an epoch
    # (the metrics and model writes), so the plan may only have grown into the time it freed.
    total = plan["changes"][-1][1] if plan["changes"] else plan["steps"]
    assert all(t >= plan["steps"] for _, t in plan["changes"])
    assert config["resolved"]["time_budget_seconds"] == 5.0
    assert config["resolved"]["probe"]["step_seconds"] == pytest.approx(0.02)
    spe = plan["steps_per_epoch"]
    assert plan["steps"] > 2 * spe  # 5 fake seconds buy a few epochs at 20 ms a step
    # every planned step ran (probe steps included in the clock), and no more
    probe_steps = clock.steps - total
    assert 0 < probe_steps <= 62
    assert len(run.history) == -(-total // spe)
    # the first plan fits in the budget by the probe's own measure
    costs = config["resolved"]["probe"]
    first = plan["steps"]
    spent = first * costs["step_seconds"] + -(-first // spe) * costs["validation_seconds"] + costs["final_seconds"]
    assert probe_steps * 0.02 + spent <= 5.0 - safety(5.0) + 1e-9
    # and so does what ran: every step on the clock, the final work as reserved
    assert clock.t - 1000.0 + costs["final_seconds"] <= 5.0
    # onecycle decays linearly to zero exactly on the last planned step
    assert float(rows(tmp_path / "b")[-1]["lr"]) == 0.0
    assert float(rows(tmp_path / "b")[-2]["lr"]) > 0.0


def test_the_recorded_plan_repeats_the_run_bit_for_bit_without_a_budget(synthetic_dir, tmp_path, step_clock):
    clock = StepClock(0.02)
    step_clock.append(clock)
    budget_run(synthetic_dir, tmp_path / "b", clock)
    step_clock.clear()
    stored = json.loads((tmp_path / "b/config.json").read_text())
    again = TrainConfig.from_mapping({**stored, "out": str(tmp_path / "again")})
    assert again.time_budget == "5s" and again.plan  # the plan wins: no probe, no deadline
    train(again)
    assert (tmp_path / "again/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()
    losses = lambda run: [(r["train_loss"], r["val_loss"], r["lr"]) for r in rows(run)]  # noqa: E731
    assert losses(tmp_path / "again") == losses(tmp_path / "b")


def test_a_slower_machine_shortens_the_plan_the_deadline_holds_and_the_change_is_recorded(
    synthetic_dir, tmp_path, step_clock
):
    clock = StepClock(0.02, slow_after=92, slow_dt=0.06)  # the probe's 52 steps, then 40 of the run's
    step_clock.append(clock)
    with pytest.warns(UserWarning, match="slowed down.*shortened from"):
        run = budget_run(synthetic_dir, tmp_path / "slow", clock)
    plan = json.loads((tmp_path / "slow/config.json").read_text())["plan"]
    assert plan["changes"], "a slower clock must shorten the plan"
    total = plan["changes"][-1][1]
    assert total < plan["steps"]
    assert len(run.history) == -(-total // plan["steps_per_epoch"])
    assert float(rows(tmp_path / "slow")[-1]["lr"]) == 0.0  # still annealed to the end
    # the clock, which only steps move, ends inside the budget
    assert clock.t - 1000.0 <= 5.0
    # and the recorded changes repeat the same run
    step_clock.clear()
    stored = json.loads((tmp_path / "slow/config.json").read_text())
    train(TrainConfig.from_mapping({**stored, "out": str(tmp_path / "again")}))
    assert (tmp_path / "again/model.safetensors").read_bytes() == (tmp_path / "slow/model.safetensors").read_bytes()


def test_a_resumed_budget_run_ends_at_the_same_planned_step(synthetic_dir, tmp_path, step_clock):
    clock = StepClock(0.02)
    step_clock.append(clock)
    budget_run(synthetic_dir, tmp_path / "whole", clock)
    step_clock[-1] = clock = StepClock(0.02)
    cfg = synthetic_config(synthetic_dir, tmp_path / "cut", **{**RECIPE, "time_budget": "5s"})
    with pytest.raises(Interrupted):
        Trainer(cfg, [StopAt(2, 20)], clock=clock, started=clock()).run()
    step_clock[-1] = StepClock(0.5)  # a much slower machine now: the plan holds all the same
    resume(tmp_path / "cut")
    assert (tmp_path / "cut/model.safetensors").read_bytes() == (tmp_path / "whole/model.safetensors").read_bytes()
    assert RunFolder(tmp_path / "cut").read_summary().epochs_run == len(rows(tmp_path / "whole"))


def test_a_budget_too_short_is_one_error_line_and_leaves_no_folder(synthetic_dir, tmp_path, step_clock):
    clock = StepClock(0.5)  # 60 probe steps alone take longer than the budget
    step_clock.append(clock)
    with pytest.raises(FmnistError, match=r"too short on this machine.*give at least \d+ s"):
        budget_run(synthetic_dir, tmp_path / "short", clock, budget="3s")
    assert not (tmp_path / "short").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--time-budget", "soon"], "not a duration"),
        (["--time-budget", "-5m"], "not a duration"),
        (["--time-budget", "0"], "positive duration"),
    ],
)
def test_bad_budgets_on_the_command_line(synthetic_dir, tmp_path, monkeypatch, capsys, args, message):
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--data-dir", synthetic_dir, "--no-verify", "--out", tmp_path / "r", *args
    )
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
