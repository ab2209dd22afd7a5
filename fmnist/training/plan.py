"""How long a run trains. The loop asks its plan how many steps an epoch has, how many epochs
to show, and whether to stop; nothing else in the engine counts epochs. Today's plan is a
fixed number of epochs with optional early stopping; a time budget (a plan fixed after a
short probe) is another plan with the same three answers."""

from __future__ import annotations

from dataclasses import dataclass

from fmnist.training.config import TrainConfig


@dataclass(frozen=True)
class EpochPlan:
    """``epochs`` epochs of ``steps`` steps; with ``patience``, stop once that many epochs in
    a row brought no better validation accuracy."""

    epochs: int
    steps: int  # per epoch (the ragged last batch is dropped)
    patience: int = 0  # 0: never stop early

    @classmethod
    def of(cls, config: TrainConfig, steps: int) -> EpochPlan:
        return cls(config.epochs, steps, config.early_stop)

    def done(self, epoch: int, stale: int) -> bool:
        """Whether training is over before ``epoch`` (1-based), ``stale`` epochs after the best."""
        return epoch > self.epochs or bool(self.patience and stale >= self.patience)
