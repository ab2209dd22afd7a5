"""Inference, used by everything that predicts: training's validation, evaluate, predict,
export, the report and the server. Device and precision choice, logits (with flip TTA),
probabilities (temperature-scaled when the model file holds a fitted temperature: the one
:func:`softmax` every consumer reports through), and a :class:`Predictor` that runs a model
file on PyTorch or, when an up-to-date ``model.onnx`` sits beside it, on ONNX Runtime.
Never imports training.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from fmnist.core.errors import FmnistError
from fmnist.core.spec import NUM_CLASSES
from fmnist.runtime.modelfile import ModelInfo, load_model, read_model_info, resolve_model_path
from fmnist.runtime.onnx_graph import GRAPH_HASH_KEY, graph_sha256, read_onnx

ONNX_FILE = "model.onnx"
SOURCE_HASH_KEY = "fmnist_source_sha256"  # ONNX metadata: which model.safetensors it came from
BACKENDS = ("auto", "torch", "onnx")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is the best device PyTorch sees (CUDA, then MPS, then the CPU)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise FmnistError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise FmnistError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FmnistError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FmnistError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise FmnistError("--device mps asked for, but MPS is not available; use --device cpu")
    return dev


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX-512 BF16 or AMX). Without
    them bf16 autocast is emulated and slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        # Measured on AVX-512-BF16 CPUs: about 2x faster per step (docs/benchmarks.md).
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return None


def _to_channels_last(model: torch.nn.Module) -> None:
    """Convert the model's weights to channels-last order unless that is done already.
    ``Module.to`` walks every parameter (0.16 ms a call for the seed CNN, 0.7 ms for the quick
    ResNet on 2 cores), too slow for a server's every request; ``to`` converts all 4-D weights
    or none, so the first one whose layout tells (several input channels, a kernel larger than
    1x1) says whether this model was converted."""
    probe = next(
        (p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1), None
    )
    if probe is not None and not probe.is_contiguous(memory_format=torch.channels_last):
        model.to(memory_format=torch.channels_last)


# Images per forward pass when predicting: on 2 CPU cores with channels-last, 256 ran 15-30%
# faster than 64, 128, 512 or 1000 for both the seed CNN and the quick ResNet (docs/benchmarks.md).
EVAL_BATCH = 256


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int = EVAL_BATCH,
    tta: bool = False,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool | None = None,
) -> torch.Tensor:
    """Float32 logits for uint8 or float images of shape (N, 1, 28, 28), in eval mode.
    With ``tta`` each image's logits are the mean of its own and its mirror image's.

    ``channels_last`` (default: on CPU and CUDA, not on MPS) puts the model's weights and the
    images in channels-last memory order, where oneDNN's convolutions run 2.5-3.5x faster on
    CPU; the model is converted in place, once."""
    model.eval()
    device = next(model.parameters()).device
    if channels_last is None:
        channels_last = device.type in ("cpu", "cuda")
    if channels_last:
        _to_channels_last(model)
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device, non_blocking=True).float()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = model(x).float()
            if tta:
                logits = 0.5 * (logits + model(x.flip(3)).float())
        out.append(logits)
    return torch.cat(out) if out else torch.empty(0, NUM_CLASSES, device=device)


def softmax(logits: torch.Tensor | np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities softmax(logits / temperature) (float64, rows sum to 1), computed in
    float64. Every probability fmnist reports comes from here."""
    t = torch.as_tensor(logits).detach().cpu().double()
    return torch.softmax(t / float(temperature), 1).numpy()


def temperature_of(info: ModelInfo | None, calibrate: bool = True) -> float:
    """The temperature to report probabilities with: the model file's fitted one, or 1 for
    the raw softmax (``calibrate=False``, a model without one, or no model file)."""
    return info.softmax_temperature if calibrate and info is not None else 1.0


def probabilities(
    model: torch.nn.Module, images: torch.Tensor, tta: bool = False, temperature: float = 1.0
) -> np.ndarray:
    """Softmax probabilities (float64, N×10) for pixel images shaped N×1×28×28 (0–255)."""
    return softmax(predict_logits(model, images, tta=tta), temperature)


# --- ONNX Runtime ----------------------------------------------------------------------


def have_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def onnx_session(path: str | os.PathLike | bytes, threads: int | None = None, name: str | None = None):
    """An ONNX Runtime CPU session for ``path`` (a file or the model's bytes). ``threads``:
    intra-op threads (default: ONNX Runtime's, one per core); a server running one
    session per worker process wants 1, or the workers fight over the cores."""
    try:
        import onnxruntime as ort  # optional: only `fmnist[onnx]` installs it
    except ImportError:
        raise FmnistError("onnxruntime is not installed; pip install 'fmnist[onnx]' or use --backend torch") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: ORT's warnings are about its own internals
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    src = path if isinstance(path, bytes) else str(path)
    try:
        return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        where = name or ("the exported model" if isinstance(path, bytes) else str(path))
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FmnistError(f"{where}: ONNX Runtime cannot load it ({first}); re-run `fmnist export`") from None


