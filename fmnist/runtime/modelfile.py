"""Model files: a safetensors file whose metadata says everything needed to rebuild the model.

The metadata is a typed :class:`ModelInfo`, built in one place (training) and read through
one function (:func:`read_model_info`). Loading never unpickles, compares every tensor's
shape and dtype with the model the metadata describes *before* allocating it (a small
file cannot make us build a huge model), checks a SHA-256 of the tensor data, and refuses
non-finite weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy
import safetensors
import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from fmnist._version import __version__
from fmnist.core.errors import ModelFileError
from fmnist.core.files import atomic_write_bytes
from fmnist.core.spec import CLASS_NAMES
from fmnist.models import build_model

FORMAT = "fmnist-model/2"
# Format 1 (fmnist 0.1) had no hash of the tensor data; such files still load, with a note.
OLD_FORMATS = ("fmnist-model/1",)
MODEL_FILE = "model.safetensors"
DATA_HASH_KEY = "tensor_sha256"
# The largest sensible fmnist model (a WRN-28-10) is about 150 MB; a bigger file is not ours.
MAX_MODEL_BYTES = 1 << 31
INPUT_DESCRIPTION = "1x28x28 grayscale, pixel values 0-255, light garment on black"


def versions() -> dict[str, str]:
    return {
        "fmnist": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "safetensors": safetensors.__version__,
    }


@dataclass
class ModelInfo:
    """What a model file says about its model. ``model`` and ``model_args`` rebuild it; the
    rest describes how it was trained and how well it did on the validation split."""

    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    normalization: dict[str, Any] = field(default_factory=dict)  # mean, std, mode
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    input: str = INPUT_DESCRIPTION
    params: int | None = None
    flops_per_image: int | None = None
    tta: bool = False  # predict with flip test-time augmentation by default
    preset: str | None = None
    epoch: int | None = None  # the epoch whose weights these are
    val_accuracy: float | None = None
    val_loss: float | None = None
    train_images: int | None = None
    val_images: int | None = None
    device: str | None = None
    precision: str | None = None
    # Temperature scaling, fitted on the validation split after training: probabilities are
    # softmax(logits / temperature). None (files written before temperature scaling, or no validation
    # split) means 1, the raw softmax. ``calibration`` says what the fit measured.
    temperature: float | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=versions)
    # Keys written by a newer fmnist: kept, so a round trip loses nothing.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_meta(self) -> dict[str, str]:
        """safetensors metadata is str -> str: every value JSON-encoded."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {"format": FORMAT, **{k: json.dumps(v) for k, v in {**self.extra, **values}.items()}}

    @classmethod
    def from_meta(cls, meta: dict[str, str], where: str = "model file") -> ModelInfo:
        """Decode and type-check metadata; any surprise is a :class:`ModelFileError`."""
        try:
            values = {k: json.loads(v) for k, v in meta.items() if k not in ("format", DATA_HASH_KEY)}
        except (json.JSONDecodeError, TypeError):
            raise ModelFileError(f"{where}: model metadata is damaged; retrain or restore the file") from None
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        kwargs: dict[str, Any] = {"extra": {k: v for k, v in values.items() if k not in known}}
        for name, f in known.items():
            if name in values:
                kwargs[name] = _checked(name, values[name], f.type, where)
        if "model" not in kwargs:
            raise ModelFileError(f"{where}: model metadata lacks the architecture name; retrain or restore the file")
        t = kwargs.get("temperature")
        if t is not None and not (0 < t < float("inf")):
            raise ModelFileError(
                f"{where}: temperature {t!r} is not a positive number; run `fmnist calibrate` on the run to refit it"
            )
        return cls(**kwargs)

    @property
    def softmax_temperature(self) -> float:
        """The temperature probabilities use: the fitted one, or 1 for an uncalibrated model."""
        return float(self.temperature) if self.temperature is not None else 1.0


_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool, "dict": dict, "list": list}


def _checked(name: str, value: Any, annotation: str, where: str) -> Any:
    """``value`` if it has the type ``annotation`` (a string such as ``"int | None"``) names."""
    allowed = [t.strip().split("[")[0] for t in str(annotation).split("|")]
    if value is None and "None" in allowed:
        return value
    for t in allowed:
        py = _TYPES.get(t)
        # bool is an int in Python; a metadata value true must not pass as a count
        if py is not None and isinstance(value, py) and not (isinstance(value, bool) and t in ("int", "float")):
            return float(value) if t == "float" else value
    raise ModelFileError(f"{where}: metadata key {name!r} has a value of the wrong type; retrain or restore the file")


