"""Inference: predictions for test images by index (the notebook's question) with the
predicted and actual label, whether they match, and a real softmax confidence; and for
the user's own image files.

Prediction runs on ONNX Runtime when an up-to-date ``model.onnx`` (from ``fmnist export``)
sits beside the model and onnxruntime is installed, on PyTorch otherwise; both give the
same answers (tests/test_export.py checks it)."""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import atomic_write_bytes, load_model, read_model_info, resolve_model_path
from .data import CLASS_NAMES, load_split
from .errors import FmnistError


@dataclass
class Prediction:
    index: int | None  # test-set index, or None for a user's image
    predicted: int
    predicted_name: str
    confidence: float  # softmax probability of the predicted class, in [0, 1]
    top: list[dict[str, Any]]  # [{"label", "name", "probability"}], best first
    actual: int | None = None
    actual_name: str | None = None
    match: bool | None = None
    source: str | None = None  # file name for a user's image
    preprocessed: str | None = None  # where the 28×28 image the model saw was saved, if asked

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: v for k, v in d.items() if v is not None or k in ("actual", "actual_name", "match")}


def probabilities(model: torch.nn.Module, images: torch.Tensor, tta: bool = False) -> np.ndarray:
    """Softmax probabilities (float64, N×10) for pixel images shaped N×1×28×28 (0–255)."""
    from .train import predict_logits

    logits = predict_logits(model, images, 1000, tta)
    return torch.softmax(logits.double(), 1).cpu().numpy()


