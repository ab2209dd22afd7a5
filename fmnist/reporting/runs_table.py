"""`fmnist runs`: every run folder below some folders, one row each, read through
:class:`~fmnist.runtime.runs.RunFolder` (the one owner of a run folder's file names).

A folder that is not what it claims (a config.json that is not JSON, a summary with text where
numbers belong, a model without its config) is a row that says so, never a traceback: the
table is what a user reaches for when something went wrong.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fmnist.core.errors import FmnistError
from fmnist.runtime.modelfile import read_model_info
from fmnist.runtime.runs import CONFIG, METRICS, MODEL, RESUME, TEST_METRICS, RunFolder

# Folders below a run folder that hold no runs of their own (MLflow's artifact copies of a
# run folder look exactly like one, and would be listed twice).
SKIPPED_DIRS = {"tensorboard", "mlruns", "__pycache__", "node_modules"}
# Keys of config.json that are not settings: where the run was written, what it resolved to.
NOT_SETTINGS = ("format", "resolved", "out", "overwrite")
STATES = ("finished", "interrupted", "running", "failed", "damaged", "foreign")


@dataclass
class RunRow:
    """One line of `fmnist runs` (and one object of its --json)."""

    name: str  # the folder, as the user would type it
    state: str  # one of STATES
    preset: str | None = None
    model: str | None = None
    params: int | None = None
    epochs_run: int | None = None
    epochs: int | None = None  # what the config asked for
    best_epoch: int | None = None
    val_accuracy: float | None = None  # of the best epoch
    test_accuracy: float | None = None  # test_metrics.json, once `fmnist evaluate` ran
    ece: float | None = None
    train_seconds: float | None = None
    device: str | None = None
    hardware: str | None = None  # the CPU kind or the GPU's name (runs from before fmnist 0.3: None)
    precision: str | None = None
    date: str | None = None  # finished, or last written; local time
    note: str = ""  # why a folder is damaged or foreign, how to go on with an unfinished one

    @property
    def resumable(self) -> bool:
        return self.state == "interrupted"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "resumable": self.resumable}


FIELDS = tuple(f.name for f in dataclasses.fields(RunRow))


# --- finding -----------------------------------------------------------------------------------


def find_runs(dirs: Iterable[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(name, path) of every folder at or below ``dirs`` that holds a run or looks like one."""
    found: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for top in dirs:
        top = Path(top)
        if not top.is_dir():
            raise FmnistError(f"{top}: no such folder; give folders that hold run folders (default runs/)")
        for path in _walk(top):
            key = path.resolve()
            if key not in seen and RunFolder(path).status not in ("missing", "empty"):
                seen.add(key)
                found.append((str(path), path))
    return found


