"""Training: the engine (:class:`Trainer`) and :func:`train`, the one entry point the CLI,
tuning and the ablation all use.

The whole training split lives as one uint8 tensor on the device; each batch is sliced
from it by a seeded permutation, converted to float and augmented there. Nothing leaves
the device inside a step except the numbers a progress display asks for.

The engine's whole state (model, EMA, optimizer, scheduler, every random-number generator,
epoch, step, history, best-so-far) is written to the run folder after every epoch and when
the process is asked to stop (Ctrl-C, SIGTERM), so ``fmnist train --resume RUN`` continues a
killed run and ends with the same model as an uninterrupted one. Under ``torchrun`` each
process trains on its shard of every batch (DistributedDataParallel) and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fmnist.core.errors import FmnistError, TrainingDiverged
from fmnist.core.files import LOCK_NAME
from fmnist.core.spec import NUM_CLASSES
from fmnist.data import Split, augment, load_split, validation_split
from fmnist.models import Normalize, build_model, count_params, fit_to_data, flops_per_image
from fmnist.runtime.calibration import calibration_summary, fit_temperature
from fmnist.runtime.inference import predict_logits, resolve_device, resolve_precision
from fmnist.runtime.modelfile import MODEL_FILE, ModelInfo, save_model
from fmnist.runtime.runs import MODEL, RESUME, RunFolder
from fmnist.training import distributed
from fmnist.training.config import TrainConfig
from fmnist.training.optim import EMA, make_optimizer, make_scheduler
from fmnist.training.state import (
    load_optimizer_state,
    load_state,
    optimizer_state,
    prefixed,
    save_state,
    unprefixed,
)
from fmnist.training.transfer import freeze, initialise, keep_frozen_norms_still


@dataclass
class Run:
    """The result of :func:`train`: where it was written, what was measured, the best model."""

    out_dir: Path
    config: TrainConfig
    history: list[dict[str, float]]
    best: dict[str, float]
    model: torch.nn.Module
    info: ModelInfo
    seconds: float


class Callback:
    """Hooks into training; override what you need. Called on rank 0 only."""

    wants_running_stats = False  # ask for the running loss/accuracy every few steps (a sync point)

    def on_train_start(self, config: TrainConfig, info: ModelInfo, start_epoch: int) -> None: ...
    def on_epoch_start(self, epoch: int, steps: int) -> None: ...
    def on_step(self, state: dict[str, float]) -> None: ...
    def on_epoch_end(self, row: dict[str, float]) -> None: ...
    def on_train_end(self, run: Run) -> None: ...


class Interrupted(Exception):
    """Training stopped on request (SIGINT or SIGTERM) after saving its resume state."""

    def __init__(self, folder: Path, epoch: int, step: int, steps: int):
        self.folder, self.epoch, self.step, self.steps = folder, epoch, step, steps
        super().__init__(
            f"interrupted in epoch {epoch} after step {step} of {steps}; the state is saved. "
            f"Continue with: fmnist train --resume {folder}"
        )


def default_out_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def normalization_of(model: torch.nn.Module) -> dict[str, Any]:
    for m in model.modules():
        if isinstance(m, Normalize):
            return {"mean": m.mean, "std": m.std, "mode": m.mode}
    return {}


def _derived_seed(*parts: int) -> int:
    """Independent seeds for independent streams (the batch order, each process's
    augmentation), so they are never the same sequence."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


