"""Model files and atomic writes.

A model file is a safetensors file whose metadata says everything needed to rebuild the
model: architecture name and arguments, normalization, class names, library versions and
validation accuracy. Loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import ModelFileError

FORMAT = "fmnist-model/1"
MODEL_FILE = "model.safetensors"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file owner-only; give it the permissions a plain open() would.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def versions() -> dict[str, str]:
    import numpy
    import safetensors

    from . import __version__

    return {
        "fmnist": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "safetensors": safetensors.__version__,
    }


def save_model(path: str | os.PathLike, model: torch.nn.Module, info: dict[str, Any]) -> None:
    """Save weights plus self-describing metadata. ``info`` needs at least ``model`` (the
    registry name) and ``model_args``; anything JSON-serialisable may be added."""
    from safetensors.torch import save

    if "model" not in info or "model_args" not in info:
        raise ValueError("info needs 'model' and 'model_args'")
    # safetensors metadata is str -> str, so every value is JSON-encoded.
    meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in info.items()}}
    meta.setdefault("versions", json.dumps(versions()))
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata=meta))


def read_model_info(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a model file, decoded, without loading the weights."""
    from safetensors import safe_open

    path = resolve_model_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for damaged headers
        raise ModelFileError(
            f"{path}: damaged or not a safetensors model file ({_short(e)}); retrain or restore it"
        ) from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: not an fmnist model file (no '{FORMAT}' marker); pass a file written by `fmnist train`"
        )
    try:
        return {k: json.loads(v) for k, v in meta.items() if k != "format"}
    except json.JSONDecodeError:
        raise ModelFileError(f"{path}: model metadata is damaged; retrain or restore the file") from None


def resolve_model_path(path: str | os.PathLike) -> Path:
    """A run folder means its ``model.safetensors``; a file means itself."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file; pass a run folder from `fmnist train` or its {MODEL_FILE}")
    return path


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model described by a model file (or run folder) and load its weights.

    Returns ``(model in eval mode, info)``.
    """
    from safetensors.torch import load_file

    from .models import build_model

    path = resolve_model_path(path)
    info = read_model_info(path)
    try:
        model = build_model(info["model"], **info.get("model_args", {}))
    except ModelFileError:
        raise
    except Exception as e:
        raise ModelFileError(
            f"{path}: cannot rebuild model {info.get('model')!r} ({_short(e)}); is fmnist older than the file?"
        ) from None
    try:
        state = load_file(str(path), device=str(device))
        model.load_state_dict(state, strict=True)
    except Exception as e:
        raise ModelFileError(
            f"{path}: weights are damaged or do not match the model ({_short(e)}); retrain or restore it"
        ) from None
    return model.to(device).eval(), info


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