def _walk(top: Path) -> Iterable[Path]:
    yield top
    try:
        children = sorted(p for p in top.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:  # an unreadable folder holds no run we could show
        return
    for child in children:
        if not child.name.startswith(".") and child.name not in SKIPPED_DIRS:
            yield from _walk(child)


# --- reading one folder --------------------------------------------------------------------------


def read_row(name: str, path: Path) -> RunRow:
    """The row of one folder; never raises for what is in the folder."""
    folder = RunFolder(path)
    status = folder.status
    if status == "foreign":
        return _foreign_or_damaged(name, folder)
    row = RunRow(name, "finished" if status == "finished" else _unfinished_state(folder))
    try:
        _read_config(row, folder.read_config())
        if status == "finished":
            _read_summary(row, folder.read_summary().to_dict())
            if not (folder / MODEL).is_file():
                raise FmnistError(f"{MODEL} is missing")
        else:
            _read_history(row, folder)
    except FmnistError as e:
        row.state, row.note = "damaged", _short(str(e), folder)
        return row
    _read_test_metrics(row, folder)
    if row.date is None:
        row.date = _mtime(folder / (METRICS if (folder / METRICS).is_file() else CONFIG))
    return row


def _unfinished_state(folder: RunFolder) -> str:
    if folder.running:
        return "running"
    return "interrupted" if (folder / RESUME).is_file() else "failed"


def _foreign_or_damaged(name: str, folder: RunFolder) -> RunRow:
    """An fmnist model file without a readable fmnist config is a damaged run; anything else
    that merely looks like a run is someone else's folder."""
    try:
        info = read_model_info(folder / MODEL)
    except (FmnistError, OSError, ValueError):
        return RunRow(name, "foreign", note="files named like a run's that fmnist did not write")
    row = RunRow(name, "damaged", preset=info.preset, model=info.model, params=_int(info.params))
    row.note = f"{CONFIG} is missing or not fmnist's; the model file is intact"
    row.date = _mtime(folder / MODEL)
    return row


def _read_config(row: RunRow, config: dict[str, Any]) -> None:
    resolved = config.get("resolved") if isinstance(config.get("resolved"), dict) else {}
    row.preset, row.model = _str(config.get("preset")), _str(config.get("model"))
    row.epochs = _int(config.get("epochs"))
    row.params, row.device = _int(resolved.get("params")), _str(resolved.get("device"))
    row.precision = _str(resolved.get("precision"))
    row.hardware = _str(resolved.get("hardware"))


def _read_summary(row: RunRow, summary: dict[str, Any]) -> None:
    row.val_accuracy, row.best_epoch = _float(summary.get("val_accuracy")), _int(summary.get("best_epoch"))
    row.epochs_run, row.train_seconds = _int(summary.get("epochs_run")), _float(summary.get("train_seconds"))
    row.params = _int(summary.get("params")) or row.params
    row.device = _str(summary.get("device")) or row.device
    row.precision = _str(summary.get("precision")) or row.precision
    finished = _str(summary.get("finished"))
    row.date = finished.replace("T", " ")[:16] if finished else None


def _read_history(row: RunRow, folder: RunFolder) -> None:
    """An unfinished run: what its metrics.csv says so far (nothing if no epoch ended)."""
    history = folder.read_metrics() if (folder / METRICS).is_file() else []
    row.epochs_run = len(history)
    scored = [r for r in history if math.isfinite(r["val_accuracy"])]
    if scored:
        best = max(scored, key=lambda r: r["val_accuracy"])
        row.val_accuracy, row.best_epoch = best["val_accuracy"], int(best["epoch"])
    if history:
        row.train_seconds = history[-1].get("elapsed")
    if row.state == "interrupted":
        row.note = f"resumable: fmnist train --resume {row.name}"
    elif row.state == "failed":
        row.note = f"stopped without a resume state ({RESUME}); retrain with --overwrite"


def _read_test_metrics(row: RunRow, folder: RunFolder) -> None:
    if not (folder / TEST_METRICS).is_file():
        return
    try:
        metrics = folder.read_json(TEST_METRICS)
    except FmnistError:
        row.note = f"{TEST_METRICS} is unreadable; run `fmnist evaluate {row.name}` again"
        return
    row.test_accuracy, row.ece = _float(metrics.get("test_accuracy")), _float(metrics.get("ece"))


def _short(text: str, folder: RunFolder) -> str:
    return text.replace(f"{folder.path}/", "").replace(str(folder.path), "the folder")


def _mtime(path: Path) -> str | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime).isoformat(sep=" ", timespec="minutes")
    except OSError:
        return None


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


# --- the table --------------------------------------------------------------------------------


def list_runs(dirs: Iterable[str | os.PathLike], where: Iterable[str] = (), sort: str = "date") -> list[RunRow]:
    """The rows of every run below ``dirs`` that pass every ``where`` test, sorted by ``sort``
    (a field name; a leading ``-`` sorts descending)."""
    tests = [parse_where(w) for w in where]
    key, descending = sort.removeprefix("-"), sort.startswith("-")
    _check_field(key, "--sort")
    rows = [read_row(name, path) for name, path in find_runs(dirs)]
    rows = [r for r in rows if all(t(r) for t in tests)]
    known = [r for r in rows if getattr(r, key) is not None]
    known.sort(key=lambda r: (getattr(r, key), r.name), reverse=descending)
    return known + sorted((r for r in rows if getattr(r, key) is None), key=lambda r: r.name)


_WHERE = re.compile(r"^\s*([a-z_]+)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$")
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def parse_where(text: str) -> Callable[[RunRow], bool]:
    """``model=resnet``, ``state!=finished``, ``val_accuracy>0.9`` (or ``>90%``), ``epochs_run>=3``:
    a test of one row. Text compares without regard to case; a row without the value fails."""
    m = _WHERE.match(text)
    if not m:
        raise FmnistError(f"--where {text!r}: use FIELD=VALUE, FIELD!=VALUE or FIELD>NUMBER (also >=, <, <=)")
    key, op, raw = m.groups()
    _check_field(key, "--where")
    kind = str(next(f.type for f in dataclasses.fields(RunRow) if f.name == key))
    numeric = "int" in kind or "float" in kind
    if numeric:
        try:
            value: Any = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
        except ValueError:
            raise FmnistError(f"--where {text!r}: {key} is a number; compare it with a number") from None
    elif op in ("=", "!="):
        value = raw.lower()
    else:
        raise FmnistError(f"--where {text!r}: {key} is text; compare it with = or !=")

    def test(row: RunRow) -> bool:
        have = getattr(row, key)
        if have is None:
            return op == "!="
        return _COMPARE[op](have if numeric else str(have).lower(), value)

    return test


def _check_field(key: str, option: str) -> None:
    if key not in FIELDS:
        raise FmnistError(f"{option}: no field {key!r}; fields: {', '.join(FIELDS)}")


def flat_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A run's settings from its config.json, one level deep (``model_args.widths``), without
    the keys that only say where it was written."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key in NOT_SETTINGS:
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat
