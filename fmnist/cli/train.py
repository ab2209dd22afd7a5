"""`fmnist train`: one option per :class:`TrainConfig` setting, plus where the values come from."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from fmnist.cli.options import with_settings
from fmnist.cli.output import out, pct
from fmnist.core.errors import FmnistError
from fmnist.core.files import dumps
from fmnist.core.machine import process_started
from fmnist.tracking import closed_on_failure, tracking_callbacks
from fmnist.training.budget import format_duration, parse_duration
from fmnist.training.config import TrainConfig, load_config_file
from fmnist.training.presets import PRESETS, preset_config
from fmnist.training.progress import PlainProgress, RichProgress
from fmnist.training.recipes import choose_recipe
from fmnist.training.trainer import Interrupted, Trainer

PRESET_HELP = TrainConfig.__dataclass_fields__["preset"].metadata["help"] + f" [one of {', '.join(PRESETS)}]"


@with_settings(TrainConfig, given_only=True)
def train(
    preset: Optional[str] = typer.Option(None, "--preset", help=PRESET_HELP),
    config_file: Optional[Path] = typer.Option(
        None,
        "--config",
        help="Start from a JSON or TOML file of settings (a run's config.json too); flags override it.",
    ),
    settings: dict[str, Any] = None,
    resume: Optional[Path] = typer.Option(
        None, "--resume", help="Continue the unfinished run in this folder, with its own settings."
    ),
    show_config: bool = typer.Option(False, "--show-config", help="Print the resolved settings as JSON and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final line."),
    plain: bool = typer.Option(False, "--plain", help="Plain lines, no progress bar (for logs)."),
):
    """Train a model; writes config.json, metrics.csv, model.safetensors and summary.json.

    Settings come from, in order: the defaults (the original notebook's recipe), --preset,
    --config FILE, then the flags. Ctrl-C (or SIGTERM) stops after the current step and
    saves, and --resume RUN continues; under torchrun it trains on several processes.
    """
    if resume is not None:
        given = [f"--{k.replace('_', '-')}" for k in settings] + (["--preset"] if preset else [])
        given += ["--config"] if config_file else []
        if given:
            raise FmnistError(
                f"--resume continues a run with its own settings; leave out {', '.join(given)} (or start a new run)"
            )
        trainer = Trainer(None, resume=resume)
    else:
        config = resolved_config(preset, config_file, settings)
        if show_config:
            print(dumps(config.to_dict()))
            return
        trainer = Trainer(config, started=process_started())
    if show_config:
        print(dumps(trainer.config.to_dict()))
        return
    run_trainer(trainer, quiet, plain)


def resolved_config(preset: str | None, config_file: Path | None, flags: dict[str, Any]) -> TrainConfig:
    """The defaults, then the preset, then the config file, then the flags; checked. With
    --time-budget alone (no preset, model or file), the budget picks the recipe."""
    file_values = load_config_file(config_file) if config_file else {}
    if "time_budget" in flags:
        if "epochs" in flags:
            raise FmnistError(
                "--time-budget and --epochs both say how long to train; give one (a budget plans its own steps)"
            )
        budget = parse_duration(flags["time_budget"])  # one error line for a typo, before anything is measured
        file_values.pop("plan", None)  # a new budget is planned anew, not repeated
        if not (preset or file_values or "model" in flags):
            preset, epochs = choose_recipe(budget, device=flags.get("device"), precision=flags.get("precision"))
            print(f"--time-budget {format_duration(budget)}: the {preset} recipe (about {epochs:.1f} epochs here)")
    name = preset or file_values.get("preset")
    config = preset_config(name) if isinstance(name, str) else TrainConfig()
    config = config.merged(file_values, str(config_file)).merged(flags)
    if preset:
        config.preset = preset
    config.validate()
    return config


def run_trainer(trainer: Trainer, quiet: bool, plain: bool) -> None:
    progress = None if quiet else PlainProgress() if plain or not sys.stdout.isatty() else RichProgress(out)
    trackers = tracking_callbacks(trainer.config)  # a missing extra or unreachable store fails here, first
    trainer.callbacks = [*trackers, *([progress] if progress else [])]
    try:
        with closed_on_failure(trackers):
            run = trainer.run()
    except Interrupted as e:
        if isinstance(progress, RichProgress):
            progress.stop()
        print(str(e), file=sys.stderr)
        raise typer.Exit(130) from None
    if quiet:
        print(f"{run.out_dir}: best val acc {pct(run.best['val_accuracy'])} at epoch {run.best['epoch']}")