def onnx_logits(session, images: np.ndarray | torch.Tensor, batch_size: int = 1000, tta: bool = False) -> np.ndarray:
    """Float32 logits from an ONNX session for pixel images N×1×28×28 (0–255)."""
    x_all = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    name = session.get_inputs()[0].name
    first = [session.get_outputs()[0].name]  # the logits; a newer export also has probabilities
    out = []
    for i in range(0, len(x_all), batch_size):
        x = np.ascontiguousarray(x_all[i : i + batch_size], dtype=np.float32)
        logits = session.run(first, {name: x})[0]
        if tta:  # the same mirror-image average as predict_logits
            logits = 0.5 * (logits + session.run(first, {name: np.ascontiguousarray(x[..., ::-1])})[0])
        out.append(logits)
    return np.concatenate(out) if out else np.empty((0, NUM_CLASSES), np.float32)


class Predictor:
    """A model ready to predict, on PyTorch or ONNX Runtime (``backend`` says which)."""

    def __init__(self, backend: str, info: ModelInfo | None, model: torch.nn.Module | None = None, session=None):
        self.backend, self.info, self.model, self.session = backend, info, model, session

    @property
    def tta(self) -> bool:
        """Whether the model was trained to be used with flip TTA."""
        return bool(self.info.tta) if self.info is not None else False

    def logits(self, images: torch.Tensor | np.ndarray, tta: bool | None = None) -> np.ndarray:
        use_tta = self.tta if tta is None else tta
        if self.session is not None:
            return onnx_logits(self.session, images, tta=use_tta)
        return predict_logits(self.model, torch.as_tensor(images), tta=use_tta).cpu().numpy()

    @property
    def temperature(self) -> float:
        """The fitted temperature from the model file (1 if it has none)."""
        return temperature_of(self.info)

    def probabilities(
        self, images: torch.Tensor | np.ndarray, tta: bool | None = None, calibrate: bool = True
    ) -> np.ndarray:
        """Float64 N×10 probabilities for pixel images N×1×28×28 (0–255): calibrated with the
        model's temperature, or the raw softmax with ``calibrate=False``."""
        return softmax(self.logits(images, tta), temperature_of(self.info, calibrate))


def load_predictor(
    run: str | os.PathLike | torch.nn.Module, backend: str = "auto", threads: int | None = None
) -> Predictor:
    """``backend``: "torch", "onnx" (the run's model.onnx, which must match its weights) or
    "auto" (ONNX when that works, PyTorch otherwise). ``threads``: ONNX Runtime's intra-op
    threads (PyTorch's are per process: ``torch.set_num_threads``)."""
    if backend not in BACKENDS:
        raise FmnistError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if isinstance(run, torch.nn.Module):
        if backend == "onnx":
            raise FmnistError("the ONNX backend needs a run folder or model file, not a loaded model")
        return Predictor("torch", None, model=run)
    path = resolve_model_path(run)
    if backend == "onnx" or (backend == "auto" and (path.parent / ONNX_FILE).exists() and have_onnxruntime()):
        try:
            return Predictor("onnx", read_model_info(path), session=matching_onnx(path, threads))
        except FmnistError as e:
            if backend == "onnx":
                raise
            warnings.warn(f"using PyTorch: {e}", stacklevel=2)
    model, info = load_model(path)
    return Predictor("torch", info, model=model)


def matching_onnx(model_path: Path, threads: int | None = None):
    """The session of the ``model.onnx`` beside ``model_path``, if it was exported from
    exactly these weights."""
    onnx_path = model_path.parent / ONNX_FILE
    if not onnx_path.is_file():
        raise FmnistError(f"{onnx_path}: no such file; run `fmnist export {model_path.parent}` first")
    raw = onnx_path.read_bytes()  # once: the graph checked is the graph served
    proto, meta = read_onnx(raw, onnx_path)
    source = file_sha256(model_path)
    # A retrained run keeps the old model.onnx beside new weights; it must not answer for them.
    if meta.get(SOURCE_HASH_KEY) != source:
        raise FmnistError(f"{onnx_path} was exported from other weights than {model_path}; re-run `fmnist export`")
    # The metadata says so, but another run's graph with this run's metadata copied over it
    # would say so too: the graph itself, with these weights' hash, must hash to the record.
    if GRAPH_HASH_KEY not in meta:
        raise FmnistError(f"{onnx_path} has no hash of its graph (an older fmnist exported it); re-run `fmnist export`")
    if graph_sha256(proto, source) != meta[GRAPH_HASH_KEY]:
        raise FmnistError(
            f"{onnx_path} holds another graph than the one exported from {model_path} (another run's, or edited); "
            "re-run `fmnist export`"
        )
    return onnx_session(raw, threads, name=str(onnx_path))
