"""The one settings schema of every command. A setting is a dataclass field made with
:func:`param`: its default, its help text, its allowed values (the rules) and how it looks on
the command line. From the fields alone come the type and range checks (one-line
:class:`FmnistError`\\ s naming the flag, or the file and key), the allowed values in words
for --help, and a description of each command-line option (:func:`cli_options`) that
:mod:`fmnist.cli` turns into Typer options.

Standard library only, at the bottom of the house: the training config, the server's
settings and the studies' settings all use it without pulling in PyTorch or Typer.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from fmnist.core.errors import FmnistError

RULES = ("choices", "min", "max", "above", "below")
# Python types of the kinds a setting can have, as a command-line option receives them.
_OPTION_TYPES = {"bool": bool, "int": int, "float": float, "str": str}
_KIND_NAMES = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "dict": "a table",
    "list": "a list",
    "tuple": "a list",
}


def param(
    default: Any = MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    cli: bool = True,
    flags: tuple[str, ...] = (),
    formerly: tuple[str, ...] = (),
    negatable: bool = True,
    path: bool = False,
    parse: Callable[[Any], Any] | None = None,
    multiple: bool = False,
    metavar: str | None = None,
    flag_value: str | None = None,
    **rules: Any,
) -> Any:
    """A setting. ``help``: its --help text. ``rules``: ``choices``, ``min``, ``max``,
    ``above`` (exclusive minimum), ``below`` (exclusive maximum). No default: required.

    On the command line (``cli=False``: not an option): ``flags``, the option's names
    (default ``--name-with-dashes``); ``formerly``, old names that still work, with a note;
    ``negatable``, whether a bool gets ``--x/--no-x`` (False: only the flag that changes its
    default, ``--x`` or ``--no-x``); ``path``, given as a path, kept as a string; ``multiple``,
    repeatable; ``parse``, turns what was typed (a string, or with ``multiple`` the list of
    them) into the value, raising :class:`FmnistError` for a typo; ``flag_value``, what a text
    option given without a value means (``--mlflow`` alone: ``--mlflow default``)."""
    unknown = set(rules) - set(RULES)
    if unknown:
        raise TypeError(f"unknown rules {sorted(unknown)}; the rules are {', '.join(RULES)}")
    meta = {
        "help": help,
        "cli": cli,
        "flags": tuple(flags),
        "formerly": tuple(formerly),
        "negatable": negatable,
        "path": path,
        "parse": parse,
        "multiple": multiple,
        "metavar": metavar,
        "flag_value": flag_value,
        **rules,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --- checking -------------------------------------------------------------------------------


def kinds(f: dataclasses.Field) -> list[str]:
    """The kinds a field's annotation allows: ``"int | None"`` -> ``["int", "None"]``."""
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return [a.strip().split("[")[0] for a in text.split("|")]


def problem(
    key: str, text: str, source: str | None = None, *, flag: str | None = None, unknown: bool = False
) -> FmnistError:
    """The one-line error about a setting: named by its flag, or by file and key (``source``)."""
    if source:
        return FmnistError(f"{source}: {'unknown key' if unknown else 'key'} {key!r} {text}")
    if unknown:
        return FmnistError(f"unknown setting {key!r}; {text}")
    return FmnistError(f"{flag or '--' + key.replace('_', '-')} {text}")


