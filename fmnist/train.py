"""Training: :class:`TrainConfig` and :func:`train`, the one entry point the CLI, tuning and
ablation all wrap.

The whole training split lives as one uint8 tensor on the device; each batch is sliced
from it by a seeded permutation, converted to float and augmented there. Nothing leaves
the device inside a step except the numbers the progress display asks for.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import augment
from .checkpoint import MODEL_FILE, atomic_write_json, atomic_write_text, save_model, versions
from .data import CLASS_NAMES, load_split, validation_split
from .errors import FmnistError
from .models import build_model, count_params, flops_per_image

RUN_FILES = ("config.json", "metrics.csv", MODEL_FILE, "summary.json")
# Written later by evaluate / report / export; stale once the model is retrained.
DERIVED_FILES = (
    "test_metrics.json",
    "confusion_matrix.png",
    "model.onnx",
    "model.int8.onnx",
    "report.html",
    "training_curves.png",
    "confused_pairs.png",
    "misclassified.png",
    "reliability.png",
    "first_test_image.png",
)


@dataclass
class TrainConfig:
    """Every knob of a training run. Defaults reproduce the original notebook's recipe
    (the `seed` CNN, Adam at 1e-3, batch 32, 5 epochs)."""

    model: str = "seed"
    model_args: dict[str, Any] = field(default_factory=dict)
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd (Nesterov momentum)
    momentum: float = 0.9
    schedule: str = "constant"  # constant | onecycle | cosine
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    decay_norm_and_bias: bool = False  # weight decay on norms and biases too (usually harmful)
    # augmentation, applied to whole batches on the device
    flip: bool = False
    translate: int = 0  # max shift in pixels (random crop of a zero-padded image)
    erase: float = 0.0  # probability of random erasing per image
    mixup: float = 0.0  # MixUp Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0  # CutMix Beta(alpha, alpha); 0 = off
    # weights and evaluation
    ema: float = 0.0  # decay of the exponential moving average of the weights; 0 = off
    tta: bool = False  # average the logits of each image and its mirror image
    early_stop: int = 0  # stop after this many epochs without a better val accuracy; 0 = off
    # data
    val_size: int = 5000
    split_seed: int = 0
    subset: int = 0  # train on only this many images (smoke runs); 0 = all
    data_dir: str | None = None
    verify: bool = True
    # machinery
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto | fp32 | bf16
    channels_last: bool = True
    compile: bool = False
    threads: int = 0  # torch CPU threads; 0 = PyTorch's default
    eval_batch_size: int = 1000
    out: str | None = None
    overwrite: bool = False
    preset: str | None = None

    def validate(self) -> None:
        from .models import available

        if self.model not in available():
            raise FmnistError(f"unknown model {self.model!r}; choose one of: {', '.join(available())}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise FmnistError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if not self.lr > 0:
            raise FmnistError(f"--lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise FmnistError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise FmnistError(f"--optimizer must be adam, adamw or sgd, got {self.optimizer!r}")
        if self.schedule not in ("constant", "onecycle", "cosine"):
            raise FmnistError(f"--schedule must be constant, onecycle or cosine, got {self.schedule!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise FmnistError(f"--precision must be auto, fp32 or bf16, got {self.precision!r}")
        if not 0 <= self.label_smoothing < 1:
            raise FmnistError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.ema < 1:
            raise FmnistError(f"--ema must be in [0, 1), got {self.ema}")
        if not 0 <= self.erase <= 1:
            raise FmnistError(f"--erase must be a probability in [0, 1], got {self.erase}")
        if self.translate < 0 or self.mixup < 0 or self.cutmix < 0 or self.warmup_epochs < 0:
            raise FmnistError("--translate, --mixup, --cutmix and --warmup-epochs must be >= 0")
        if self.subset < 0 or self.val_size < 0:
            raise FmnistError("--subset and --val-size must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise FmnistError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class Run:
    """The result of :func:`train`: where it was written, what was measured, the best model."""

    out_dir: Path
    config: TrainConfig
    history: list[dict[str, float]]
    best: dict[str, float]
    model: torch.nn.Module
    info: dict[str, Any]
    seconds: float


class Callback:
    """Hooks into :func:`train`; override what you need. ``state`` is a dict with at least
    ``epoch``, ``epochs``, ``step``, ``steps`` and (when asked for) running loss/accuracy."""

    wants_running_stats = False  # ask train() to sync running loss/acc every few steps

    def on_train_start(self, config: TrainConfig, info: dict[str, Any]) -> None: ...
    def on_epoch_start(self, epoch: int, steps: int) -> None: ...
    def on_step(self, state: dict[str, float]) -> None: ...
    def on_epoch_end(self, row: dict[str, float]) -> None: ...
    def on_train_end(self, run: Run) -> None: ...


def resolve_device(name: str = "auto") -> torch.device:
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
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FmnistError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu")
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
        # Measured on an AVX-512-BF16/AMX CPU: about 2x faster per step (docs/benchmarks.md).
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return None


def default_out_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder unless asked to replace the old one."""
    if out.exists() and not out.is_dir():
        raise FmnistError(f"{out} exists and is not a folder; choose another --out")
    existing = [f for f in RUN_FILES if (out / f).exists()]
    if existing and not overwrite:
        raise FmnistError(
            f"{out} already holds a run ({', '.join(existing)}); pass --overwrite or choose another --out"
        )
    if existing:
        for f in (*RUN_FILES, *DERIVED_FILES):
            (out / f).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def param_groups(model: torch.nn.Module, weight_decay: float, decay_all: bool) -> list[dict]:
    """Weight decay on conv/dense weights only: decaying norms and biases only shrinks the
    model's ability to scale features and costs accuracy."""
    if decay_all or weight_decay == 0:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, config.weight_decay, config.decay_norm_and_bias)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    # Keras-style Adam: L2 penalty added to the gradient.
    return torch.optim.Adam(groups, lr=config.lr)


