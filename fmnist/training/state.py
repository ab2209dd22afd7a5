"""The resume state of a training run: one safetensors file whose tensors hold the model, the
EMA, the optimizer and the random-number generators, and whose metadata holds everything
else as JSON (epoch, step, history, best-so-far, scheduler, the configuration). Never pickle:
loading it runs no code. Written atomically, so a ``kill -9`` leaves the previous state.

A SHA-256 over the header (the JSON state, tensor names, shapes, offsets) and the tensor data
is in the metadata and is checked before anything is used: the model file hashes only its
tensor data because its metadata is type-checked key by key, but the resume state's JSON
(epoch, history, scheduler) has no such check, and a flipped byte there resumes silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from fmnist._version import __version__
from fmnist.core.errors import FmnistError
from fmnist.core.files import atomic_write_bytes
from fmnist.runtime.modelfile import _canonical

FORMAT = "fmnist-resume/2"
OLD_FORMATS = ("fmnist-resume/1",)  # no hash; refused with its own message
HASH_KEY = "sha256"


def save_state(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {"format": FORMAT, "fmnist": __version__, "state": json.dumps(meta, allow_nan=True)}
    digest = state_digest(save_safetensors(state, metadata=header))
    atomic_write_bytes(path, _canonical(save_safetensors(state, metadata={**header, HASH_KEY: digest})))


def state_digest(blob: bytes) -> str:
    """SHA-256 of a safetensors file's header, with the digest itself left out and the keys
    sorted (safetensors' key order varies from process to process), and of its tensor data."""
    return _parse(blob)[1]


def _parse(blob: bytes) -> tuple[dict[str, Any], str]:
    """The header's metadata and the file's digest; ValueError when the file is too short or
    its header is not a safetensors header."""
    if len(blob) < 8:
        raise ValueError("shorter than a safetensors header")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError("the header runs past the end of the file")
    header = json.loads(blob[8 : 8 + n])
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise ValueError("the header is not a safetensors header")
    unsigned = {**header, "__metadata__": {k: v for k, v in meta.items() if k != HASH_KEY}}
    digest = hashlib.sha256(json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode())
    digest.update(memoryview(blob)[8 + n :])
    return meta, digest.hexdigest()


def load_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the JSON state; a damaged or foreign file is one :class:`FmnistError`.
    Nothing of it is used before its SHA-256 matches."""
    path = Path(path)
    if not path.is_file():
        raise FmnistError(f"{path}: no resume state; the run cannot be continued, retrain it")
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise FmnistError(f"{path}: cannot read the resume state ({e.strerror or e})") from None
    try:
        header, digest = _parse(blob)
        _check_header(path, header, digest)
        meta = json.loads(header["state"])
        tensors = load_safetensors(blob)
    except FmnistError:
        raise
    except Exception as e:  # safetensors and json raise several types for damaged files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FmnistError(f"{path}: the resume state is damaged ({first}); retrain the run") from None
    if not isinstance(meta, dict):
        raise FmnistError(f"{path}: the resume state is damaged (its state is not a JSON object); retrain the run")
    return tensors, meta


def _check_header(path: Path, header: dict[str, Any], digest: str) -> None:
    """The digest first: a damaged marker or version is "damaged", not "foreign"."""
    fmt = header.get("format")
    if HASH_KEY not in header and fmt != FORMAT:
        if fmt in OLD_FORMATS:
            raise FmnistError(
                f"{path}: a resume state from an older fmnist, without a checksum; "
                "continue it with that version or retrain"
            )
        raise FmnistError(f"{path}: not an fmnist resume state ({fmt or 'no marker'}); retrain")
    if header.get(HASH_KEY) != digest:
        raise FmnistError(
            f"{path}: the resume state is damaged (it does not match its recorded SHA-256); retrain the run"
        )
    if fmt != FORMAT:
        raise FmnistError(f"{path}: not an fmnist resume state ({fmt}); retrain")
    if header.get("fmnist") != __version__:
        raise FmnistError(
            f"{path}: written by fmnist {header.get('fmnist')}, this is {__version__}; "
            "continue it with that version or retrain"
        )


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
