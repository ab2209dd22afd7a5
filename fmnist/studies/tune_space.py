"""The search space of ``fmnist tune``: what each trial may choose, in one place, and the
JSON or TOML file (``--space``) that narrows or widens it, checked against the training
config's schema before any trial starts. Needs no Optuna."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist.core.errors import FmnistError
from fmnist.training.config import TrainConfig, load_config_file


@dataclass(frozen=True)
class Dim:
    """One searched setting: a number in [low, high] (``log``: sampled log-uniformly), one
    of ``choices``, or a ``fixed`` value (a narrowed space may pin a setting)."""

    kind: str  # "float", "int", "choice" or "fixed"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple = ()
    fixed: Any = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["choices"] = list(self.choices)
        return d


# The search space, in one place. Every other setting is the `quick` recipe's (one-cycle
# SGD with Nesterov momentum, flip TTA). ``resnet_width`` is asked only when the model is
# the ResNet; its stages are width, 2×width and 4×width. ``epochs``'s upper end is the
# per-trial budget (--epochs-per-trial) unless a space file narrows it.
SPACE: dict[str, Dim] = {
    "model": Dim("choice", choices=("seed", "resnet")),
    "resnet_width": Dim("choice", choices=(16, 24, 32, 48)),
    "lr": Dim("float", 0.01, 1.0, log=True),
    "weight_decay": Dim("float", 1e-5, 5e-3, log=True),
    "batch_size": Dim("choice", choices=(64, 128, 256, 512)),
    "label_smoothing": Dim("float", 0.0, 0.2),
    "translate": Dim("int", 0, 3),
    "erase": Dim("float", 0.0, 0.5),
    "flip": Dim("choice", choices=(False, True)),
    "epochs": Dim("int", 1, None),
}
MODELS = ("seed", "resnet")


def default_space(budget: int) -> dict[str, Dim]:
    return {**SPACE, "epochs": dataclasses.replace(SPACE["epochs"], low=max(1, budget // 2), high=budget)}


# --- the space file ------------------------------------------------------------------------


def budget_space(trial_budget: str) -> dict[str, Dim]:
    """The space when each trial trains for a time: no ``epochs`` (the budget plans each
    trial's steps), and the budget pinned, so a study's space records it."""
    space = {k: v for k, v in SPACE.items() if k != "epochs"}
    return {**space, "time_budget": Dim("fixed", fixed=trial_budget)}


def load_space(
    path: str | Path | None, budget: int, base: TrainConfig, trial_budget: str | None = None
) -> dict[str, Dim]:
    """:data:`SPACE` with the entries of a JSON or TOML file replacing the defaults by name:
    ``lr = {low = 0.05, high = 0.5, log = true}``, ``model = {choices = ["resnet"]}`` or a
    plain value to pin it (``flip = true``). Every bound is checked against the config schema.
    With ``trial_budget`` (``--trial-budget``) each trial trains for that time, not for epochs."""
    space = budget_space(trial_budget) if trial_budget else default_space(budget)
    if path is None:
        return space
    src = f"--space {path}"
    for name, entry in load_config_file(path).items():
        if name not in SPACE:
            raise FmnistError(f"{src}: unknown setting {name!r} (the space has: {', '.join(SPACE)})")
        if name == "epochs" and trial_budget:
            raise FmnistError(
                f"{src}: 'epochs' is for --epochs-per-trial; with --trial-budget the budget plans each "
                "trial's steps, so leave epochs out of the space file"
            )
        space[name] = _parse_dim(name, entry, SPACE[name], src)
    for name, dim in space.items():
        if name != "time_budget":
            _check_dim(name, dim, budget, base, src)
    return space


def _parse_dim(name: str, entry: Any, default: Dim, src: str) -> Dim:
    if not isinstance(entry, dict):
        return Dim("fixed", fixed=entry)
    unknown = set(entry) - {"low", "high", "log", "choices"}
    if unknown:
        raise FmnistError(f"{src}: {name!r} has unknown keys {sorted(unknown)} (use low/high/log or choices)")
    if "choices" in entry:
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices or len(entry) > 1:
            raise FmnistError(f"{src}: {name!r}: choices must be a non-empty list, and alone")
        return Dim("choice", choices=tuple(choices))
    if default.kind not in ("float", "int"):
        raise FmnistError(f"{src}: {name!r} is chosen from a list; give choices = [...]")
    low, high = entry.get("low", default.low), entry.get("high", default.high)
    log = entry.get("log", default.log)
    if not isinstance(log, bool):
        raise FmnistError(f"{src}: {name!r}: log must be true or false")
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise FmnistError(f"{src}: {name!r}: low and high must be numbers, got {v!r}")
        if default.kind == "int" and not isinstance(v, int):
            raise FmnistError(f"{src}: {name!r}: low and high must be integers, got {v!r}")
    if low > high:
        raise FmnistError(f"{src}: {name!r}: low {low} is above high {high}")
    if log and low <= 0:
        raise FmnistError(f"{src}: {name!r}: a log range needs low > 0, got {low}")
    return Dim(default.kind, low, high, log)


def _values(dim: Dim) -> list[Any]:
    if dim.kind == "fixed":
        return [dim.fixed]
    if dim.kind == "choice":
        return list(dim.choices)
    return [dim.low, dim.high]


def _check_dim(name: str, dim: Dim, budget: int, base: TrainConfig, src: str) -> None:
    """Each extreme of the range (each choice) must make a valid training config."""
    for value in _values(dim):
        if name == "model":
            if value not in MODELS:
                raise FmnistError(f"{src}: 'model' may be {' or '.join(MODELS)}, got {value!r}")
        elif name == "resnet_width":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 512:
                raise FmnistError(f"{src}: 'resnet_width' must be whole numbers from 1 to 512, got {value!r}")
        elif name == "epochs" and isinstance(value, int) and value > budget:
            raise FmnistError(f"{src}: 'epochs' {value} is above the budget (--epochs-per-trial {budget})")
        else:
            base.merged({name: value}, src).validate(src)


def space_key(space: dict[str, Dim]) -> str:
    return json.dumps({k: v.to_dict() for k, v in space.items()}, sort_keys=True)