def save_model(path: str | os.PathLike, model: torch.nn.Module, info: ModelInfo) -> None:
    """Weights plus self-describing metadata, written atomically, with a hash of the
    tensor data in the metadata."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = info.to_meta()
    # The data section does not depend on the metadata, so hash it once, then write again.
    digest = hashlib.sha256(_data_section(save_safetensors(state, metadata=meta))).hexdigest()
    atomic_write_bytes(path, _canonical(save_safetensors(state, metadata={**meta, DATA_HASH_KEY: digest})))


def _canonical(blob: bytes) -> bytes:
    """The same file with its JSON header's keys sorted. safetensors writes the metadata in
    its hash map's order, which changes from process to process; sorted, the same weights
    and metadata always give the same bytes (a resumed run's model file equals an
    uninterrupted run's). The header stays padded to 8 bytes, as the format asks."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.dumps(json.loads(blob[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + blob[8 + n :]


def _data_section(blob: bytes) -> bytes:
    """The tensor bytes of a safetensors file: what follows the 8-byte length and the header."""
    (n,) = struct.unpack("<Q", blob[:8])
    return blob[8 + n :]


def resolve_model_path(path: str | os.PathLike) -> Path:
    """A run folder means its ``model.safetensors``; a file means itself."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file; pass a run folder from `fmnist train` or its {MODEL_FILE}")
    return path


def _header(path: Path) -> tuple[dict[str, str], dict[str, tuple[tuple[int, ...], str]]]:
    """The metadata and every tensor's (shape, dtype), read from the header only."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # safetensors raises several types for damaged headers
        raise ModelFileError(
            f"{path}: damaged or not a safetensors model file ({_short(e)}); retrain or restore it"
        ) from None
    return meta, shapes


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """The metadata of a model file (or run folder), decoded and checked, without the weights."""
    path = resolve_model_path(path)
    return _read_info(path, _header(path)[0])


def _read_info(path: Path, meta: dict[str, str]) -> ModelInfo:
    fmt = meta.get("format")
    if fmt != FORMAT and fmt not in OLD_FORMATS:
        if isinstance(fmt, str) and fmt.startswith("fmnist-model/"):
            raise ModelFileError(
                f"{path}: written in {fmt}, which this fmnist ({__version__}) cannot read; upgrade fmnist"
            )
        raise ModelFileError(
            f"{path}: not an fmnist model file (no '{FORMAT}' marker); pass a file written by `fmnist train`"
        )
    return ModelInfo.from_meta(meta, str(path))


_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64", torch.float64: "F64"}


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelInfo]:
    """Rebuild the model a model file (or run folder) describes and load its weights.

    Returns ``(model in eval mode, info)``. Every check happens before the model's real
    memory is allocated: the file's size, its metadata, every tensor's name, shape and dtype
    against the architecture built on PyTorch's ``meta`` device, the data hash, finiteness.
    """
    path = resolve_model_path(path)
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelFileError(f"{path}: {size:,} bytes is larger than any fmnist model; pass the right file")
    meta, shapes = _header(path)
    info = _read_info(path, meta)
    expected = _expected_state(path, info)
    _compare(path, expected, shapes)
    blob = path.read_bytes()
    if meta.get("format") in OLD_FORMATS:
        warnings.warn(f"{path}: an fmnist 0.1 model file without a data hash; retrain to get one", stacklevel=2)
    elif hashlib.sha256(_data_section(blob)).hexdigest() != meta.get(DATA_HASH_KEY):
        raise ModelFileError(
            f"{path}: the weights do not match their recorded SHA-256 (the file is damaged); retrain or restore it"
        )
    try:
        state = load_safetensors(blob)
    except Exception as e:
        raise ModelFileError(f"{path}: weights are damaged ({_short(e)}); retrain or restore it") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"{path}: tensor {bad[0]!r} holds NaN or infinite values; retrain or restore the file")
    model = build_model(info.model, **info.model_args)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), info


def _expected_state(path: Path, info: ModelInfo) -> dict[str, tuple[tuple[int, ...], str]]:
    try:
        with torch.device("meta"):
            model = build_model(info.model, **info.model_args)
    except Exception as e:
        raise ModelFileError(
            f"{path}: cannot rebuild model {info.model!r} ({_short(e)}); is fmnist older than the file?"
        ) from None
    return {k: (tuple(v.shape), _DTYPES.get(v.dtype, str(v.dtype))) for k, v in model.state_dict().items()}


def _compare(path: Path, expected: dict, found: dict) -> None:
    missing = sorted(set(expected) - set(found))
    unknown = sorted(set(found) - set(expected))
    if missing or unknown:
        what = f"lacks {missing[0]!r}" if missing else f"has an unexpected tensor {unknown[0]!r}"
        raise ModelFileError(
            f"{path}: the weights do not match the model its metadata describes ({what}); retrain or restore it"
        )
    for key, (shape, dtype) in expected.items():
        if found[key][0] != shape:
            raise ModelFileError(
                f"{path}: tensor {key!r} has shape {list(found[key][0])}, the model needs {list(shape)}; "
                "the file is damaged or was edited"
            )
        if found[key][1] != dtype:
            raise ModelFileError(
                f"{path}: tensor {key!r} is {found[key][1]}, the model needs {dtype}; the file is damaged or was edited"
            )


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
