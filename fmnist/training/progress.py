"""How training reports progress: a Rich bar per epoch, plain lines for logs, or silence."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fmnist.runtime.modelfile import ModelInfo
from fmnist.training.budget import Plan, format_duration, parse_duration
from fmnist.training.config import TrainConfig
from fmnist.training.hooks import Callback, Run


def epoch_line(row: dict[str, float], epochs: int) -> str:
    return (
        f"epoch {int(row['epoch']):>{len(str(epochs))}}/{epochs}  "
        f"train loss {row['train_loss']:.4f} acc {row['train_accuracy'] * 100:.2f}%  "
        f"val loss {row['val_loss']:.4f} acc {row['val_accuracy'] * 100:.2f}%  "
        f"{row['seconds']:.1f}s"
    )


def end_line(run: Run) -> str:
    return (
        f"best epoch {run.best['epoch']}: val acc {run.best['val_accuracy'] * 100:.2f}%; "
        f"{run.seconds:.1f}s; saved {run.out_dir}"
    )


def planned_epochs(config: TrainConfig) -> int:
    """The epochs the run makes: its plan's (a time budget's, the last one partly), else --epochs."""
    return Plan.from_dict(config.plan).epochs if config.plan else config.epochs


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def start_line(config: TrainConfig, info: ModelInfo, start_epoch: int = 1) -> str:
    epochs = planned_epochs(config)
    if start_epoch > 1:
        where = f"resuming at epoch {start_epoch} of {epochs}"
    elif config.plan:
        plan = Plan.from_dict(config.plan)
        budget = f"the {format_duration(parse_duration(config.time_budget))} budget buys " if config.time_budget else ""
        where = f"{budget}{_plural(plan.total, 'step')} ({plan.total / plan.steps_per_epoch:.2f} epochs)"
    else:
        where = _plural(epochs, "epoch")
    return (
        f"training {config.model} ({info.params:,} params, {info.flops_per_image / 1e6:.1f} MFLOPs/image) "
        f"on {info.train_images:,} images, validating on {info.val_images:,}; "
        f"{where}, batch {config.batch_size}, {info.device} {info.precision} -> {config.out}"
    )


class PlainProgress(Callback):
    """One line per epoch; suits log files and CI."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def on_train_start(self, config, info, start_epoch=1):
        self.epochs = planned_epochs(config)
        print(start_line(config, info, start_epoch), file=self.stream, flush=True)

    def on_epoch_end(self, row):
        print(epoch_line(row, self.epochs), file=self.stream, flush=True)

    def on_train_end(self, run: Run):
        print(end_line(run), file=self.stream, flush=True)


class RichProgress(PlainProgress):
    """A progress bar per epoch with the running loss and accuracy, then the epoch's line."""

    wants_running_stats = True

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.progress: Progress | None = None

    def on_train_start(self, config, info, start_epoch=1):
        self.epochs = planned_epochs(config)
        self.console.print(start_line(config, info, start_epoch))

    def on_epoch_start(self, epoch, steps):
        self.progress = Progress(
            TextColumn(f"epoch {epoch}/{self.epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, stats="")

    def on_step(self, state):
        if self.progress:
            self.progress.update(
                self.task,
                completed=state["step"],
                stats=f"loss {state['loss']:.4f} acc {state['accuracy'] * 100:.2f}%",
            )

    def on_epoch_end(self, row):
        self.stop()
        self.console.print(epoch_line(row, self.epochs))

    def stop(self) -> None:
        """Take the bar off the screen (also on an interruption, before the message)."""
        if self.progress:
            self.progress.stop()
            self.progress = None

    def on_train_end(self, run: Run):
        self.console.print(end_line(run))