def typed(f: dataclasses.Field, value: Any, source: str | None = None) -> Any:
    """``value`` checked against the field's type (floats accept integers, a path field a
    path; nothing else is converted: a bool is not a number, a string is not a number)."""
    allowed = kinds(f)
    if value is None and "None" in allowed:
        return None
    kind = allowed[0]
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and _is_int(value):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise _problem(f, f"must be a finite number, got {value}", source)
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "str" and f.metadata.get("path") and isinstance(value, os.PathLike):
        return os.fspath(value)
    if kind == "dict" and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return value
    if kind in ("list", "tuple") and isinstance(value, (list, tuple)):
        inner = str(f.type).partition("[")[2].partition("]")[0].split(",")[0].strip()
        if inner != "int" or all(_is_int(v) for v in value):
            return list(value) if kind == "list" else tuple(value)
        raise _problem(f, f"must be a list of integers, got {value!r}", source)
    raise _problem(f, f"must be {_KIND_NAMES.get(kind, kind)}, got {value!r}", source)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_rules(f: dataclasses.Field, value: Any, source: str | None = None) -> None:
    rules = f.metadata
    if value is None:
        return
    choices = rules.get("choices")
    if choices and value not in choices:
        raise _problem(f, f"must be one of {', '.join(map(str, choices))}, got {value!r}", source)
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if "min" in rules and v < rules["min"]:
            raise _problem(f, f"must be >= {rules['min']}, got {v}", source)
        if "max" in rules and v > rules["max"]:
            raise _problem(f, f"must be <= {rules['max']}, got {v}", source)
        if "above" in rules and not v > rules["above"]:
            raise _problem(f, f"must be > {rules['above']}, got {v}", source)
        if "below" in rules and not v < rules["below"]:
            raise _problem(f, f"must be < {rules['below']}, got {v}", source)


def check(settings: Any, source: str | None = None) -> Any:
    """``settings`` itself once every field has its type and obeys its rules; else the
    :class:`FmnistError` about the first that does not."""
    for f in dataclasses.fields(settings):
        check_rules(f, typed(f, getattr(settings, f.name), source), source)
    return settings


def updated(settings: Any, values: dict[str, Any], source: str | None = None, ignore: tuple[str, ...] = ()) -> Any:
    """A copy of ``settings`` with ``values`` (a file's content, flags) applied: None values
    and the keys in ``ignore`` are skipped; an unknown key or a wrong type is an error
    naming it. The rules are left to :func:`check`."""
    fields = {f.name: f for f in dataclasses.fields(settings)}
    changes = {}
    for key, value in values.items():
        if value is None or key in ignore:
            continue
        if key not in fields:
            raise problem(key, f"is not a setting (settings: {', '.join(fields)})", source, unknown=True)
        changes[key] = typed(fields[key], value, source)
    return dataclasses.replace(settings, **changes)


def _problem(f: dataclasses.Field, text: str, source: str | None) -> FmnistError:
    flags = f.metadata.get("flags") or ()
    return problem(f.name, text, source, flag=flags[0] if flags else None)


# --- describing -----------------------------------------------------------------------------


def describe_rules(f: dataclasses.Field) -> str:
    """The allowed values of a field in words, for --help: `` [>= 0 and < 1]``."""
    r = f.metadata
    parts = []
    if r.get("choices"):
        parts.append("one of " + ", ".join(map(str, r["choices"])))
    lo = f">= {r['min']}" if "min" in r else f"> {r['above']}" if "above" in r else ""
    hi = f"<= {r['max']}" if "max" in r else f"< {r['below']}" if "below" in r else ""
    if lo or hi:
        parts.append(" and ".join(p for p in (lo, hi) if p))
    return f" [{'; '.join(parts)}]" if parts else ""


@dataclass(frozen=True)
class CliOption:
    """How one setting appears on the command line."""

    name: str  # the field's, and the command function's parameter
    decls: tuple[str, ...]  # what click declares: "--flip/--no-flip", or "--folds", "-k"
    type: type  # what the option receives: bool, int, float, str or Path
    help: str  # the help text, the rules and the default in words
    required: bool = False
    multiple: bool = False
    invert: bool = False  # a --no-x flag: given means False
    metavar: str | None = None
    parse: Callable[[Any], Any] | None = None
    formerly: tuple[str, ...] = ()
    flag_value: str | None = None  # the value when the option is given alone (its value optional)

    def value(self, given: Any) -> Any:
        """The setting's value from what the option received; None: not given."""
        if given is None or (self.multiple and not given):
            return None
        if self.invert:
            return not given
        if self.parse is not None:
            return self.parse(list(given) if self.multiple else given)
        if isinstance(given, Path):
            return os.fspath(given)
        return list(given) if self.multiple else given


