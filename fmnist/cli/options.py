"""Typer options generated from the settings schema (:mod:`fmnist.core.schema`).

A command takes its settings as one parameter, ``settings``, and :func:`with_settings`
replaces it with one option per field of the settings' dataclass: names, help, allowed values
and defaults all come from the dataclass, so they are written once, beside the code that uses
them. The command's other parameters (its arguments, --json, --list) are ordinary Typer ones.
"""

from __future__ import annotations

import functools
import inspect
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperCommand

from fmnist.core.errors import FmnistError
from fmnist.core.schema import CliOption, check, cli_options
from fmnist.runtime.pretrained import pretrained_path


def app(help: str | None = None) -> typer.Typer:
    """A Typer app as every fmnist command group is built: plain help (no Rich markup), no
    pretty tracebacks (main() turns errors into one line), no completion options."""
    return typer.Typer(
        help=help,
        no_args_is_help=help is not None,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        add_completion=False,
    )


def with_settings(
    settings_class: type, *, name: str = "settings", exclude: tuple[str, ...] = (), given_only: bool = False
):
    """Decorate a Typer command whose parameter ``name`` is replaced, in place, by the
    options of ``settings_class``'s fields (except ``exclude``). The command is called with
    ``name=settings_class(...)`` of the values given, checked against the schema's rules;
    with ``given_only``, with the dict of the values given instead (``fmnist train`` lays
    them over a preset and a config file)."""
    options = [o for o in cli_options(settings_class) if o.name not in exclude]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(fn)
        # all keyword-only: Typer passes every value by name, and the order is the one of --help
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(fn).parameters.values()
        ]
        params: list[inspect.Parameter] = []
        for p in own:
            params += [*map(_parameter, options), *_old_spellings(options)] if p.name == name else [p]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            given = _given(options, kwargs)
            settings = given if given_only else check(settings_class(**given))
            return fn(**kwargs, **{name: settings})

        del command.__wrapped__  # Typer must read the signature below, not fn's
        command.optional_values = {o.decls[0]: o.flag_value for o in options if o.flag_value is not None}
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def _parameter(o: CliOption) -> inspect.Parameter:
    kind: Any = list[o.type] if o.multiple else o.type
    option = typer.Option(... if o.required else None, *o.decls, help=o.help, metavar=o.metavar, show_default=False)
    annotation = kind if o.required else Optional[kind]
    return inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


class OptionalValueCommand(TyperCommand):
    """A command whose options may take an optional value (``param(flag_value=...)``:
    ``--mlflow`` alone means ``--mlflow default``). Typer has no such options (it dropped
    click's ``flag_value``), so the value is put in before click parses the line."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        optional = getattr(self.callback, "optional_values", None) or {}
        return super().parse_args(ctx, with_optional_values(args, optional))


def with_optional_values(args: list[str], optional: dict[str, str]) -> list[str]:
    """``args`` with the value of each option in ``optional`` given alone (last, or before
    another option) put in after it; everything after ``--`` is left as it is."""
    given = list(args)
    end = given.index("--") if "--" in given else len(given)
    for i in reversed(range(end)):
        if given[i] in optional and (i + 1 == end or given[i + 1].startswith("-")):
            given.insert(i + 1, optional[given[i]])
    return given


def _old_spellings(options: list[CliOption]) -> list[inspect.Parameter]:
    """A hidden option for each old name of a renamed option: it still works, with a note."""
    params = []
    for o in options:
        for old in o.formerly:
            kind: Any = list[o.type] if o.multiple else o.type
            option = typer.Option(None, old, hidden=True)
            params.append(
                inspect.Parameter(
                    _old_name(old), inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind]
                )
            )
    return params


def _old_name(flag: str) -> str:
    return "formerly_" + flag.lstrip("-").replace("-", "_")


def _given(options: list[CliOption], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The settings given on the command line (popped from ``kwargs``), by field name."""
    given = {}
    for o in options:
        value = o.value(kwargs.pop(o.name))
        for old in o.formerly:
            old_value = o.value(kwargs.pop(_old_name(old)))
            if old_value is not None:
                new = o.decls[0].split("/")[0]
                print(f"warning: {old} is deprecated, use {new} (the same setting)", file=sys.stderr)
                value = old_value if value is None else value
        if value is not None:
            given[o.name] = value
    return given


# --- options that are not settings: what to print, and the run an evaluation reads --------------

RUN_HELP = "Run folder or model file."


def run_argument(help: str = RUN_HELP) -> Any:
    return typer.Argument(..., help=help)


def optional_run_argument() -> Any:
    return typer.Argument(None, help=RUN_HELP + " Leave it out with --pretrained.", show_default=False)


def pretrained_option() -> Any:
    return typer.Option(
        False, "--pretrained", help="Use the model that comes with fmnist (trained by `make pretrained`): no training."
    )


def model_source(run: Path | None, pretrained: bool) -> Path:
    """The run folder or model file a command reads: the one given, or the packaged model."""
    if pretrained:
        return pretrained_path()
    if run is None:
        raise FmnistError("give a run folder or model file, or --pretrained for the model that comes with fmnist")
    return run


def json_option(help: str = "Print JSON.") -> Any:
    return typer.Option(False, "--json", help=help)
