"""`fmnist tune`: a hyperparameter search with Optuna (needs `pip install 'fmnist[tune]'`)."""

from __future__ import annotations

import typer

from fmnist.cli.options import with_settings
from fmnist.studies.tune import TuneSettings, show
from fmnist.studies.tune import tune as run_tune


@with_settings(TuneSettings)
def tune(
    settings: TuneSettings,
    show_study: bool = typer.Option(False, "--show", help="Print the trial table of the existing study and exit."),
):
    """Search hyperparameters with Optuna (TPE, pruning on validation accuracy; never the test set).

    Ctrl-C stops after the current trial (twice: at once); the study stays and the same
    command continues it. Writes best_config.json (for `fmnist train --config`), summary.md
    and history.png into the study folder.
    """
    if show_study:
        print(show(settings.study, settings.storage, settings.out))
        return
    run_tune(settings, log=lambda m: print(m, flush=True))
