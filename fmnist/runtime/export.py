"""ONNX export, validated against PyTorch on the whole test set before it is written.

The exported graph takes float32 pixels N×1×28×28 in 0–255 (the model's own
:class:`~fmnist.models.Normalize` is inside it) and returns two outputs: ``logits`` and
``probabilities``, softmax(logits / T) with the temperature T fitted on the validation split
inside the graph (1 for a model file without one); the batch size is free. The temperature
is in the metadata too (``temperature``), for a caller that averages the logits of an image
and its mirror (flip TTA) and applies the softmax itself.
The file says what it is in its metadata: class names, model name and arguments,
validation and test accuracy, the SHA-256 of the weights it came from and that of its own
graph (:mod:`fmnist.runtime.onnx_graph`), so prediction never uses an ONNX file left behind by an
earlier training run, nor another run's graph under this run's metadata.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmnist._version import __version__
from fmnist.core.errors import FmnistError
from fmnist.core.files import check_writable
from fmnist.core.schema import accepts_settings, data_dir_param, param, verify_param
from fmnist.core.spec import CLASS_NAMES
from fmnist.data import load_split, validation_split
from fmnist.runtime.inference import (
    ONNX_FILE,
    SOURCE_HASH_KEY,
    file_sha256,
    onnx_logits,
    onnx_session,
    predict_logits,
    softmax,
    temperature_of,
)
from fmnist.runtime.modelfile import ModelInfo, load_model, resolve_model_path
from fmnist.runtime.onnx_graph import GRAPH_HASH_KEY, graph_sha256
from fmnist.runtime.runs import RunFolder

OPSET = 18
MIN_AGREEMENT = 0.999  # top-1 agreement with PyTorch below which the export is refused
CALIBRATION_IMAGES = 512  # training images that set the int8 activation ranges
INPUT_NAME, OUTPUT_NAME, PROBS_NAME = "pixels", "logits", "probabilities"


@dataclass(frozen=True)
class ExportSettings:
    """What `fmnist export` writes, and the test images it checks the file on."""

    format: str = param("onnx", "Export format.", choices=("onnx",))
    quantize: bool = param(
        False, "Also write model.int8.onnx (static int8, calibrated on training images).", negatable=False
    )
    out: str | None = param(None, "ONNX file to write (default <run>/model.onnx).", path=True)
    data_dir: str | None = data_dir_param()
    verify: bool = verify_param()


@accepts_settings(ExportSettings, format=None)
def export_onnx(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    quantize: bool = False,
    data_dir: str | os.PathLike | None = None,
    verify: bool = True,
    min_agreement: float = MIN_AGREEMENT,
) -> dict[str, Any]:
    """Export a run's model to ONNX (default ``<run>/model.onnx``), check it against
    PyTorch on the 10,000 test images and, with ``quantize``, add an int8 copy
    (``model.int8.onnx``) with its accuracy and speed. Returns what was measured."""
    _require_onnx()
    model_path = resolve_model_path(run)
    RunFolder(model_path.parent).warn_if_unfinished()
    model, info = load_model(model_path)
    target = Path(out) if out is not None else model_path.parent / ONNX_FILE
    if target.is_dir():
        raise FmnistError(f"--out {target} is a folder; give a file name such as {target / ONNX_FILE}")
    check_writable(target.parent)  # a read-only folder fails now, not after a minute of checking
    test = load_split("test", data_dir, verify=verify)
    images = torch.from_numpy(test.images).unsqueeze(1)
    started, temperature = time.perf_counter(), temperature_of(info)
    raw, exporter = _to_onnx(model, temperature)
    session = onnx_session(raw)
    theirs = onnx_logits(session, images)
    ours = predict_logits(model, images).numpy()  # fp32: the reference the file must match
    agreement = float((theirs.argmax(1) == ours.argmax(1)).mean())
    max_diff = float(np.abs(theirs - ours).max())
    # The in-graph probabilities against the one softmax every other consumer uses.
    prob_diff = float(np.abs(onnx_probabilities(session, images) - softmax(ours, temperature)).max())
    if onnx_logits(session, images[:1]).shape != (1, len(CLASS_NAMES)):
        raise FmnistError("the exported model does not accept a batch of one image; report this as a bug")
    if agreement < min_agreement:
        raise FmnistError(
            f"ONNX Runtime and PyTorch agree on only {agreement:.2%} of test images (need {min_agreement:.1%}); "
            f"max logit difference {max_diff:.3g}; nothing written"
        )
    onnx_acc = float((theirs.argmax(1) == test.labels).mean())
    meta = _metadata(info, model_path, exporter, onnx_acc)
    RunFolder(target.parent).write_derived(target.name, _with_metadata(raw, meta))
    result: dict[str, Any] = {
        "path": str(target),
        "bytes": target.stat().st_size,
        "exporter": exporter,
        "opset": OPSET,
        "test_images": len(test),
        "max_abs_logit_diff": max_diff,
        "max_abs_probability_diff": prob_diff,
        "temperature": temperature,
        "top1_agreement": agreement,
        "torch_accuracy": float((ours.argmax(1) == test.labels).mean()),
        "onnx_accuracy": onnx_acc,
        # The graph is one forward pass; predict, evaluate and serve add the flip TTA on top.
        "tta": bool(info.tta),
        "seconds": time.perf_counter() - started,
    }
    if quantize:
        result["int8"] = _quantize(raw, meta, target, images, test.labels, theirs, data_dir, verify)
    return result


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise FmnistError("ONNX export needs onnx and onnxruntime: pip install 'fmnist[onnx]'") from None


@contextlib.contextmanager
def _quiet():
    """The exporters narrate each step and warn about optional packages (torchvision);
    none of it is actionable for a user of `fmnist export`."""
    # The root logger too: onnxruntime.quantization logs its notes there.
    names = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", None)
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class WithProbabilities(torch.nn.Module):
    """The model with a second output: its calibrated probabilities, softmax(logits / T)."""

    def __init__(self, model: torch.nn.Module, temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return logits, torch.softmax(logits / self.temperature, dim=1)


def onnx_probabilities(session, images: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """The exported graph's own ``probabilities`` output (one pass, no TTA)."""
    x_all = images.numpy()
    out = [
        session.run([PROBS_NAME], {INPUT_NAME: np.ascontiguousarray(x_all[i : i + batch_size], dtype=np.float32)})[0]
        for i in range(0, len(x_all), batch_size)
    ]
    return np.concatenate(out).astype(np.float64)


