"""Training for a time instead of a number of epochs.

A budget is planned once: a short probe measures this machine's time per training step and
per validation pass, and the plan (how many optimizer steps fit) is then fixed, so every
schedule runs on the fraction of the *plan* done and anneals to its end exactly when the time
runs out (budgeted training, Li, Yumer and Ramanan, ICLR 2020: a schedule that decays to zero
at the deadline beats a long schedule stopped early). The plan is written into the run's
config.json, so the same run can be repeated step for step on any machine without a budget.

If the machine slows down mid-run (another process takes a core), the plan is shortened so
the deadline still holds. A shortened plan keeps the schedule continuous: from the step where
it changed, the remaining fraction of the schedule is spread over the remaining steps. Every
change is recorded with the plan, so a repeat follows the same path.

Time comes from an injected clock (``time.monotonic`` by default), so tests can slow it down.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from fmnist.core.errors import FmnistError

Clock = Callable[[], float]

# Seconds kept in hand for what the estimate cannot see (the last model save, the summary,
# a slower step here and there): 3% of the budget, at least 1 s.
SAFETY_FRACTION = 0.03
SAFETY_MIN_SECONDS = 1.0
# Re-plan when the projected end passes the deadline by more than this fraction of what is left;
# give steps back only when more than LENGTHEN_SPARE of it would be idle. The gap between the two
# keeps the plan from following the pace's noise (±10% between check windows on 2 cores).
REPLAN_TOLERANCE = 0.03
LENGTHEN_SPARE = 0.10
# Past the first plan (the probe measured a slower step than the run keeps up), the plan grows
# only when the run's pace since it began, and the recent pace too, leave this much idle: the
# pace over the whole run wanders far less than over three windows. Measured on Zen 4, 2-minute
# runs that could not grow past their first plan ended 2-15% under the budget (docs/benchmarks.md).
GROW_SPARE = 0.04
# A guard, not a tuning: a probe that caught a stall can plan many times too few steps, and the
# run's own pace then gives them back; only a clock gone wrong would ask for more than this.
GROW_LIMIT = 20

_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(h|min|m|sec|s)?", re.IGNORECASE)


def parse_duration(text: str | float | int, option: str = "--time-budget") -> float:
    """``"2m"``, ``"90s"``, ``"1h"``, ``"1h30m"``, ``"1.5m"`` or plain seconds -> seconds (> 0)."""
    if isinstance(text, bool):
        raise FmnistError(f"{option} must be a duration such as 90s, 2m or 1h, got {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = str(text).strip().replace(" ", "")
        pos, seconds, units = 0, 0.0, []
        while pos < len(s):
            m = _PART.match(s, pos)
            if not m:
                raise FmnistError(f"{option} {text!r}: not a duration; write it as 90s, 2m, 1h30m or plain seconds")
            units.append((m.group(2) or "").lower())
            seconds += float(m.group(1)) * _UNITS[units[-1]]
            pos = m.end()
        if not units or ("" in units and len(units) > 1):
            raise FmnistError(f"{option} {text!r}: not a duration; write it as 90s, 2m, 1h30m or plain seconds")
    if not math.isfinite(seconds) or seconds <= 0:
        raise FmnistError(f"{option} {text!r}: a budget must be a positive duration, such as 90s or 2m")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2g} h" if seconds % 3600 else f"{seconds / 3600:.0f} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


@dataclass
class Costs:
    """What one piece of the run costs on this machine, in seconds (measured by the probe)."""

    step: float  # one optimizer step
    validation: float  # one pass over the validation split, as done after every epoch
    final: float  # calibration, the last save and the summary, after the last epoch


@dataclass
class Plan:
    """How many optimizer steps the run takes, and every time that number was lowered:
    ``changes`` holds ``[step, new_total]`` pairs in order."""

    steps: int
    steps_per_epoch: int
    changes: list[list[int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """The number of steps the run now ends at."""
        return self.changes[-1][1] if self.changes else self.steps

    @property
    def epochs(self) -> int:
        return math.ceil(self.total / self.steps_per_epoch)

    def steps_in_epoch(self, epoch: int) -> int:
        """Steps of ``epoch`` (1-based): whole epochs, then what is left in the last one."""
        return max(0, min(self.steps_per_epoch, self.total - (epoch - 1) * self.steps_per_epoch))

    def progress(self, step: int) -> float:
        """The fraction of the schedule done after ``step`` steps, in [0, 1]. Without changes,
        ``step / steps``; after a change at step s to total n, the fraction left at s is spread
        evenly over the steps s..n, so the schedule stays continuous and ends at n."""
        start, done, end = 0, 0.0, self.steps
        for at, new_total in self.changes:
            if step < at:
                break
            done = done + (1.0 - done) * (at - start) / max(1, end - start)
            start, end = at, new_total
        return min(1.0, done + (1.0 - done) * (step - start) / max(1, end - start))

    def virtual_step(self, step: int) -> int:
        """The step of the unchanged plan whose schedule value ``step`` now has: schedules written
        for a fixed number of steps (:func:`fmnist.training.optim.lr_factor`) follow the plan."""
        return round(self.progress(step) * self.steps) if self.changes else step

    def change(self, at_step: int, new_total: int) -> bool:
        """End at ``new_total`` steps from ``at_step`` on: shorter when the machine slowed down,
        longer when it sped up (at most :data:`GROW_LIMIT` times the first plan). Returns
        whether it changed."""
        new_total = min(int(GROW_LIMIT * self.steps), max(at_step, new_total))
        if new_total == self.total:
            return False
        self.changes.append([at_step, new_total])
        return True

    def to_dict(self) -> dict:
        return {"steps": self.steps, "steps_per_epoch": self.steps_per_epoch, "changes": self.changes}

    @classmethod
    def from_dict(cls, values: dict, source: str = "plan") -> Plan:
        try:
            plan = cls(
                int(values["steps"]),
                int(values["steps_per_epoch"]),
                [[int(a), int(b)] for a, b in values.get("changes", [])],
            )
        except (KeyError, TypeError, ValueError):
            raise FmnistError(
                f"{source}: a plan needs steps, steps_per_epoch and changes [[step, total], ...]"
            ) from None
        if plan.steps < 1 or plan.steps_per_epoch < 1 or any(b < a or a < 0 for a, b in plan.changes):
            raise FmnistError(
                f"{source}: the plan {values} is impossible (steps >= 1, each change [step, total >= step])"
            )
        return plan


def steps_that_fit(seconds: float, costs: Costs, steps_per_epoch: int, offset: int = 0) -> int:
    """The most steps whose training, per-epoch validation and final work fit in ``seconds``,
    starting ``offset`` steps into an epoch."""
    usable = seconds - costs.final
    if usable <= 0 or costs.step <= 0:
        return 0
    # Each started epoch adds a validation pass. Ending in epoch e allows at most e*spe - offset
    # steps (rising with e) and (usable - e*val)/step (falling): the best is where they cross.
    cross = int((usable + offset * costs.step) / (steps_per_epoch * costs.step + costs.validation))
    best = 0
    for epochs in range(max(1, cross - 1), cross + 2):  # and one each side: the division rounds
        within = epochs * steps_per_epoch - offset  # the most steps that end inside this epoch
        steps = min(within, int((usable - epochs * costs.validation) / costs.step))
        # fitting when added up, neither more nor fewer (the division rounds either way)
        need = epochs * costs.validation
        while steps > 0 and steps * costs.step + need > usable:
            steps -= 1
        while steps < within and (steps + 1) * costs.step + need <= usable:
            steps += 1
        if steps > max(0, within - steps_per_epoch):
            best = max(best, steps)
    return best


def safety(budget: float) -> float:
    return max(SAFETY_MIN_SECONDS, SAFETY_FRACTION * budget)


class Deadline:
    """The budget's end on the injected clock, and the checks made against it."""

    def __init__(self, budget: float, clock: Clock, start: float | None = None):
        self.budget, self.clock = budget, clock
        self.start = clock() if start is None else start
        self.end = self.start + budget

    def left(self) -> float:
        return self.end - self.clock()

    def used(self) -> float:
        return self.clock() - self.start

    def plan(self, costs: Costs, steps_per_epoch: int) -> Plan:
        """The plan for what is left of the budget, or one ``error:`` line saying what is possible."""
        left = self.left() - safety(self.budget)
        steps = steps_that_fit(left, costs, steps_per_epoch)
        if steps < 1:
            least = self.used() + costs.step + costs.validation + costs.final + safety(self.budget)
            raise FmnistError(
                f"--time-budget {format_duration(self.budget)} is too short on this machine: setting up took "
                f"{self.used():.1f} s and one step, a validation pass and the final calibration take "
                f"{costs.step + costs.validation + costs.final:.1f} s more; give at least {math.ceil(least)} s, "
                "or a smaller model (--preset sprint)"
            )
        return Plan(steps, steps_per_epoch)

    def replan(self, plan: Plan, step: int, costs: Costs, steady: Costs | None = None) -> bool:
        """Shorten ``plan`` at ``step`` if the rest, at ``costs`` (the recent pace), would end
        past the deadline; lengthen it again if a slowdown passed and time is left over; and
        past the first plan if ``steady`` (the pace since training began) and ``costs`` both
        leave :data:`GROW_SPARE` of the time idle. Returns whether it changed."""
        remaining = plan.total - step
        if remaining <= 0:
            return False
        offset = step % plan.steps_per_epoch
        # At an epoch's last step the check comes before that epoch's validation: still to pay.
        pending = costs.validation if step and not offset else 0.0
        left = self.left() - safety(self.budget) / 2 - pending
        if self._projected(plan, step, costs) > left * (1 + REPLAN_TOLERANCE):
            fits = steps_that_fit(left, costs, plan.steps_per_epoch, offset)
            return plan.change(step, step + max(0, min(remaining - 1, fits)))
        room = left - safety(self.budget) / 2  # lengthen only into time that is clearly spare
        if plan.total < plan.steps and self._projected(plan, step, costs) < room * (1 - LENGTHEN_SPARE):
            more = steps_that_fit(room, costs, plan.steps_per_epoch, offset)
            return more > remaining and plan.change(step, step + min(more, plan.steps - step))
        if plan.total >= plan.steps and steady is not None:
            slower = Costs(max(costs.step, steady.step), costs.validation, costs.final)
            if self._projected(plan, step, slower) < room * (1 - GROW_SPARE):
                more = steps_that_fit(room * (1 - GROW_SPARE / 2), slower, plan.steps_per_epoch, offset)
                return more > remaining and plan.change(step, step + more)
        return False

    @staticmethod
    def _projected(plan: Plan, step: int, costs: Costs) -> float:
        """Seconds the rest of ``plan`` takes from ``step`` at ``costs``."""
        epochs_left = plan.epochs - step // plan.steps_per_epoch
        return (plan.total - step) * costs.step + epochs_left * costs.validation + costs.final
