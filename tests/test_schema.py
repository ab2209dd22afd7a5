"""The settings schema (fmnist.core.schema): checks with one-line errors, the options it
describes, and library functions that take a settings object or keywords."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fmnist.core.errors import FmnistError
from fmnist.core.schema import DataSettings, accepts_settings, check, cli_options, param, updated


@dataclass
class Example:
    name: str = param(help="A required name.")
    count: int = param(3, "How many.", min=1, max=10, flags=("--count", "-n"), formerly=("--number",))
    rate: float = param(0.5, "A rate.", above=0, below=1)
    mode: str = param("a", "A mode.", choices=("a", "b"))
    quiet: bool = param(False, "Say less.", negatable=False)
    check_it: bool = param(True, "Do not check.", negatable=False)
    flip: bool | None = param(None, "Flip, or as before.")
    folder: str | None = param(None, "A folder.", path=True)
    steps: list[int] | None = param(None, "Steps.", parse=lambda text: [int(t) for t in text.split(",")])
    hidden: int = param(0, cli=False)


@pytest.mark.parametrize(
    "values,message",
    [
        ({"count": 0}, "--count must be >= 1, got 0"),
        ({"count": 11}, "--count must be <= 10, got 11"),
        ({"count": True}, "--count must be an integer, got True"),
        ({"rate": 1.0}, "--rate must be < 1, got 1.0"),
        ({"rate": 0}, "--rate must be > 0, got 0"),
        ({"rate": math.nan}, "--rate must be a finite number"),
        ({"mode": "c"}, "--mode must be one of a, b, got 'c'"),
        ({"steps": [1, "2"]}, "--steps must be a list of integers"),
    ],
)
def test_checks_name_the_flag(values, message):
    with pytest.raises(FmnistError) as e:
        check(Example(name="x", **values))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_file_key_is_named_with_its_file():
    with pytest.raises(FmnistError, match=r"^s.toml: key 'count' must be an integer, got 'many'$"):
        updated(Example(name="x"), {"count": "many"}, "s.toml")
    with pytest.raises(FmnistError, match=r"^s.toml: unknown key 'nope' is not a setting"):
        updated(Example(name="x"), {"nope": 1}, "s.toml")
    assert updated(Example(name="x"), {"count": 4, "rate": None, "folder": Path("f")}).folder == "f"


def test_rules_are_checked_when_declared():
    with pytest.raises(TypeError, match="unknown rules"):
        param(1, "x", minimum=0)


def test_options_say_flags_type_default_and_rules():
    o = {opt.name: opt for opt in cli_options(Example)}
    assert "hidden" not in o
    assert o["name"].required and o["name"].decls == ("--name",)
    assert o["count"].decls == ("--count", "-n") and o["count"].formerly == ("--number",)
    assert o["count"].help == "How many. [>= 1 and <= 10] (default: 3)"
    assert o["rate"].help == "A rate. [> 0 and < 1] (default: 0.5)" and o["rate"].type is float
    assert o["quiet"].decls == ("--quiet",) and o["quiet"].value(True) is True and o["quiet"].help == "Say less."
    assert o["check_it"].decls == ("--no-check-it",) and o["check_it"].value(True) is False
    assert o["flip"].decls == ("--flip/--no-flip",) and o["flip"].value(None) is None
    assert o["folder"].type is Path and o["folder"].value(Path("a/b")) == "a/b"
    assert o["steps"].type is str and o["steps"].value("1,2") == [1, 2]


def test_a_library_function_takes_settings_or_keywords():
    @accepts_settings(DataSettings, verify="check")
    def load(name: str, data_dir: str | None = None, check: bool = True) -> tuple:
        return name, data_dir, check

    assert load("a", "d", check=False) == ("a", "d", False)
    assert load("a", settings=DataSettings(data_dir="e", verify=False)) == ("a", "e", False)
    with pytest.raises(TypeError):
        load("a", data_dir="d", settings=DataSettings())  # said twice
    with pytest.raises(TypeError, match="no parameter 'verify'"):
        accepts_settings(DataSettings)(lambda data_dir=None: None)


def test_the_schema_imports_neither_torch_nor_typer():
    code = "import sys, fmnist.core.schema; print(sorted(m for m in ('torch', 'typer') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