def _to_onnx(model: torch.nn.Module, temperature: float = 1.0) -> tuple[bytes, str]:
    """The model (with its probabilities output) as ONNX bytes with a free batch axis, and
    which exporter made it.

    The torch.export-based exporter is PyTorch's default and future; the TorchScript one is
    deprecated but still handles models torch.export cannot trace, so it is the fallback.
    """
    model = WithProbabilities(model.to("cpu").eval(), temperature).eval()
    # Batch 2, not 1: torch.export specializes a dimension whose example size is 1.
    example = (torch.zeros(2, 1, 28, 28),)
    names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME, PROBS_NAME], "opset_version": OPSET}
    first_error = None
    with _quiet():
        try:
            program = torch.onnx.export(
                model,
                example,
                dynamo=True,
                verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                **names,
            )
            return program.model_proto.SerializeToString(), "torch.export"
        except Exception as e:
            first_error = e
        try:
            buf = io.BytesIO()
            torch.onnx.export(
                model,
                example,
                buf,
                dynamo=False,
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}, PROBS_NAME: {0: "batch"}},
                **names,
            )
            return buf.getvalue(), "TorchScript"
        except Exception as e:
            line = (str(first_error).strip().splitlines() or [""])[0][:150]
            raise FmnistError(
                f"PyTorch could not export this model to ONNX (torch.export: {line}; TorchScript: {str(e)[:150]})"
            ) from None


def _metadata(info: ModelInfo, model_path: Path, exporter: str, test_accuracy: float) -> dict[str, str]:
    return {
        "class_names": json.dumps(list(info.class_names or CLASS_NAMES)),
        "model": info.model,
        "model_args": json.dumps(info.model_args),
        "val_accuracy": json.dumps(info.val_accuracy),
        "test_accuracy": json.dumps(test_accuracy),
        "tta": json.dumps(info.tta),
        "input": "pixels: float32 N×1×28×28, values 0-255, light garment on black (Fashion-MNIST style)",
        "output": (
            "logits: float32 N×10; probabilities: float32 N×10, softmax(logits / temperature), the calibrated "
            "class probabilities (with flip TTA: average the logits of the image and its mirror, then the same)"
        ),
        "temperature": json.dumps(info.softmax_temperature),
        "normalization": json.dumps(info.normalization),
        "exporter": exporter,
        "fmnist_version": __version__,
        SOURCE_HASH_KEY: file_sha256(model_path),
    }