BACKENDS = ("auto", "torch", "onnx")
ONNX_FILE = "model.onnx"
SOURCE_HASH_KEY = "fmnist_source_sha256"  # ONNX metadata: which model.safetensors it came from


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def onnx_session(path: str | os.PathLike):
    """An ONNX Runtime CPU session for ``path`` (a file or the model's bytes)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise FmnistError("onnxruntime is not installed; pip install 'fmnist[onnx]' or use --backend torch") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: ORT's warnings are about its own internals
    src = path if isinstance(path, bytes) else str(path)
    try:
        return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        where = "the exported model" if isinstance(path, bytes) else str(path)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FmnistError(f"{where}: ONNX Runtime cannot load it ({first}); re-run `fmnist export`") from None


def onnx_logits(session, images: np.ndarray | torch.Tensor, batch_size: int = 1000, tta: bool = False) -> np.ndarray:
    """Float32 logits from an ONNX session for pixel images N×1×28×28 (0–255)."""
    x_all = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    name = session.get_inputs()[0].name
    out = []
    for i in range(0, len(x_all), batch_size):
        x = np.ascontiguousarray(x_all[i : i + batch_size], dtype=np.float32)
        logits = session.run(None, {name: x})[0]
        if tta:  # the same mirror-image average as fmnist.train.predict_logits
            logits = 0.5 * (logits + session.run(None, {name: np.ascontiguousarray(x[..., ::-1])})[0])
        out.append(logits)
    return np.concatenate(out) if out else np.empty((0, len(CLASS_NAMES)), np.float32)


class Predictor:
    """A model ready to predict, on PyTorch or ONNX Runtime (``backend`` says which)."""

    def __init__(self, backend: str, info: dict[str, Any], model: torch.nn.Module | None = None, session=None):
        self.backend, self.info, self.model, self.session = backend, info, model, session

    def probabilities(self, images: torch.Tensor, tta: bool = False) -> np.ndarray:
        if self.session is not None:
            logits = torch.from_numpy(onnx_logits(self.session, images, tta=tta))
            return torch.softmax(logits.double(), 1).numpy()
        return probabilities(self.model, images, tta)


def load_predictor(run: str | os.PathLike | torch.nn.Module, backend: str = "auto") -> Predictor:
    """``backend``: "torch", "onnx" (the run's model.onnx, which must match its weights) or
    "auto" (ONNX when that works, PyTorch otherwise)."""
    if backend not in BACKENDS:
        raise FmnistError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if isinstance(run, torch.nn.Module):
        if backend == "onnx":
            raise FmnistError("the ONNX backend needs a run folder or model file, not a loaded model")
        return Predictor("torch", {}, model=run)
    path = resolve_model_path(run)
    if backend == "onnx" or (backend == "auto" and (path.parent / ONNX_FILE).exists() and _have_onnxruntime()):
        try:
            return Predictor("onnx", read_model_info(path), session=_matching_onnx(path))
        except FmnistError as e:
            if backend == "onnx":
                raise
            warnings.warn(f"using PyTorch: {e}", stacklevel=2)
    model, info = load_model(path)
    return Predictor("torch", info, model=model)


def _have_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _matching_onnx(model_path: Path):
    onnx_path = model_path.parent / ONNX_FILE
    if not onnx_path.is_file():
        raise FmnistError(f"{onnx_path}: no such file; run `fmnist export {model_path.parent}` first")
    session = onnx_session(onnx_path)
    meta = session.get_modelmeta().custom_metadata_map
    # A retrained run keeps the old model.onnx beside new weights; it must not answer for them.
    if meta.get(SOURCE_HASH_KEY) != file_sha256(model_path):
        raise FmnistError(f"{onnx_path} was exported from other weights than {model_path}; re-run `fmnist export`")
    return session


def _prediction(p: np.ndarray, k: int, **extra) -> Prediction:
    order = np.argsort(-p, kind="stable")[:k]
    top = [{"label": int(i), "name": CLASS_NAMES[i], "probability": float(p[i])} for i in order]
    best = int(order[0])
    return Prediction(predicted=best, predicted_name=CLASS_NAMES[best], confidence=float(p[best]), top=top, **extra)


def predict(
    run: str | os.PathLike | torch.nn.Module,
    indices: list[int] | None = None,
    data_dir: str | os.PathLike | None = None,
    top_k: int = 3,
    tta: bool | None = None,
    verify: bool = True,
    backend: str = "auto",
) -> list[Prediction]:
    """Predict test images by index (default: image 0). ``run`` is a run folder, a model
    file or an already loaded model."""
    indices = [0] if indices is None else list(indices)
    _check_top_k(top_k)
    predictor = load_predictor(run, backend)
    info = predictor.info
    test = load_split("test", data_dir, verify=verify)
    bad = [i for i in indices if not -len(test) <= i < len(test)]
    if bad:
        raise FmnistError(
            f"--index {bad[0]} is out of range; the test set has {len(test):,} images (0..{len(test) - 1})"
        )
    idx = np.array([i % len(test) for i in indices], dtype=np.int64)
    images = torch.from_numpy(test.images[idx]).unsqueeze(1)
    use_tta = bool(info.get("tta", False)) if tta is None else tta
    probs = predictor.probabilities(images, use_tta)
    out = []
    for i, p in zip(idx, probs):
        actual = int(test.labels[i])
        pred = _prediction(p, top_k, index=int(i), actual=actual, actual_name=CLASS_NAMES[actual])
        pred.match = pred.predicted == actual
        out.append(pred)
    return out


def _check_top_k(top_k: int) -> None:
    if not 1 <= top_k <= len(CLASS_NAMES):
        raise FmnistError(f"--top must be between 1 and {len(CLASS_NAMES)}, got {top_k}")


def predict_files(
    run: str | os.PathLike | torch.nn.Module,
    paths: list[str | os.PathLike],
    top_k: int = 3,
    save_preprocessed: str | os.PathLike | None = None,
    tta: bool | None = None,
    backend: str = "auto",
) -> list[tuple[Path, Prediction | FmnistError]]:
    """Predict the user's image files, in order. A file that cannot be read or holds no
    garment gets its :class:`FmnistError` in place of a prediction; the others are still
    predicted. ``save_preprocessed``: a folder for the 28×28 PNG the model saw of each."""
    from .images import preprocess_file, to_png

    _check_top_k(top_k)
    predictor = load_predictor(run, backend)
    out_dir = Path(save_preprocessed) if save_preprocessed is not None else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise FmnistError(f"--save-preprocessed {out_dir}: exists and is not a folder")
    results: list[tuple[Path, Prediction | FmnistError]] = []
    pixels: dict[int, np.ndarray] = {}
    for i, p in enumerate(map(Path, paths)):
        try:
            pixels[i] = preprocess_file(p)
            results.append((p, None))  # filled in below, in one batch
        except FmnistError as e:
            results.append((p, e))
    if not pixels:
        return results
    use_tta = bool(predictor.info.get("tta", False)) if tta is None else tta
    order = list(pixels)
    batch = torch.from_numpy(np.stack([pixels[i] for i in order])).unsqueeze(1)
    probs = predictor.probabilities(batch, use_tta)
    used: set[str] = set()
    for i, p in zip(order, probs):
        path = results[i][0]
        pred = _prediction(p, top_k, index=None, source=str(path))
        if out_dir is not None:
            target = out_dir / _unique_name(path.stem, used)
            atomic_write_bytes(target, to_png(pixels[i]))
            pred.preprocessed = str(target)
        results[i] = (path, pred)
    return results


def _unique_name(stem: str, used: set[str]) -> str:
    """``stem.png``, or ``stem-2.png``... when two inputs share a name (a/x.jpg, b/x.png)."""
    name, n = f"{stem}.png", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name)
    return name
