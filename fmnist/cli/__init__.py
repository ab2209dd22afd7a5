"""The `fmnist` command: a thin layer of Typer commands over the library, one module per
command group (train, tune, studies, evaluate, predict, export, serve, data, model), under a
root (:mod:`fmnist.cli.main`) that imports a command's module only when it is used."""

from fmnist.cli.main import main

__all__ = ["main"]