def _with_metadata(raw: bytes, meta: dict[str, str]) -> bytes:
    import onnx

    proto = onnx.load_from_string(raw)
    keep = [p for p in proto.metadata_props if p.key not in meta and p.key != GRAPH_HASH_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = f"fmnist {meta['model']} classifier for Fashion-MNIST; classes {meta['class_names']}"
    # Last, over everything but the metadata: what the check before serving recomputes.
    proto.metadata_props.add(key=GRAPH_HASH_KEY, value=graph_sha256(proto, meta[SOURCE_HASH_KEY]))
    return proto.SerializeToString()


def calibration_images(data_dir=None, verify: bool = True, n: int = CALIBRATION_IMAGES) -> np.ndarray:
    """``n`` seeded training images, float32 N×1×28×28, from the training part of the
    split: never validation or test images."""
    train = load_split("train", data_dir, verify=verify)
    train_idx, _ = validation_split(train.labels)
    pick = np.random.default_rng(0).choice(train_idx, size=min(n, len(train_idx)), replace=False)
    return train.images[np.sort(pick)][:, None].astype(np.float32)


def quantize_int8(raw: bytes, calib: np.ndarray, workdir: str | os.PathLike | None = None) -> bytes:
    """Static int8 quantization (QDQ, per-channel weights) of an ONNX model, activation
    ranges calibrated on ``calib``. Dynamic quantization was measured too: its ConvInteger
    kernels ran 8× slower than float on this CPU, so it is not offered."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(calib, max(1, len(calib) // 64)))

        def get_next(self):
            b = next(self.batches, None)
            return None if b is None else {INPUT_NAME: b}

    # ONNX Runtime's quantizer works on files; keep them beside the target (same disk).
    with tempfile.TemporaryDirectory(prefix="fmnist-quantize-", dir=workdir) as tmp, _quiet():
        src, pre, q = Path(tmp, "float.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(raw)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # optional graph clean-up; quantization works without it
            pre = src
        try:
            quantize_static(
                str(pre),
                str(q),
                Batches(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        except Exception as e:
            raise FmnistError(f"int8 quantization failed ({str(e)[:200]})") from None
        return q.read_bytes()


def _quantize(raw, meta, target, images, labels, float_logits, data_dir, verify) -> dict[str, Any]:
    """The int8 copy of an export, with its test accuracy and speed against float."""
    calib = calibration_images(data_dir, verify)
    int8_target = target.with_name(target.name.removesuffix(".onnx") + ".int8.onnx")
    try:
        # The work files go to the system's temporary folder: a killed export leaves nothing in the run.
        int8_raw = quantize_int8(raw, calib)
    except FmnistError as e:
        raise FmnistError(f"{e}; the float model {target} was written and is fine") from None
    session = onnx_session(int8_raw)
    logits = onnx_logits(session, images)
    accuracy = float((logits.argmax(1) == labels).mean())
    float_acc = float((float_logits.argmax(1) == labels).mean())
    int8_meta = {**meta, "test_accuracy": json.dumps(accuracy), "quantized": "int8"}
    RunFolder(int8_target.parent).write_derived(int8_target.name, _with_metadata(int8_raw, int8_meta))
    speed_float = images_per_second(onnx_session(raw), images[:1024])
    speed_int8 = images_per_second(session, images[:1024])
    return {
        "path": str(int8_target),
        "bytes": int8_target.stat().st_size,
        "accuracy": accuracy,
        "accuracy_change": accuracy - float_acc,
        "top1_agreement_with_float": float((logits.argmax(1) == float_logits.argmax(1)).mean()),
        "images_per_second": speed_int8,
        "float_images_per_second": speed_float,
        "speedup": speed_int8 / speed_float,
        "calibration_images": len(calib),
    }


def images_per_second(session, images: torch.Tensor, batch_size: int = 64, repeats: int = 3) -> float:
    """Best of ``repeats`` passes over ``images`` (best, because another process sharing
    the CPU only ever slows a pass down)."""
    onnx_logits(session, images[:batch_size], batch_size)  # warm-up: first run allocates
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        onnx_logits(session, images, batch_size)
        best = min(best, time.perf_counter() - t0)
    return len(images) / best