def cli_options(settings_class: type) -> list[CliOption]:
    """One :class:`CliOption` per field of ``settings_class`` shown on the command line. No
    option has a default of its own: an option not given leaves the setting to its default,
    which a preset or a config file may have changed, so --help says the default in words."""
    return [_cli_option(f) for f in dataclasses.fields(settings_class) if f.metadata.get("cli", True)]


def _cli_option(f: dataclasses.Field) -> CliOption:
    m, kind = f.metadata, kinds(f)[0]
    flag = (m.get("flags") or ("--" + f.name.replace("_", "-"),))[0]
    required = f.default is MISSING and f.default_factory is MISSING
    text = m.get("help", "") + describe_rules(f)
    invert = False
    if kind == "bool" and not m.get("negatable", True):
        invert = f.default is True
        decls = ("--no-" + flag[2:],) if invert else (flag,)
    else:
        if kind == "bool":
            decls = (f"{flag}/--no-{flag[2:]}",)
        else:
            decls = m.get("flags") or (flag,)
        if f.default not in (MISSING, None):
            text += f" (default: {_shown(f.default)})"
    if m.get("parse") is not None:
        kind_type: type = str
    elif m.get("path"):
        kind_type = Path
    else:
        inner = str(f.type).partition("[")[2].partition("]")[0].strip() if kind == "list" else kind
        kind_type = _OPTION_TYPES.get(inner, str)
    return CliOption(
        name=f.name,
        decls=tuple(decls),
        type=kind_type,
        help=text,
        required=required,
        multiple=m.get("multiple", False),
        invert=invert,
        metavar=m.get("metavar"),
        parse=m.get("parse"),
        formerly=m.get("formerly", ()),
        flag_value=m.get("flag_value"),
    )


# --- library functions ----------------------------------------------------------------------


def accepts_settings(settings_class: type, **keywords: str | None) -> Callable[[Callable], Callable]:
    """Decorate a library function so that it also takes its options as one object,
    ``settings=settings_class(...)`` (what its command passes), in place of its keyword
    arguments (what a notebook passes): each field goes to the keyword of the same name, or
    of ``keywords[field]`` (None: the function does not use that field)."""

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)
        routes = {f.name: keywords.get(f.name, f.name) for f in dataclasses.fields(settings_class)}
        unknown = [k for k in routes.values() if k is not None and k not in signature.parameters]
        if unknown:
            raise TypeError(f"{fn.__name__} has no parameter {unknown[0]!r} for {settings_class.__name__}")

        @functools.wraps(fn)
        def call(*args: Any, settings: Any = None, **kwargs: Any) -> Any:
            if settings is None:
                return fn(*args, **kwargs)
            options = {k: getattr(settings, name) for name, k in routes.items() if k is not None}
            return fn(*args, **options, **kwargs)  # a keyword given twice is a TypeError, as it should be

        extra = inspect.Parameter("settings", inspect.Parameter.KEYWORD_ONLY, default=None)
        call.__signature__ = signature.replace(parameters=[*signature.parameters.values(), extra])
        return call

    return decorate


def _shown(default: Any) -> str:
    """A default as one would type it: ``10,100,1000`` for a list."""
    return ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)


# --- the settings several commands share, defined once ---------------------------------------

DATA_DIR_HELP = "Folder with the four files (default: $FMNIST_DATA_DIR, cache, Debian's, download)."
VERIFY_HELP = "Check the SHA-256 of the data (--no-verify ONLY for custom IDX data sets laid out like Fashion-MNIST)."


def data_dir_param(help: str = DATA_DIR_HELP) -> Any:
    return param(None, help, path=True)


def verify_param(help: str = VERIFY_HELP) -> Any:
    return param(True, help)


def device_param() -> Any:
    return param("auto", "auto, cpu, cuda, cuda:N or mps.")


def tta_param(help: str = "Flip TTA (default: as trained).") -> Any:
    return param(None, help)


def calibrate_param() -> Any:
    return param(
        True,
        "Report the raw softmax, not the probabilities scaled by the temperature fitted on the validation split.",
        negatable=False,
    )


@dataclass(frozen=True)
class DataSettings:
    """Where the data set is and whether to check it: for commands that need nothing else."""

    data_dir: str | None = data_dir_param()
    verify: bool = verify_param()
