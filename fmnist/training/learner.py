"""What a run trains and how one batch trains it: the model (fitted to the training images,
initialised from another run, partly frozen), the network a step runs (DDP, torch.compile),
its optimizer, learning-rate schedule and EMA, and :meth:`Learner.step`: augment a batch on
the device, forward, backward, update."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fmnist.core.spec import NUM_CLASSES
from fmnist.data import augment
from fmnist.models import Normalize, build_model, count_params, fit_to_data, flops_per_image
from fmnist.runtime.calibration import calibration_summary, fit_temperature
from fmnist.runtime.inference import predict_logits, resolve_precision
from fmnist.runtime.modelfile import ModelInfo
from fmnist.training.budget import Plan
from fmnist.training.config import TrainConfig
from fmnist.training.data import TrainingData
from fmnist.training.distributed import World
from fmnist.training.optim import EMA, make_optimizer, make_scheduler
from fmnist.training.state import Rngs
from fmnist.training.transfer import freeze, initialise, keep_frozen_norms_still


@dataclass
class Learner:
    """The model being trained and everything that trains it, built from the config."""

    config: TrainConfig
    model: torch.nn.Module
    net: torch.nn.Module  # what a step runs: the model, wrapped for several processes or compiled
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    frozen: list[str]
    amp: torch.dtype | None  # the autocast dtype; None: fp32
    memory_format: torch.memory_format
    info: ModelInfo  # what the model file will say, before the first epoch

    @classmethod
    def build(
        cls, config: TrainConfig, world: World, device: torch.device, data: TrainingData, plan: Plan, resuming: bool
    ) -> Learner:
        """Build on ``device`` (after the global random-number generator was seeded: the
        initial weights come from it). A resumed run restores its weights later, so it
        skips what computes or loads them."""
        cfg = config
        if device.type == "cuda":
            # Fixed input shapes: let cuDNN pick the fastest convolution algorithms once.
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        amp = resolve_precision(cfg.precision, device)
        mem = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model = build_model(cfg.model, **cfg.model_args)
        if not resuming:  # a whitening stem is computed from the training images
            fit_to_data(model, data.x_train)
        if cfg.init_from and not resuming:
            for note in initialise(model, cfg.model, cfg.model_args, cfg.init_from, cfg.reset_head):
                if world.main:
                    warnings.warn(f"--init-from: {note}", stacklevel=3)
        frozen = freeze(model, cfg.freeze)
        model = model.to(device, memory_format=mem)
        info = model_info(cfg, model, data, device, amp)
        optimizer = make_optimizer(cfg, model)
        scheduler = make_scheduler(cfg, optimizer, plan)
        ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
        net = model
        if world.distributed:
            # BN statistics stay per process (SyncBatchNorm has no CPU kernels); rank 0's
            # running statistics are broadcast each step and are the ones saved.
            ids = [device.index] if device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if cfg.compile:
            net = torch.compile(net)
        return cls(cfg, model, net, optimizer, scheduler, ema, frozen, amp, mem, info)

    @property
    def eval_model(self) -> torch.nn.Module:
        """What is validated and saved: the EMA weights when there are some."""
        return self.ema.model if self.ema is not None else self.model

    def train(self) -> None:
        self.model.train()
        keep_frozen_norms_still(self.model, self.frozen)

    def step(self, x: torch.Tensor, y: torch.Tensor, rngs: Rngs) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on a batch of uint8 images; returns its loss and the number it got
        right, left on the device (reading them is a sync point)."""
        cfg, gen = self.config, rngs.aug
        x = x.float()
        if cfg.translate:
            x = augment.translate(x, gen, cfg.translate)
        if cfg.flip:
            x = augment.flip(x, gen)
        if cfg.erase:
            x = augment.erase(x, gen, cfg.erase)
        x, ya, yb, lam = augment.mix(x, y, rngs.numpy, gen, cfg.mixup, cfg.cutmix)
        x = x.contiguous(memory_format=self.memory_format)
        with torch.autocast(x.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            logits = self.net(x)
            loss = F.cross_entropy(logits, ya, label_smoothing=cfg.label_smoothing)
            if lam < 1.0:
                loss = lam * loss + (1 - lam) * F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        return loss.detach().float(), (logits.detach().argmax(1) == y).sum()


def normalization_of(model: torch.nn.Module) -> dict[str, Any]:
    for m in model.modules():
        if isinstance(m, Normalize):
            return {"mean": m.mean, "std": m.std, "mode": m.mode}
    return {}


def model_info(
    cfg: TrainConfig, model: torch.nn.Module, data: TrainingData, device: torch.device, amp: torch.dtype | None
) -> ModelInfo:
    return ModelInfo(
        model=cfg.model,
        model_args=cfg.model_args,
        normalization=normalization_of(model),
        params=count_params(model),
        flops_per_image=flops_per_image(model),
        tta=cfg.tta,
        preset=cfg.preset,
        train_images=data.n_train,
        val_images=data.n_val,
        device=str(device),
        precision=str(amp).replace("torch.", "") if amp else "fp32",
    )


def calibrate_on_validation(
    model: torch.nn.Module, data: TrainingData, cfg: TrainConfig, world: World
) -> tuple[dict[str, Any], list[list[int]] | None]:
    """Temperature scaling fitted on the validation split (never the test set), in fp32
    with the TTA the model is used with, so the temperature fits the logits that
    evaluate, predict, the export and the server compute; and the split's confusion matrix
    (rows: actual, columns: predicted) from the same logits, for the trackers. Empty and None
    without a validation split."""
    if not data.n_val:
        return {}, None
    logits = predict_logits(model, data.x_val, cfg.eval_batch_size, cfg.tta, None, cfg.channels_last)
    # Each process holds a shard of the split; the fit needs all of it.
    parts = world.gather([logits.cpu().tolist(), data.y_val.cpu().tolist()])
    z = np.concatenate([np.asarray(p[0], dtype=np.float64).reshape(-1, NUM_CLASSES) for p in parts])
    y = np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts])
    temperature = fit_temperature(z, y)
    confusion = np.bincount(y * NUM_CLASSES + z.argmax(1), minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, -1)
    calibration = {"temperature": temperature, "calibration": calibration_summary(z, y, temperature, "validation")}
    return calibration, confusion.tolist()