class Trainer:
    """One training run, step by step: :meth:`setup`, then per epoch :meth:`train_epoch`,
    :meth:`validate` and :meth:`end_epoch` (which checkpoints), then :meth:`finish`.
    :meth:`run` does all of it. ``resume``: continue the unfinished run in that folder."""

    def __init__(
        self,
        config: TrainConfig | None = None,
        callbacks: list[Callback] | tuple = (),
        resume: str | Path | None = None,
    ):
        if resume is not None:
            folder = RunFolder(resume)
            stored = TrainConfig.from_mapping(folder.read_config(), str(folder / "config.json"))
            config = dataclasses.replace(stored, out=str(folder.path))
        if config is None:
            raise ValueError("pass a config or a run folder to resume")
        self.config = copy.deepcopy(config)
        self.callbacks = list(callbacks)
        self.resuming = resume is not None
        self._stop: int | None = None
        self._lock = None
        self._ready = False
        self._set_aside = False
        self._claimed = self._created = self._had_lock_file = False

    # --- setup ------------------------------------------------------------------------------

    def setup(self) -> None:
        """Check everything a user can get wrong, then claim the run folder and build the
        model, optimizer and data on the device. Nothing on disk changes before the checks."""
        cfg = self.config
        cfg.validate()
        self.world, device = distributed.join(cfg.device)
        self.device = device or resolve_device(cfg.device)
        try:
            self._setup()
        except BaseException:
            self._release()
            raise

    def _setup(self) -> None:
        cfg, world = self.config, self.world
        if cfg.out is None:
            cfg.out = world.share(str(default_out_dir(cfg)))  # one timestamp for every process
        data = load_split("train", cfg.data_dir, verify=cfg.verify, progress=world.main)
        train_idx, val_idx = self._split(data)
        n = len(train_idx)
        self.batch = min(cfg.batch_size, n)
        if self.batch % world.size:
            raise FmnistError(
                f"--batch-size {self.batch} does not split evenly over {world.size} processes; "
                f"use a multiple of {world.size}"
            )
        self.local_batch = self.batch // world.size
        self.steps = n // self.batch  # drop the ragged last batch: BN dislikes tiny batches
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.folder = RunFolder(cfg.out)
        # Rank 0 claims the folder; the others learn whether that worked.
        problem = None
        if world.main:
            try:
                self._claim()
            except FmnistError as e:
                problem = str(e)
        problem = world.share(problem)
        if problem:
            raise FmnistError(problem)

        dev = self.device
        if dev.type == "cuda":
            # Fixed input shapes: let cuDNN pick the fastest convolution algorithms once.
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.amp = resolve_precision(cfg.precision, dev)
        self.mem = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.x_train, self.y_train = _to_device(data, train_idx, dev)
        # Each process validates its own contiguous shard; the counts are summed, so the
        # figure is exact over the whole split with no padded duplicates.
        lo, hi = (len(val_idx) * world.rank) // world.size, (len(val_idx) * (world.rank + 1)) // world.size
        self.x_val, self.y_val = _to_device(data, val_idx[lo:hi], dev)
        self.n_val = len(val_idx)

        torch.manual_seed(_derived_seed(cfg.seed, 1, world.rank))  # dropout and anything else global
        self.perm_gen = torch.Generator(device=dev).manual_seed(_derived_seed(cfg.seed, 2))
        self.aug_gen = torch.Generator(device=dev).manual_seed(_derived_seed(cfg.seed, 3, world.rank))
        self.np_rng = np.random.default_rng(_derived_seed(cfg.seed, 4, world.rank))

        self.model = build_model(cfg.model, **cfg.model_args)
        if not self.resuming:  # a whitening stem is computed from the training images (a resumed run restores it)
            fit_to_data(self.model, self.x_train)
        if cfg.init_from and not self.resuming:  # a resumed run restores its own weights below
            for note in initialise(self.model, cfg.model, cfg.model_args, cfg.init_from, cfg.reset_head):
                if world.main:
                    warnings.warn(f"--init-from: {note}", stacklevel=2)
        self.frozen = freeze(self.model, cfg.freeze)
        self.model = self.model.to(dev, memory_format=self.mem)
        self.info = ModelInfo(
            model=cfg.model,
            model_args=cfg.model_args,
            normalization=normalization_of(self.model),
            params=count_params(self.model),
            flops_per_image=flops_per_image(self.model),
            tta=cfg.tta,
            preset=cfg.preset,
            train_images=n,
            val_images=self.n_val,
            device=str(dev),
            precision=str(self.amp).replace("torch.", "") if self.amp else "fp32",
        )
        self.optimizer = make_optimizer(cfg, self.model)
        self.scheduler = make_scheduler(cfg, self.optimizer, self.steps)
        self.ema = EMA(self.model, cfg.ema) if cfg.ema > 0 else None
        self.net: torch.nn.Module = self.model
        if world.distributed:
            # BN statistics stay per process (SyncBatchNorm has no CPU kernels); rank 0's
            # running statistics are broadcast each step and are the ones saved.
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dev.index] if dev.type == "cuda" else None
            )
        if cfg.compile:
            self.net = torch.compile(self.net)

        self.epoch, self.step = 1, 0
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] = {}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stale = 0
        self.elapsed = 0.0  # training + validation seconds, over every session of this run
        self.perm: torch.Tensor | None = None
        self.loss_sum = torch.zeros((), device=dev)
        self.correct = torch.zeros((), device=dev, dtype=torch.long)
        self.epoch_seconds = 0.0
        if self.resuming:
            self.load_resume_state()
        else:
            if world.main:
                resolved = {k: getattr(self.info, k) for k in ("device", "precision", "params", "flops_per_image")}
                self.folder.write_config({**cfg.to_dict(), "resolved": {**resolved, "processes": world.size}})
            self.save_resume_state()  # so a run killed in its first epoch can be resumed too
        self._ready = True

    def _split(self, data: Split) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        if cfg.val_size >= len(data):
            raise FmnistError(f"--val-size {cfg.val_size} leaves no training images out of {len(data):,}")
        train_idx, val_idx = validation_split(data.labels, cfg.val_size, cfg.split_seed)
        if cfg.subset:
            # A seeded, class-balanced-in-expectation subset for smoke runs.
            train_idx = np.sort(np.random.default_rng(cfg.split_seed).permutation(train_idx)[: cfg.subset])
        if len(train_idx) < self.world.size:
            raise FmnistError(f"{len(train_idx)} training images cannot be shared by {self.world.size} processes")
        return train_idx, val_idx

    def _claim(self) -> None:
        """Lock the run folder and make sure it may be written: never mix two runs, never
        remove files fmnist did not write, and with --overwrite remove only after every check."""
        cfg, folder = self.config, self.folder
        created = self._created = not folder.path.exists()
        had_lock_file = self._had_lock_file = (folder / LOCK_NAME).exists()
        try:
            if folder.path.exists() and not folder.path.is_dir():
                raise FmnistError(f"{folder.path} exists and is not a folder; choose another --out")
            self._lock = folder.lock().acquire()
            status = folder.status
            if self.resuming:
                self._check_resumable(status)
                return
            if status == "foreign":
                raise FmnistError(
                    f"{folder.path} holds files fmnist did not write (config.json, model or metrics); "
                    "choose another --out (--overwrite never removes them)"
                )
            if status in ("unfinished", "finished"):
                if not cfg.overwrite:
                    raise FmnistError(
                        f"{folder.path} already holds {'an unfinished' if status == 'unfinished' else 'a'} run; "
                        "pass --overwrite to replace it, "
                        + (f"--resume {folder.path} to continue it, " if status == "unfinished" else "")
                        + "or choose another --out"
                    )
                folder.set_aside()
                self._set_aside = True
            folder.write_config({**cfg.to_dict(), "resolved": {}})
            self._claimed = True
        except BaseException:
            if self._set_aside:
                folder.restore_aside()
            # Leave the folder as it was: no lock file, and no folder if it was ours.
            if self._lock is not None and not had_lock_file:
                (folder / LOCK_NAME).unlink(missing_ok=True)
            self._release()
            if created:
                with contextlib.suppress(OSError):
                    folder.path.rmdir()
            raise

    def _check_resumable(self, status: str) -> None:
        path = self.folder.path
        if status == "finished":
            raise FmnistError(f"{path} is a finished run (summary.json is written); there is nothing to resume")
        if status != "unfinished":
            raise FmnistError(f"{path} holds no fmnist run to resume")
        if not (self.folder / RESUME).is_file():
            raise FmnistError(f"{path} has no resume state ({RESUME}); retrain with --overwrite")

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- one epoch ----------------------------------------------------------------------------

    def train_epoch(self) -> dict[str, float]:
        """Train from the current step to the end of the epoch; returns the epoch's training
        loss and accuracy. Raises :class:`Interrupted` (after saving) on a stop request."""
        cfg, dev = self.config, self.device
        if self.step == 0:
            self.perm = torch.randperm(len(self.y_train), generator=self.perm_gen, device=dev)
            self.loss_sum.zero_()
            self.correct.zero_()
            self.epoch_seconds = 0.0
        self.model.train()
        keep_frozen_norms_still(self.model, self.frozen)
        self._emit("on_epoch_start", self.epoch, self.steps)
        running = self.world.main and any(cb.wants_running_stats for cb in self.callbacks)
        t0 = time.perf_counter()
        offset = self.world.rank * self.local_batch
        for step in range(self.step, self.steps):
            start = step * self.batch + offset
            self._step(self.perm[start : start + self.local_batch])
            self.step = step + 1
            # note: .item() is a host/device sync point; only done when a display asks for it
            if running and (self.step % 20 == 0 or self.step == self.steps):
                n = self.step * self.local_batch
                self._emit(
                    "on_step",
                    {
                        "epoch": self.epoch,
                        "epochs": cfg.epochs,
                        "step": self.step,
                        "steps": self.steps,
                        "loss": self.loss_sum.item() / self.step,
                        "accuracy": self.correct.item() / n,
                    },
                )
            if self.world.any(self._stop is not None, dev) and self.step < self.steps:
                self.epoch_seconds += time.perf_counter() - t0
                self.elapsed += time.perf_counter() - t0
                self.save_resume_state()
                raise Interrupted(self.folder.path, self.epoch, self.step, self.steps)
        dt = time.perf_counter() - t0
        self.epoch_seconds += dt
        self.elapsed += dt
        loss_sum, correct = self.world.sum([self.loss_sum.item(), float(self.correct.item())], dev)
        train_loss = loss_sum / (self.steps * self.world.size)
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"the training loss became {train_loss} in epoch {self.epoch}: training diverged, most likely "
                f"because the learning rate ({cfg.lr}) is too high for this recipe; lower --lr and retrain. "
                + (
                    f"The last good model (epoch {self.best['epoch']}) is kept in {self.folder.path}"
                    if self.best
                    else "No epoch finished, so no model was saved"
                )
            )
        return {"train_loss": train_loss, "train_accuracy": correct / (self.steps * self.batch)}

    def _step(self, idx: torch.Tensor) -> None:
        cfg, gen = self.config, self.aug_gen
        x = self.x_train[idx].float()
        y = self.y_train[idx]
        if cfg.translate:
            x = augment.translate(x, gen, cfg.translate)
        if cfg.flip:
            x = augment.flip(x, gen)
        if cfg.erase:
            x = augment.erase(x, gen, cfg.erase)
        x, ya, yb, lam = augment.mix(x, y, self.np_rng, gen, cfg.mixup, cfg.cutmix)
        x = x.contiguous(memory_format=self.mem)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
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
        self.loss_sum += loss.detach().float()
        self.correct += (logits.detach().argmax(1) == y).sum()

    @property
    def eval_model(self) -> torch.nn.Module:
        """What is validated and saved: the EMA weights when there are some."""
        return self.ema.model if self.ema is not None else self.model

    def validate(self) -> tuple[float, float]:
        """Loss and accuracy on the validation split, exact over all processes."""
        if not self.n_val:
            return float("nan"), float("nan")
        model = self.eval_model
        # Each process's BN running statistics differ after its last step; use rank 0's.
        self.world.broadcast(list(model.buffers()))
        t0 = time.perf_counter()
        logits = predict_logits(
            model, self.x_val, self.config.eval_batch_size, self.config.tta, self.amp, self.config.channels_last
        )
        loss = F.cross_entropy(logits, self.y_val, reduction="sum").item() if len(self.y_val) else 0.0
        correct = float((logits.argmax(1) == self.y_val).sum().item())
        loss, correct = self.world.sum([loss, correct], self.device)
        self.elapsed += time.perf_counter() - t0
        return loss / self.n_val, correct / self.n_val

    def end_epoch(self, row: dict[str, float]) -> None:
        """Record the epoch, keep the best model, write the files and the resume state."""
        self.history.append(row)
        no_val = not self.n_val
        improved = not self.best or no_val or row["val_accuracy"] > self.best["val_accuracy"]
        if improved:
            self.best = dict(row)
            self.best_state = {k: v.detach().clone() for k, v in self.eval_model.state_dict().items()}
            self.stale = 0
        else:
            self.stale += 1
        self.epoch += 1
        self.step = 0
        if self.world.main:
            self.folder.write_metrics(self.history)
            if improved:
                self.save_model()
        if self.config.save_every and (row["epoch"] % self.config.save_every == 0 or self.done):
            self.save_resume_state()
        self._emit("on_epoch_end", row)

    def save_model(self) -> None:
        """The best weights so far (the current eval model: called right after it improved)."""
        info = dataclasses.replace(
            self.info,
            epoch=int(self.best["epoch"]),
            val_accuracy=self.best["val_accuracy"],
            val_loss=self.best["val_loss"],
        )
        save_model(self.folder / MODEL_FILE, self.eval_model, info)

    @property
    def done(self) -> bool:
        cfg = self.config
        stopped = cfg.early_stop and self.stale >= cfg.early_stop
        return self.epoch > cfg.epochs or bool(stopped)

    # --- the whole run --------------------------------------------------------------------------

    def run(self) -> Run:
        try:
            if not self._ready:
                self.setup()
            with self._signals():
                self._emit("on_train_start", self.config, self.info, self.epoch)
                while not self.done:
                    row: dict[str, Any] = {"epoch": self.epoch, **self.train_epoch()}
                    train_seconds = self.epoch_seconds
                    t0 = time.perf_counter()
                    row["val_loss"], row["val_accuracy"] = self.validate()
                    row["lr"] = self.optimizer.param_groups[0]["lr"]
                    row["train_seconds"] = train_seconds
                    row["seconds"] = train_seconds + time.perf_counter() - t0
                    row["elapsed"] = self.elapsed
                    self.end_epoch(row)
                    if not self.done and self.world.any(self._stop is not None, self.device):
                        if not self.config.save_every or (row["epoch"] % self.config.save_every):
                            self.save_resume_state()
                        raise Interrupted(self.folder.path, self.epoch, 0, self.steps)
                return self.finish()
        except BaseException as e:
            self._after_failure(e)
            raise
        finally:
            self._release()
            if hasattr(self, "world"):
                self.world.close()

    def _after_failure(self, error: BaseException) -> None:
        """A new run that fails before it saved a model leaves the folder as it found it: its
        own files removed and, with --overwrite, the old run given back. One that saved a model
        stays (unfinished, resumable), and an old run it replaces stays set aside in
        .fmnist-replaced/ until a run in this folder finishes. Interrupted runs keep everything."""
        if not self._claimed or self.resuming or isinstance(error, Interrupted) or not self.world.main:
            return
        if (self.folder / MODEL).is_file():
            return
        with contextlib.suppress(OSError):
            if self._set_aside:
                self.folder.restore_aside()
            else:
                self.folder.clear()
            if not self._had_lock_file:
                (self.folder / LOCK_NAME).unlink(missing_ok=True)
            if self._created:
                self.folder.path.rmdir()

    def finish(self) -> Run:
        cfg = self.config
        final = build_model(cfg.model, **cfg.model_args).to(self.device)
        final.load_state_dict(self.best_state)
        final.eval()
        t0 = time.perf_counter()
        calibration = self._calibrate(final)
        self.elapsed += time.perf_counter() - t0
        info = dataclasses.replace(
            self.info,
            epoch=int(self.best["epoch"]),
            val_accuracy=self.best["val_accuracy"],
            val_loss=self.best["val_loss"],
            **calibration,
        )
        summary = {
            "model": cfg.model,
            "preset": cfg.preset,
            "best_epoch": self.best["epoch"],
            "val_accuracy": self.best["val_accuracy"],
            "val_loss": self.best["val_loss"],
            "epochs_run": len(self.history),
            "train_seconds": self.elapsed,
            "params": self.info.params,
            "flops_per_image": self.info.flops_per_image,
            "device": self.info.device,
            "precision": self.info.precision,
            "threads": torch.get_num_threads(),
            "processes": self.world.size,
            "temperature": info.temperature,
            "finished": datetime.now().isoformat(timespec="seconds"),
            "versions": self.info.versions,
        }
        if self.world.main:
            if calibration:  # the best epoch's file, now with its temperature
                save_model(self.folder / MODEL_FILE, final, info)
            self.folder.write_summary(summary)
            # The summary marks the run finished; the resume state has served its purpose.
            (self.folder / RESUME).unlink(missing_ok=True)
            self.folder.drop_aside()
        run = Run(self.folder.path, cfg, self.history, self.best, final, info, self.elapsed)
        self._emit("on_train_end", run)
        return run

    def _calibrate(self, model: torch.nn.Module) -> dict[str, Any]:
        """Temperature scaling fitted on the validation split (never the test set), in fp32
        with the TTA the model is used with, so the temperature fits the logits that
        evaluate, predict, the export and the server compute. Empty without a validation split."""
        if not self.n_val:
            return {}
        cfg = self.config
        logits = predict_logits(model, self.x_val, cfg.eval_batch_size, cfg.tta, None, cfg.channels_last)
        # Each process holds a shard of the split; the fit needs all of it.
        parts = self.world.gather([logits.cpu().tolist(), self.y_val.cpu().tolist()])
        z = np.concatenate([np.asarray(p[0], dtype=np.float64).reshape(-1, NUM_CLASSES) for p in parts])
        y = np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts])
        temperature = fit_temperature(z, y)
        return {"temperature": temperature, "calibration": calibration_summary(z, y, temperature, "validation")}

    # --- resume state -------------------------------------------------------------------------

    def save_resume_state(self) -> None:
        """Everything needed to continue exactly here. Collective under torchrun (every
        process contributes its random-number generators); rank 0 writes."""
        rng = {
            "torch": torch.get_rng_state(),
            "aug": self.aug_gen.get_state(),
            "numpy": self.np_rng.bit_generator.state,
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        gathered = self.world.gather({k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in rng.items()})
        if not self.world.main:
            return
        tensors = prefixed("model", self.model.state_dict())
        if self.ema is not None:
            tensors.update(prefixed("ema", self.ema.model.state_dict()))
        if self.best_state is not None:
            tensors.update(prefixed("best", self.best_state))
        opt_tensors, opt_meta = optimizer_state(self.optimizer)
        tensors.update(opt_tensors)
        tensors["rng.perm"] = self.perm_gen.get_state()
        for r, states in enumerate(gathered):
            tensors[f"rng.torch.{r}"] = torch.tensor(states["torch"], dtype=torch.uint8)
            tensors[f"rng.aug.{r}"] = torch.tensor(states["aug"], dtype=torch.uint8)
            if "cuda" in states:
                tensors[f"rng.cuda.{r}"] = torch.tensor(states["cuda"], dtype=torch.uint8)
        if self.step:
            tensors["perm"] = self.perm
        meta = {
            "config": self.config.to_dict(),
            "world_size": self.world.size,
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "best": self.best,
            "stale": self.stale,
            "elapsed": self.elapsed,
            "epoch_seconds": self.epoch_seconds,
            "loss_sum": self.loss_sum.item(),
            "correct": int(self.correct.item()),
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "scheduler": self.scheduler.state_dict(),
            "optimizer": opt_meta,
            "numpy": [s["numpy"] for s in gathered],
        }
        save_state(self.folder / RESUME, tensors, meta)

    def load_resume_state(self) -> None:
        """Restore :meth:`save_resume_state`'s state. Only rank 0 reads the file (on several
        machines only its folder has one); it sends the others what they need."""
        path = self.folder / RESUME
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] | None = None
        if self.world.main:
            try:
                tensors, meta = load_state(path)
            except FmnistError as e:
                meta = {"error": str(e)}
        meta = self.world.share(meta)
        if "error" in meta:
            raise FmnistError(meta["error"])
        self._check_state(path, meta)
        tensors = self._share_tensors(tensors)
        self.model.load_state_dict(unprefixed("model", tensors))
        if self.ema is not None:
            self.ema.model.load_state_dict(unprefixed("ema", tensors))
            self.ema.updates = meta["ema_updates"]
        best = unprefixed("best", tensors)
        self.best_state = {k: v.to(self.device) for k, v in best.items()} or None
        load_optimizer_state(self.optimizer, tensors, meta["optimizer"])
        self.scheduler.load_state_dict(meta["scheduler"])
        r = self.world.rank
        self.perm_gen.set_state(tensors["rng.perm"])
        self.aug_gen.set_state(tensors[f"rng.aug.{r}"])
        torch.set_rng_state(tensors[f"rng.torch.{r}"])
        if self.device.type == "cuda" and f"rng.cuda.{r}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.cuda.{r}"], self.device)
        self.np_rng.bit_generator.state = meta["numpy"][r]
        self.epoch, self.step = meta["epoch"], meta["step"]
        self.history, self.best, self.stale = meta["history"], meta["best"], meta["stale"]
        self.elapsed, self.epoch_seconds = meta["elapsed"], meta["epoch_seconds"]
        self.loss_sum.fill_(meta["loss_sum"])
        self.correct.fill_(meta["correct"])
        self.perm = tensors["perm"].to(self.device) if self.step else None

    def _share_tensors(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rank 0's ``tensors`` on every process (CPU copies)."""
        if not self.world.distributed:
            return tensors
        specs = self.world.share(
            {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in tensors.items()}
            if self.world.main
            else None
        )
        names = sorted(specs)
        # NCCL sends only GPU tensors; gloo sends CPU ones.
        on_device = {
            k: (tensors[k] if self.world.main else torch.empty(specs[k][0], dtype=getattr(torch, specs[k][1]))).to(
                self.device
            )
            for k in names
        }
        self.world.broadcast([on_device[k] for k in names])
        return {k: v.cpu() for k, v in on_device.items()}

    def _check_state(self, path: Path, meta: dict[str, Any]) -> None:
        def comparable(d: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in d.items() if k not in ("out", "overwrite")}

        if comparable(meta["config"]) != comparable(self.config.to_dict()):
            changed = sorted(
                k for k in comparable(meta["config"]) if meta["config"].get(k) != getattr(self.config, k, None)
            )
            raise FmnistError(
                f"{path} belongs to other settings than {self.folder / 'config.json'} "
                f"({', '.join(changed) or 'unknown keys'} differ); restore config.json or retrain"
            )
        if meta["world_size"] != self.world.size:
            raise FmnistError(
                f"{path} was written by {meta['world_size']} process(es); resume it with the same number "
                f"(torchrun --nproc-per-node), not {self.world.size}"
            )

    # --- plumbing -------------------------------------------------------------------------------

    def _emit(self, hook: str, *args) -> None:
        if self.world.main:
            for cb in self.callbacks:
                getattr(cb, hook)(*args)

    def _signals(self):
        """Ctrl-C and SIGTERM finish the current step, save and stop; a second Ctrl-C stops at once."""

        def request_stop(signum, frame):
            # Under torchrun the launcher passes the signal on too: only a lone process
            # takes a second Ctrl-C as "stop at once".
            if self._stop is not None and signum == signal.SIGINT and not self.world.distributed:
                raise KeyboardInterrupt
            self._stop = signum

        return signal_handlers(request_stop, signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signal_handlers(handler, *signums: int):
    """``handler`` for ``signums`` inside the block, the previous handlers after it. Outside the
    main thread (where Python cannot set handlers) the block runs with them unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _to_device(data: Split, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(data.images[idx])).unsqueeze(1).to(device)
    y = torch.from_numpy(data.labels[idx]).to(device)
    return x, y


def train(config: TrainConfig, callbacks: list[Callback] | tuple = ()) -> Run:
    """Train a model as ``config`` says, write the run folder, return the :class:`Run`."""
    return Trainer(config, callbacks).run()


def resume(run_dir: str | Path, callbacks: list[Callback] | tuple = ()) -> Run:
    """Continue the unfinished run in ``run_dir`` where its resume state stopped."""
    return Trainer(None, callbacks, resume=run_dir).run()
