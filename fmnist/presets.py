"""Named training recipes. A preset is a set of TrainConfig values; flags given on the
command line override it. `fmnist train --preset NAME --show-config` prints the result."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from .errors import FmnistError
from .train import TrainConfig

PRESETS: dict[str, dict[str, Any]] = {
    # The original notebook: its CNN, Adam 1e-3, batch 32, 5 epochs, no augmentation.
    "notebook": {},
}

ABOUT: dict[str, str] = {
    "notebook": "the original notebook's recipe: seed CNN, Adam, batch 32, 5 epochs (~90.5% test)",
}


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise FmnistError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values = {**PRESETS[name], "preset": name}
    known = {f.name for f in fields(TrainConfig)}
    for k, v in overrides.items():
        if k not in known:
            raise FmnistError(f"unknown training option {k!r}")
        if v is not None:
            values[k] = v
    return TrainConfig(**values)
