"""How long a run trains. The loop asks its plan how many steps an epoch has, how many epochs
there are, and whether to stop; nothing else in the engine counts epochs. A plan is a number
of optimizer steps (:class:`fmnist.training.budget.Plan`): ``--epochs`` whole epochs, or what a
``--time-budget`` bought (fixed after a short probe, possibly shortened on the way), plus
optional early stopping."""

from __future__ import annotations

from dataclasses import dataclass

from fmnist.core.errors import FmnistError
from fmnist.training.budget import Plan
from fmnist.training.config import TrainConfig


@dataclass
class EpochPlan:
    """``schedule``'s steps, epoch by epoch; with ``patience``, stop once that many epochs in
    a row brought no better validation accuracy."""

    schedule: Plan
    patience: int = 0  # 0: never stop early

    @classmethod
    def of(cls, config: TrainConfig, steps_per_epoch: int) -> EpochPlan:
        """The config's recorded plan if it has one (a budgeted run repeated), else its epochs."""
        if not config.plan:
            return cls(Plan(steps_per_epoch * config.epochs, steps_per_epoch), config.early_stop)
        schedule = Plan.from_dict(config.plan, "the config's plan")
        if schedule.steps_per_epoch != steps_per_epoch:
            raise FmnistError(
                f"the config's plan was made for {schedule.steps_per_epoch} steps per epoch, and this data and "
                f'batch size give {steps_per_epoch}; remove "plan" from the config to plan anew'
            )
        return cls(schedule, config.early_stop)

    @property
    def epochs(self) -> int:
        return self.schedule.epochs

    @property
    def steps_per_epoch(self) -> int:
        return self.schedule.steps_per_epoch

    def steps_in(self, epoch: int) -> int:
        return self.schedule.steps_in_epoch(epoch)

    def done(self, epoch: int, stale: int) -> bool:
        """Whether training is over before ``epoch`` (1-based), ``stale`` epochs after the best."""
        return epoch > self.epochs or bool(self.patience and stale >= self.patience)
