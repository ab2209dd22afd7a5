"""The resume state of a training run: one safetensors file whose tensors hold the model, the
EMA, the optimizer and the random-number generators, and whose metadata holds everything
else as JSON (epoch, step, history, best-so-far, scheduler, the configuration). Never pickle:
loading it runs no code. Written atomically, so a ``kill -9`` leaves the previous state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from fmnist._version import __version__
from fmnist.core.errors import FmnistError
from fmnist.core.files import atomic_write_bytes

FORMAT = "fmnist-resume/1"


def save_state(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {"format": FORMAT, "fmnist": __version__, "state": json.dumps(meta, allow_nan=True)}
    atomic_write_bytes(path, save_safetensors(state, metadata=header))


def load_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the JSON state; a damaged or foreign file is one :class:`FmnistError`."""
    path = Path(path)
    if not path.is_file():
        raise FmnistError(f"{path}: no resume state; the run cannot be continued, retrain it")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        if header.get("format") != FORMAT:
            raise FmnistError(f"{path}: not an fmnist resume state ({header.get('format') or 'no marker'}); retrain")
        if header.get("fmnist") != __version__:
            raise FmnistError(
                f"{path}: written by fmnist {header.get('fmnist')}, this is {__version__}; "
                "continue it with that version or retrain"
            )
        meta = json.loads(header["state"])
        tensors = load_safetensors(path.read_bytes())
    except FmnistError:
        raise
    except Exception as e:  # safetensors and json raise several types for damaged files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FmnistError(f"{path}: the resume state is damaged ({first}); retrain the run") from None
    return tensors, meta


# --- optimizer -------------------------------------------------------------------------------


def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state_dict split into tensors (``opt.<param>.<key>``) and JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entries in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entries)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = prefix + "."
    return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}