def lr_factor(config: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at ``step`` of ``total``: linear warm-up, then the schedule."""
    warm = int(config.warmup_epochs * steps_per_epoch)
    if config.schedule == "onecycle":
        # Triangle: up over the warm-up (default 25% of training), then linearly down to 0.
        warm = warm or max(1, int(0.25 * total))
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))
    if step < warm:
        return (step + 1) / warm
    if config.schedule == "cosine":
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return 1.0


class EMA:
    """Exponential moving average of the weights (buffers such as BN statistics copied).
    The decay ramps up from 0 so early, random weights are forgotten quickly."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.updates = 0
        self._src = [p for p in model.parameters()]
        self._dst = [p for p in self.model.parameters()]
        self._src_buf = [b for b in model.buffers()]
        self._dst_buf = [b for b in self.model.buffers()]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._dst, self._src, 1.0 - d)
        for dst, src in zip(self._dst_buf, self._src_buf):
            dst.copy_(src)


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int = 1000,
    tta: bool = False,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Float32 logits for uint8 or float images of shape (N, 1, 28, 28), in eval mode.
    With ``tta`` each image's logits are the mean of its own and its mirror image's."""
    model.eval()
    device = next(model.parameters()).device
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
    return torch.cat(out) if out else torch.empty(0, 10, device=device)


def _tensor_split(images: np.ndarray, labels: np.ndarray, idx: np.ndarray, device: torch.device):
    x = torch.from_numpy(np.ascontiguousarray(images[idx])).unsqueeze(1).to(device)
    y = torch.from_numpy(labels[idx]).to(device)
    return x, y


def train(config: TrainConfig, callbacks: list[Callback] | tuple = ()) -> Run:
    """Train a model as ``config`` says, write the run folder, return the :class:`Run`."""
    config = copy.deepcopy(config)
    config.validate()
    device = resolve_device(config.device)
    out = Path(config.out) if config.out else default_out_dir(config)
    config.out = str(out)
    # Load and check everything a user can get wrong before the run folder is touched.
    data = load_split("train", config.data_dir, verify=config.verify)
    if config.val_size >= len(data):
        raise FmnistError(f"--val-size {config.val_size} leaves no training images out of {len(data)}")
    prepare_out_dir(out, config.overwrite)

    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        # Fixed input shapes: let cuDNN pick the fastest convolution algorithms once.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(config.seed)
    np_rng = np.random.default_rng(config.seed)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    amp = resolve_precision(config.precision, device)
    mem = torch.channels_last if config.channels_last else torch.contiguous_format

    train_idx, val_idx = validation_split(data.labels, config.val_size, config.split_seed)
    if config.subset:
        # A seeded, class-balanced-in-expectation subset for smoke runs.
        train_idx = np.sort(np.random.default_rng(config.split_seed).permutation(train_idx)[: config.subset])
    x_train, y_train = _tensor_split(data.images, data.labels, train_idx, device)
    x_val, y_val = _tensor_split(data.images, data.labels, val_idx, device)
    n = len(y_train)
    batch = min(config.batch_size, n)
    steps_per_epoch = n // batch  # drop the ragged last batch: BN dislikes tiny batches
    total_steps = steps_per_epoch * config.epochs

    model = build_model(config.model, **config.model_args).to(device, memory_format=mem)
    info: dict[str, Any] = {
        "model": config.model,
        "model_args": config.model_args,
        "normalization": _normalization(model),
        "class_names": list(CLASS_NAMES),
        "input": "1x28x28 grayscale, pixel values 0-255, light garment on black",
        "params": count_params(model),
        "flops_per_image": flops_per_image(model),
        "tta": config.tta,
        "versions": versions(),
        "device": str(device),
        "precision": str(amp).replace("torch.", "") if amp else "fp32",
        "train_images": n,
        "val_images": len(val_idx),
    }
    atomic_write_json(
        out / "config.json",
        {**config.to_dict(), "resolved": {k: info[k] for k in ("device", "precision", "params", "flops_per_image")}},
    )
    opt = make_optimizer(config, model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(config, s, total_steps, steps_per_epoch))
    ema = EMA(model, config.ema) if config.ema > 0 else None
    step_fn = model
    if config.compile:
        step_fn = torch.compile(model)

    for cb in callbacks:
        cb.on_train_start(config, info)
    running = any(cb.wants_running_stats for cb in callbacks)
    history: list[dict[str, float]] = []
    best: dict[str, float] = {}
    best_state = None
    started = time.perf_counter()
    stale = 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        for cb in callbacks:
            cb.on_epoch_start(epoch, steps_per_epoch)
        perm = torch.randperm(n, generator=gen, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for step in range(steps_per_epoch):
            idx = perm[step * batch : (step + 1) * batch]
            x = x_train[idx].float()
            y = y_train[idx]
            if config.translate:
                x = augment.translate(x, gen, config.translate)
            if config.flip:
                x = augment.flip(x, gen)
            if config.erase:
                x = augment.erase(x, gen, config.erase)
            x, ya, yb, lam = augment.mix(x, y, np_rng, gen, config.mixup, config.cutmix)
            x = x.contiguous(memory_format=mem)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = step_fn(x)
                loss = F.cross_entropy(logits, ya, label_smoothing=config.label_smoothing)
                if lam < 1.0:
                    loss = lam * loss + (1 - lam) * F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update()
            loss_sum += loss.detach().float()
            correct += (logits.detach().argmax(1) == y).sum()
            # note: .item() is a host/device sync point; only done when a display asks for it
            if running and (step % 20 == 19 or step == steps_per_epoch - 1):
                state = {
                    "epoch": epoch,
                    "epochs": config.epochs,
                    "step": step + 1,
                    "steps": steps_per_epoch,
                    "loss": loss_sum.item() / (step + 1),
                    "accuracy": correct.item() / ((step + 1) * batch),
                }
                for cb in callbacks:
                    cb.on_step(state)
        train_seconds = time.perf_counter() - t0
        eval_model = ema.model if ema is not None else model
        val_logits = predict_logits(eval_model, x_val, config.eval_batch_size, config.tta, amp, config.channels_last)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum.item() / steps_per_epoch,
            "train_accuracy": correct.item() / (steps_per_epoch * batch),
            "val_loss": F.cross_entropy(val_logits, y_val).item() if len(y_val) else float("nan"),
            "val_accuracy": (val_logits.argmax(1) == y_val).float().mean().item() if len(y_val) else float("nan"),
            "lr": opt.param_groups[0]["lr"],
            "train_seconds": train_seconds,
            "seconds": time.perf_counter() - t0,
            "elapsed": time.perf_counter() - started,
        }
        history.append(row)
        _write_metrics(out / "metrics.csv", history)
        improved = not best or row["val_accuracy"] > best["val_accuracy"] or not len(y_val)
        if improved:
            best = dict(row)
            best_state = {k: v.detach().clone() for k, v in eval_model.state_dict().items()}
            save_model(
                out / MODEL_FILE,
                eval_model,
                {**info, "epoch": epoch, "val_accuracy": row["val_accuracy"], "val_loss": row["val_loss"]},
            )
            stale = 0
        else:
            stale += 1
        for cb in callbacks:
            cb.on_epoch_end(row)
        if config.early_stop and stale >= config.early_stop:
            break

    seconds = time.perf_counter() - started
    final = build_model(config.model, **config.model_args).to(device)
    final.load_state_dict(best_state)
    final.eval()
    summary = {
        "model": config.model,
        "preset": config.preset,
        "best_epoch": best["epoch"],
        "val_accuracy": best["val_accuracy"],
        "val_loss": best["val_loss"],
        "epochs_run": len(history),
        "train_seconds": seconds,
        "params": info["params"],
        "flops_per_image": info["flops_per_image"],
        "device": info["device"],
        "precision": info["precision"],
        "threads": torch.get_num_threads(),
        "finished": datetime.now().isoformat(timespec="seconds"),
        "versions": info["versions"],
    }
    atomic_write_json(out / "summary.json", summary)
    run = Run(
        out,
        config,
        history,
        best,
        final,
        {**info, "epoch": best["epoch"], "val_accuracy": best["val_accuracy"]},
        seconds,
    )
    for cb in callbacks:
        cb.on_train_end(run)
    return run


def _normalization(model: torch.nn.Module) -> dict[str, float | None]:
    from .models import Normalize

    for m in model.modules():
        if isinstance(m, Normalize):
            return {"mean": m.mean, "std": m.std}
    return {"mean": None, "std": None}


def _write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "config.json").read_text())
