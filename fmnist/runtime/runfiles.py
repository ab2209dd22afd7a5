"""What the JSON files of a run folder must hold, checked each time one is read back.

The model file and the resume state carry a SHA-256 (fmnist/modelfile.py, fmnist/state.py);
these JSON files do not, because a user may edit them (``config.json`` is meant to be
reused with ``--config``). So they are checked for damage and impossible values instead:
the right JSON type, the keys the readers need, each known key's type and range. A file
that fails is one :class:`FmnistError` naming the file and the key; an edit that is still
valid passes. ``config.json`` is checked by the same rules ``fmnist train --config`` uses.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fmnist.core.errors import FmnistError

# key -> (allowed kinds, lowest, highest). Kinds: int, number (int or float, never bool),
# str, bool, dict, list, null. Keys not listed are not checked (a newer fmnist may add some).
Schema = dict[str, tuple[tuple[str, ...], float | None, float | None]]

SUMMARY: Schema = {
    "model": (("str",), None, None),
    "preset": (("str", "null"), None, None),
    "best_epoch": (("int", "null"), 1, None),
    "val_accuracy": (("number", "null"), 0, 1),
    "val_loss": (("number", "null"), 0, None),
    "epochs_run": (("int",), 0, None),
    "train_seconds": (("number",), 0, None),
    "params": (("int", "null"), 0, None),
    "flops_per_image": (("int", "null"), 0, None),
    "device": (("str", "null"), None, None),
    "precision": (("str", "null"), None, None),
    "threads": (("int",), 0, None),
    "processes": (("int",), 1, None),
    "temperature": (("number", "null"), 0, None),
    "finished": (("str",), None, None),
    "versions": (("dict",), None, None),
}
TEST_METRICS: Schema = {
    "test_accuracy": (("number",), 0, 1),
    "test_loss": (("number", "null"), 0, None),
    "test_images": (("int",), 0, None),
    "errors": (("int",), 0, None),
    "macro_f1": (("number", "null"), 0, 1),
    "ece": (("number", "null"), 0, 1),
    "ece_uncalibrated": (("number", "null"), 0, 1),
    "temperature": (("number", "null"), 0, None),
    "calibrated": (("bool",), None, None),
    "tta": (("bool",), None, None),
    "model": (("str",), None, None),
    "val_accuracy": (("number", "null"), 0, 1),
    "per_class": (("list",), None, None),
    "confusion_matrix": (("list",), None, None),
    "class_names": (("list",), None, None),
}
# name -> (schema, keys that must be there, what to do about a bad file)
CHECKED = {
    "summary.json": (SUMMARY, ("model", "val_accuracy", "epochs_run"), "restore it or retrain"),
    "test_metrics.json": (TEST_METRICS, ("test_accuracy", "test_images"), "run `fmnist evaluate` again to rewrite it"),
}
CONFIG_REMEDY = "fix or restore it, or retrain"
# Keys whose lowest value is excluded (a temperature of 0 divides by zero).
ABOVE = ("temperature",)

_WORDS = {
    "int": "an integer",
    "number": "a number",
    "str": "a string",
    "bool": "true or false",
    "dict": "an object",
    "list": "a list",
    "null": "null",
}


def parse_run_json(path: Path, text: str) -> dict[str, Any]:
    """``text`` (the content of ``path``) as a checked JSON object, or :class:`FmnistError`."""
    remedy = CONFIG_REMEDY if path.name == "config.json" else CHECKED.get(path.name, ({}, (), "restore it"))[2]
    if not text.strip():
        raise FmnistError(f"{path}: the file is empty; {remedy}")
    try:
        value = json.loads(text)
    except ValueError as e:
        raise FmnistError(f"{path}: damaged, not JSON ({e}); {remedy}") from None
    if not isinstance(value, dict):
        raise FmnistError(f"{path}: expected a JSON object, found {_kind(value)}; {remedy}")
    if path.name == "config.json":
        # Its settings are checked where they are used, by TrainConfig's own rules
        # (fmnist.training.config.read_run_config): this layer sits below the training schema.
        for key, kind in (("format", str), ("resolved", dict)):
            if key in value and not isinstance(value[key], kind):
                raise FmnistError(f"{path}: {key!r} must be {_WORDS[kind.__name__]}; {CONFIG_REMEDY}")
    elif path.name in CHECKED:
        schema, required, _ = CHECKED[path.name]
        check_schema(path, value, schema, required, remedy)
    return value


def check_schema(path: Path, value: dict[str, Any], schema: Schema, required: tuple[str, ...], remedy: str) -> None:
    for key in required:
        if key not in value:
            raise FmnistError(f"{path}: lacks {key!r}; {remedy}")
    for key, (kinds, lo, hi) in schema.items():
        if key in value and not _fits(value[key], kinds, lo, hi, key in ABOVE):
            allowed = " or ".join(_WORDS[k] for k in kinds)
            bounds = f" {'above' if key in ABOVE else 'from'} {lo:g}" if lo is not None else ""
            bounds += f" to {hi:g}" if hi is not None else (" up" if lo is not None and key not in ABOVE else "")
            raise FmnistError(f"{path}: {key!r} must be {allowed}{bounds}, found {_short(value[key])}; {remedy}")


def _fits(x: Any, kinds: tuple[str, ...], lo: float | None, hi: float | None, above: bool = False) -> bool:
    if x is None:
        return "null" in kinds
    if isinstance(x, bool):
        return "bool" in kinds
    if isinstance(x, float) and math.isnan(x):  # what an older fmnist wrote for "no validation split"
        return "number" in kinds and "null" in kinds
    if (isinstance(x, int) and ("int" in kinds or "number" in kinds)) or (isinstance(x, float) and "number" in kinds):
        low_ok = lo is None or (x > lo if above else x >= lo)
        return low_ok and (hi is None or x <= hi)
    return any(isinstance(x, t) for t, k in ((str, "str"), (dict, "dict"), (list, "list")) if k in kinds)


def _kind(x: Any) -> str:
    return {list: "a list", str: "a string", bool: "true or false", type(None): "null"}.get(type(x), "a number")


def _short(x: Any) -> str:
    text = json.dumps(x) if not isinstance(x, float) or math.isfinite(x) else str(x)
    return text if len(text) <= 60 else text[:57] + "..."
