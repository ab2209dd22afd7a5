"""A run under ``--time-budget``: the probe that measures this machine, the plan it buys, and
the checks on the way that shorten the plan when the machine slows down.

The probe trains a throw-away copy of the run's learner for a few steps; the run then builds
its own learner from the same seeds, so a budgeted run and the same plan repeated without a
budget start from the same weights and draw the same random numbers: the same model, bit
for bit. All times come from the injected clock.
"""

from __future__ import annotations

import math
import warnings
from collections import deque

import torch

from fmnist.core.errors import FmnistError
from fmnist.runtime.inference import predict_logits
from fmnist.training.budget import Clock, Costs, Deadline, Plan, format_duration, parse_duration
from fmnist.training.config import TrainConfig
from fmnist.training.data import TrainingData
from fmnist.training.distributed import World
from fmnist.training.learner import Learner
from fmnist.training.probe import seconds_per_call
from fmnist.training.state import Rngs

# Validation images timed by the probe (scaled to the whole split), and what each epoch adds
# besides (the metrics file, the best model and the resume state written).
PROBE_VAL_IMAGES = 1024
EPOCH_WRITES_SECONDS = 0.2
# Calibration (an fp32 pass over the validation split) plus the fit, the last save and the summary.
FINAL_EXTRA_SECONDS = 0.5
# How often the clock is checked against the plan, in steps (and at every epoch's end).
CHECKS_PER_EPOCH = 8
# A change of the plan is said in a warning once it adds up to this fraction of the plan.
WARN_FRACTION = 0.05
# The pace is measured over this many check windows (about 3/8 of an epoch).
PACE_WINDOWS = 3


class Timebox:
    def __init__(self, config: TrainConfig, world: World, device: torch.device, clock: Clock, started: float):
        self.config, self.world, self.device, self.clock = config, world, device, clock
        self.budget = parse_duration(config.time_budget)
        self.deadline = Deadline(self.budget, clock, started)
        self.costs: Costs | None = None
        self._mark: tuple[int, float] | None = None  # (global step, time) of the last check
        self._told: int | None = None  # the plan's length when the user was last told of a change
        # The last few check windows (seconds, steps; validation left out): the pace is their mean,
        # so one slow moment does not cut the plan for good, while a machine that stays slower does.
        self._windows: deque[tuple[float, int]] = deque(maxlen=PACE_WINDOWS)
        self._total = [0.0, 0]  # every window since training began: the steady pace, to grow the plan by

    # --- before training ---------------------------------------------------------------------

    def plan(self, data: TrainingData, batch: int, local_batch: int, steps_per_epoch: int, provisional: Plan) -> Plan:
        """Probe, then the plan for what is left of the budget (rank 0's, on every process)."""
        self.costs = self._probe(data, batch, local_batch, provisional)
        answer: dict = {}
        if self.world.main:
            try:
                answer = {"plan": self.deadline.plan(self.costs, steps_per_epoch).to_dict()}
            except FmnistError as e:  # the budget is too short: every process stops with the same line
                answer = {"error": str(e)}
        answer = self.world.share(answer)
        if "error" in answer:
            raise FmnistError(answer["error"])
        return Plan.from_dict(answer["plan"])

    def _probe(self, data: TrainingData, batch: int, local_batch: int, provisional: Plan) -> Costs:
        cfg, dev = self.config, self.device
        rngs = Rngs.seeded(cfg.seed, self.world.rank, dev)
        ln = Learner.build(cfg, self.world, dev, data, provisional, resuming=False)
        ln.train()
        perm = torch.randperm(data.n_train, generator=rngs.perm, device=dev)
        offset = self.world.rank * local_batch
        n_batches = max(1, data.n_train // batch)

        def step(i: int) -> None:
            start = (i % n_batches) * batch + offset
            ln.step(*data.batch(perm[start : start + local_batch]), rngs)

        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        step_s = seconds_per_call(step, clock=self.clock, sync=sync)
        x = data.x_val[:PROBE_VAL_IMAGES]
        scale = data.n_val / len(x) if len(x) else 0.0

        def pass_seconds(amp: torch.dtype | None) -> float:
            """One pass over the validation split, scaled from ``x``: as validated (``ln.amp``)
            or as calibrated at the end (fp32)."""
            if not len(x):
                return 0.0
            t0 = self.clock()
            predict_logits(ln.eval_model, x, cfg.eval_batch_size, cfg.tta, amp, cfg.channels_last)
            return (self.clock() - t0) * scale

        validation, final = pass_seconds(ln.amp) + EPOCH_WRITES_SECONDS, pass_seconds(None) + FINAL_EXTRA_SECONDS
        return Costs(step=step_s, validation=validation, final=final)

    # --- on the way -----------------------------------------------------------------------------

    def start_epoch(self, global_step: int) -> None:
        self._mark = (global_step, self.clock())

    def validated(self, seconds: float) -> None:
        if self.costs is not None:
            self.costs.validation = seconds + EPOCH_WRITES_SECONDS

    def check(self, plan: Plan, global_step: int) -> bool:
        """Every few steps: measure the recent pace and shorten ``plan`` if the rest would end
        past the deadline. Returns whether it changed (the same answer on every process)."""
        if self.costs is None or self._mark is None:
            return False
        every = max(1, math.ceil(plan.steps_per_epoch / CHECKS_PER_EPOCH))
        done_since, since = global_step - self._mark[0], self._mark[1]
        if done_since < every:
            return False
        now = self.clock()
        self._mark = (global_step, now)
        self._windows.append((now - since, done_since))
        self._total[0] += now - since
        self._total[1] += done_since
        seconds, steps = (sum(w[i] for w in self._windows) for i in (0, 1))
        pace = Costs(seconds / steps, self.costs.validation, self.costs.final)
        steady = Costs(self._total[0] / self._total[1], self.costs.validation, self.costs.final)
        changed = self.world.share(self.deadline.replan(plan, global_step, pace, steady) and plan.to_dict())
        if not changed:
            return False
        if not self.world.main:
            plan.changes = Plan.from_dict(changed).changes
        told = self._told if self._told is not None else plan.steps
        # Every change is recorded in config.json; the user is told of the ones over 5% of the plan.
        if self.world.main and abs(plan.total - told) >= WARN_FRACTION * plan.steps:
            self._told = plan.total
            how, what = ("slowed down", "shortened") if plan.total < told else ("is faster again", "lengthened")
            if what == "lengthened" and plan.total > plan.steps:
                how = "runs faster than the probe measured"
            warnings.warn(
                f"--time-budget {format_duration(self.budget)}: this machine {how} "
                f"({pace.step * 1000:.1f} ms per step against {self.costs.step * 1000:.1f} ms measured); "
                f"the plan is {what} from {told:,} to {plan.total:,} steps to end in time",
                stacklevel=2,
            )
        return True

    def resolved(self) -> dict:
        """What config.json's resolved block records about the budget."""
        c = self.costs
        probe = {"step_seconds": c.step, "validation_seconds": c.validation, "final_seconds": c.final} if c else {}
        return {"time_budget_seconds": self.budget, "probe": probe}
