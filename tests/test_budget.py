"""The time budget's arithmetic, on an injected clock: no timing is asserted."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmnist.core.errors import FmnistError
from fmnist.training.budget import GROW_LIMIT, Costs, Deadline, Plan, parse_duration, safety, steps_that_fit
from fmnist.training.probe import seconds_per_call


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(
    "text, seconds",
    [("2m", 120), ("90s", 90), ("1h", 3600), ("1h30m", 5400), ("1.5m", 90), ("45", 45), (" 2 min ", 120), (30, 30)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-5", "0", "0s", "2x", "m", "1m30", "nan", "inf", True, -1, float("nan")])
def test_bad_durations_are_one_error_line(text):
    with pytest.raises(FmnistError, match="--time-budget") as e:
        parse_duration(text)
    assert "\n" not in str(e.value)


def test_steps_that_fit_count_validation_and_the_final_work():
    costs = Costs(step=0.1, validation=2.0, final=3.0)
    steps = steps_that_fit(100.0, costs, steps_per_epoch=200)
    need = steps * 0.1 + math.ceil(steps / 200) * 2.0 + 3.0
    assert need <= 100.0
    more = steps + 1
    assert more * 0.1 + math.ceil(more / 200) * 2.0 + 3.0 > 100.0
    assert steps_that_fit(2.0, costs, 200) == 0


@given(
    seconds=st.floats(1, 5000),
    step=st.floats(1e-3, 2),
    val=st.floats(0, 30),
    final=st.floats(0, 30),
    spe=st.integers(1, 2000),
    offset=st.integers(0, 1999),
)
def test_steps_that_fit_never_overrun(seconds, step, val, final, spe, offset):
    offset %= spe
    n = steps_that_fit(seconds, Costs(step, val, final), spe, offset)
    if n:
        assert n * step + math.ceil((offset + n) / spe) * val + final <= seconds + 1e-9


def test_the_plan_fills_the_budget_and_the_schedule_ends_on_the_last_step():
    clock = FakeClock()
    deadline = Deadline(120.0, clock)
    clock.t += 10.0  # setup and probe
    plan = deadline.plan(Costs(step=0.05, validation=1.0, final=2.0), steps_per_epoch=430)
    spent = plan.total * 0.05 + plan.epochs * 1.0 + 2.0
    assert spent <= 110.0 - safety(120.0)
    assert spent > 110.0 - safety(120.0) - 0.05 - 1.0  # nothing that would still fit is left out
    assert plan.progress(0) == 0 and plan.progress(plan.total) == 1.0
    assert plan.virtual_step(plan.total) == plan.steps
    assert sum(plan.steps_in_epoch(e) for e in range(1, plan.epochs + 1)) == plan.total
    assert plan.steps_in_epoch(plan.epochs + 1) == 0


def test_a_slower_clock_shortens_the_plan_and_the_schedule_stays_continuous():
    clock = FakeClock()
    deadline = Deadline(100.0, clock)
    costs = Costs(step=0.1, validation=0.5, final=1.0)
    plan = deadline.plan(costs, steps_per_epoch=100)
    before = plan.total
    # Half way through the plan, the steps start taking twice as long.
    half = before // 2
    clock.t += half * 0.1 + (half // 100) * 0.5
    assert not deadline.replan(plan, half, costs)  # on time: unchanged
    slower = Costs(step=0.2, validation=1.0, final=1.0)
    p_before = plan.progress(half)
    assert deadline.replan(plan, half, slower)
    assert plan.total < before and plan.changes == [[half, plan.total]]
    assert plan.progress(half) == pytest.approx(p_before)  # no jump where the plan changed
    assert plan.progress(plan.total) == 1.0
    # The rest at the slower pace ends inside the budget.
    rest = (plan.total - half) * 0.2 + (plan.epochs - half // 100) * 1.0 + 1.0
    assert clock.t + rest <= deadline.end


def test_progress_is_monotonic_through_several_changes():
    plan = Plan(1000, 100)
    assert plan.change(300, 800) and plan.change(500, 600)
    values = [plan.progress(s) for s in range(0, 601)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[-1] == 1.0 and plan.total == 600 and plan.epochs == 6
    again = Plan.from_dict(plan.to_dict())
    assert [again.progress(s) for s in range(601)] == values


def test_a_plan_grows_at_most_to_its_limit():
    plan = Plan(100, 10)
    assert plan.change(10, 100_000)
    assert plan.total == int(GROW_LIMIT * 100)
    assert not plan.change(20, 100_000)  # already at its limit
    assert plan.progress(plan.total) == 1.0


def test_a_run_faster_than_its_probe_grows_past_the_first_plan_and_the_deadline_holds():
    clock = FakeClock()
    deadline = Deadline(100.0, clock)
    probed = Costs(step=0.1, validation=0.5, final=1.0)
    plan = deadline.plan(probed, steps_per_epoch=100)
    first = plan.total
    fast = Costs(0.085, 0.5, 1.0)  # the probe measured 15% slower than the run keeps up
    step = 0
    for _ in range(40):
        clock.t += 10 * fast.step
        step += 10
        deadline.replan(plan, step, fast, steady=fast)
    assert plan.total > first * 1.1
    # finishing at that pace still ends before the deadline
    rest = (plan.total - step) * fast.step + (plan.epochs - step // 100) * 0.5 + 1.0
    assert clock.t + rest <= deadline.end


def test_a_fast_moment_does_not_grow_the_plan_while_the_steady_pace_is_as_probed():
    clock = FakeClock()
    deadline = Deadline(100.0, clock)
    probed = Costs(step=0.1, validation=0.5, final=1.0)
    plan = deadline.plan(probed, steps_per_epoch=100)
    first = plan.total
    clock.t += 100 * 0.1
    assert not deadline.replan(plan, 100, Costs(0.08, 0.5, 1.0), steady=probed)
    assert not deadline.replan(plan, 100, Costs(0.08, 0.5, 1.0))  # no steady pace: never past the first
    assert plan.total == first


def test_a_slowdown_that_passes_gives_the_steps_back_and_the_deadline_still_holds():
    clock = FakeClock()
    deadline = Deadline(100.0, clock)
    costs = Costs(step=0.1, validation=0.5, final=1.0)
    plan = deadline.plan(costs, steps_per_epoch=100)
    first = plan.total
    clock.t += 10 * 0.1
    assert deadline.replan(plan, 10, Costs(0.3, 0.5, 1.0))  # a burst of contention
    cut = plan.total
    assert cut < first
    clock.t += 20 * 0.3
    assert deadline.replan(plan, 30, costs)  # the other process has gone
    assert cut < plan.total <= first
    rest = (plan.total - 30) * 0.1 + (plan.epochs - 0) * 0.5 + 1.0
    assert clock.t + rest <= deadline.end
    assert plan.progress(plan.total) == 1.0
    values = [plan.progress(s) for s in range(plan.total + 1)]
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_a_budget_too_small_says_what_is_possible():
    clock = FakeClock()
    deadline = Deadline(5.0, clock)
    clock.t += 4.0
    with pytest.raises(FmnistError, match=r"too short on this machine.*at least \d+ s") as e:
        deadline.plan(Costs(step=0.5, validation=2.0, final=2.0), steps_per_epoch=100)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"steps": 0, "steps_per_epoch": 1},
        {"steps": 5, "steps_per_epoch": "x"},
        {"steps": 5, "steps_per_epoch": 1, "changes": [[4, 2]]},
    ],
)
def test_impossible_plans_are_refused(values):
    with pytest.raises(FmnistError, match="plan"):
        Plan.from_dict(values, "config.json")


def test_a_stall_during_the_probe_does_not_count_as_a_step():
    clock = FakeClock()
    costs = iter([0.0, 0.0] + [0.02] * 10 + [10.0] + [0.02] * 100)  # one call waits 10 s for the machine

    def step(_i):
        clock.t += next(costs)

    per = seconds_per_call(step, clock=clock, min_calls=4, max_calls=60, seconds=1.0, warmup=2)
    assert per == pytest.approx(0.02)


def test_seconds_per_call_skips_the_warmup_and_measures_on_the_clock():
    clock = FakeClock(0.0)
    calls = []

    def timed(i: int) -> None:
        calls.append(i)
        clock.t += 5.0 if i < 2 else 0.25  # the first calls create the kernels: slow

    assert seconds_per_call(timed, clock=clock, min_calls=4, seconds=1.0, warmup=2) == pytest.approx(0.25)
    assert calls == list(range(6))  # 2 warm-up calls, then until a second has passed


@given(
    seconds=st.floats(1, 500),
    step=st.floats(1e-2, 2),
    val=st.floats(0, 30),
    final=st.floats(0, 30),
    spe=st.integers(1, 200),
    offset=st.integers(0, 199),
)
def test_steps_that_fit_leaves_out_nothing_that_would_fit(seconds, step, val, final, spe, offset):
    offset %= spe

    def fits(n: int, slack: float = 0.0) -> bool:
        return n * step + math.ceil((offset + n) / spe) * val + final <= seconds + slack

    n = steps_that_fit(seconds, Costs(step, val, final), spe, offset)
    # the most that fit, by brute force over every larger count (a count past an epoch's end
    # pays one more validation pass, so fitting is not monotonic in the count)
    assert n == 0 or fits(n)
    assert not any(fits(k, -1e-9) for k in range(n + 1, int(seconds / step) + 2))
