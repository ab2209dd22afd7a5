"""Training: the loop (:class:`Trainer`) and :func:`train`, the one entry point the CLI,
tuning and the ablation all use.

The whole training split lives as one uint8 tensor on the device; each batch is sliced
from it by a seeded permutation, converted to float and augmented there. Nothing leaves
the device inside a step except the numbers a progress display asks for.

The loop is put together from parts that each do one job: the run folder's claim (lock,
set-aside, rollback: :meth:`fmnist.runtime.runs.RunFolder.claim`), the training data
(:mod:`fmnist.training.data`), the model and what trains it, one batch at a time
(:class:`fmnist.training.learner.Learner`), the resume state (:class:`fmnist.training.state.TrainState`,
written after every epoch and when the process is asked to stop, so ``fmnist train --resume
RUN`` continues a killed run and ends with the same model as an uninterrupted one) and the
plan of how long to train (:mod:`fmnist.training.plan`). Under ``torchrun`` each process
trains on its shard of every batch (DistributedDataParallel) and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fmnist.core.errors import FmnistError, TrainingDiverged
from fmnist.core.machine import device_name
from fmnist.models import build_model
from fmnist.runtime.inference import predict_logits, resolve_device
from fmnist.runtime.modelfile import ModelInfo, save_model
from fmnist.runtime.runs import CONFIG, MODEL, RESUME, Claim, RunFolder, RunSummary
from fmnist.training import distributed
from fmnist.training.budget import Clock
from fmnist.training.config import TrainConfig
from fmnist.training.data import Splitter, config_split, load_training_data
from fmnist.training.hooks import Callback, Interrupted, Run, StopRequest, signal_handlers
from fmnist.training.learner import Learner, calibrate_on_validation
from fmnist.training.plan import EpochPlan
from fmnist.training.state import Rngs, TrainState
from fmnist.training.timebox import Timebox

__all__ = ["Callback", "Interrupted", "Run", "Trainer", "resume", "signal_handlers", "train"]


def default_out_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


class Trainer:
    """One training run, step by step: :meth:`setup`, then per epoch :meth:`train_epoch`,
    :meth:`validate` and :meth:`end_epoch` (which checkpoints), then :meth:`finish`.
    :meth:`run` does all of it. ``resume``: continue the unfinished run in that folder.

    Variants are arguments, not subclasses: ``split`` chooses the training and validation
    images (default: the config's held-out split and subset; an audit fold passes its own),
    and ``handle_signals=False`` leaves Ctrl-C and SIGTERM to the caller (a search that
    stops after the current trial)."""

    def __init__(
        self,
        config: TrainConfig | None = None,
        callbacks: list[Callback] | tuple = (),
        resume: str | Path | None = None,
        *,
        split: Splitter | None = None,
        handle_signals: bool = True,
        clock: Clock = time.monotonic,
        started: float | None = None,
    ):
        if resume is not None:
            folder = RunFolder(resume)
            stored = TrainConfig.from_mapping(folder.read_config(), str(folder / CONFIG))
            config = dataclasses.replace(stored, out=str(folder.path))
        if config is None:
            raise ValueError("pass a config or a run folder to resume")
        self.config = copy.deepcopy(config)
        self.callbacks = list(callbacks)
        self.resuming = resume is not None
        self.split = split or config_split(self.config)
        self.handle_signals = handle_signals
        # --time-budget counts from ``started`` on ``clock`` (the CLI passes its process's start)
        self.clock, self.started = clock, clock() if started is None else started
        self.timebox: Timebox | None = None
        self.claim: Claim | None = None  # rank 0's hold on the run folder
        self._session = contextlib.ExitStack()  # what ends with the run: the claim, the process group
        self._ready = False

    # --- setup ------------------------------------------------------------------------------

    def setup(self) -> None:
        """Check everything a user can get wrong, then claim the run folder and build the
        model, optimizer and data on the device. Nothing on disk changes before the checks."""
        try:
            self._setup()
        except BaseException as e:
            self._close(e)
            raise

    def _setup(self) -> None:
        cfg = self.config
        cfg.validate()
        self.world, device = distributed.join(cfg.device)
        self._session.callback(self.world.close)
        self.device = device or resolve_device(cfg.device)
        self.stop = StopRequest(self.world.distributed)
        if cfg.out is None:
            cfg.out = self.world.share(str(default_out_dir(cfg)))  # one timestamp for every process
        self.data = load_training_data(cfg, self.world, self.device, self.split)
        self.batch = min(cfg.batch_size, self.data.n_train)
        if self.batch % self.world.size:
            raise FmnistError(
                f"--batch-size {self.batch} does not split evenly over {self.world.size} processes; "
                f"use a multiple of {self.world.size}"
            )
        self.local_batch = self.batch // self.world.size
        # The ragged last batch is dropped: BN dislikes tiny batches.
        self.plan = EpochPlan.of(cfg, self.data.n_train // self.batch)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.folder = RunFolder(cfg.out)
        self._claim()
        if cfg.time_budget is not None and not cfg.plan and not self.resuming:
            self._plan_budget()
        self._build()
        if self.resuming:
            self.state.load(self.folder / RESUME, self.world, cfg.to_dict(), self.folder / CONFIG)
        else:
            if self.world.main:
                self._write_config()
            self.save_state()  # so a run killed in its first epoch can be resumed too
        self._ready = True

    def _claim(self) -> None:
        """Rank 0 claims the folder; the others learn whether that worked."""
        problem = None
        if self.world.main:
            try:
                self.claim = self._session.enter_context(self.folder.claim(self.config.overwrite, self.resuming))
            except FmnistError as e:
                problem = str(e)
            if not problem and not self.resuming:
                # From now on the folder reads as an unfinished run (the resolved values follow).
                self.folder.write_config({**self.config.to_dict(), "resolved": {}})
        problem = self.world.share(problem)
        if problem:
            raise FmnistError(problem)

    def _plan_budget(self) -> None:
        """Probe this machine and fix the plan a --time-budget buys; it is recorded in the
        config, so the run can be repeated step for step without a budget."""
        cfg, spe = self.config, self.plan.steps_per_epoch
        self.timebox = Timebox(cfg, self.world, self.device, self.clock, self.started)
        schedule = self.timebox.plan(self.data, self.batch, self.local_batch, spe, self.plan.schedule)
        self.plan = EpochPlan(schedule, cfg.early_stop)
        cfg.plan = schedule.to_dict()

    def _write_config(self) -> None:
        """config.json: every setting (the plan included) and what was resolved on this machine."""
        keys = ("device", "precision", "params", "flops_per_image")
        resolved = {k: getattr(self.info, k) for k in keys} | {"processes": self.world.size}
        resolved["hardware"] = device_name(str(self.device))  # `fmnist runs` names the CPU or GPU
        if self.timebox is not None:
            resolved |= {**self.timebox.resolved(), "plan": self.plan.schedule.to_dict()}
        self.folder.write_config({**self.config.to_dict(), "resolved": resolved})

    def _build(self) -> None:
        """The model and what trains it, and the state that holds them. The generators are
        seeded first: the initial weights come from the global one."""
        rngs = Rngs.seeded(self.config.seed, self.world.rank, self.device)
        ln = Learner.build(self.config, self.world, self.device, self.data, self.plan.schedule, self.resuming)
        self.learner, self.info = ln, ln.info
        self.state = TrainState(ln.model, ln.optimizer, ln.scheduler, ln.ema, rngs, self.device)

    # --- one epoch ----------------------------------------------------------------------------

    def train_epoch(self) -> dict[str, float]:
        """Train from the current step to the end of the epoch; returns the epoch's training
        loss and accuracy. Raises :class:`Interrupted` (after saving) on a stop request."""
        s, dev, plan = self.state, self.device, self.plan
        if s.step == 0:
            s.perm = torch.randperm(self.data.n_train, generator=s.rngs.perm, device=dev)
            s.loss_sum.zero_()
            s.correct.zero_()
            s.epoch_seconds = 0.0
        self.learner.train()
        self._emit("on_epoch_start", s.epoch, plan.steps_in(s.epoch))
        running = self.world.main and any(cb.wants_running_stats for cb in self.callbacks)
        t0 = time.perf_counter()
        offset = self.world.rank * self.local_batch
        first = (s.epoch - 1) * plan.steps_per_epoch  # global step at the epoch's start
        if self.timebox is not None:
            self.timebox.start_epoch(first + s.step)
        while s.step < plan.steps_in(s.epoch):  # a shortened plan can end this epoch early
            start = s.step * self.batch + offset
            loss, correct = self.learner.step(*self.data.batch(s.perm[start : start + self.local_batch]), s.rngs)
            s.loss_sum += loss
            s.correct += correct
            s.step += 1
            if self.timebox is not None and self.timebox.check(plan.schedule, first + s.step):
                self.config.plan = plan.schedule.to_dict()
                if self.world.main:
                    self._write_config()
            # note: .item() is a host/device sync point; only done when a display asks for it
            if running and (s.step % 20 == 0 or s.step == plan.steps_in(s.epoch)):
                self._emit("on_step", self._running_stats())
            if self.world.any(self.stop.asked, dev) and s.step < plan.steps_in(s.epoch):
                s.epoch_seconds += time.perf_counter() - t0
                s.elapsed += time.perf_counter() - t0
                self.save_state()
                self._interrupted()
        dt = time.perf_counter() - t0
        s.epoch_seconds += dt
        s.elapsed += dt
        loss_sum, correct = self.world.sum([s.loss_sum.item(), float(s.correct.item())], dev)
        steps = s.step
        train_loss = loss_sum / (steps * self.world.size)
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"the training loss became {train_loss} in epoch {s.epoch}: training diverged, most likely "
                f"because the learning rate ({self.config.lr}) is too high for this recipe; lower --lr and retrain. "
                + (
                    f"The last good model (epoch {s.best['epoch']}) is kept in {self.folder.path}"
                    if s.best
                    else "No epoch finished, so no model was saved"
                )
            )
        return {"train_loss": train_loss, "train_accuracy": correct / (steps * self.batch)}

    def _running_stats(self) -> dict[str, float]:
        s = self.state
        return {
            "epoch": s.epoch,
            "epochs": self.plan.epochs,
            "step": s.step,
            "steps": self.plan.steps_in(s.epoch),
            "loss": s.loss_sum.item() / s.step,
            "accuracy": s.correct.item() / (s.step * self.local_batch),
        }

    def validate(self) -> tuple[float, float]:
        """Loss and accuracy on the validation split, exact over all processes."""
        d = self.data
        if not d.n_val:
            return float("nan"), float("nan")
        model = self.learner.eval_model
        # Each process's BN running statistics differ after its last step; use rank 0's.
        self.world.broadcast(list(model.buffers()))
        t0, c0 = time.perf_counter(), self.clock()
        cfg = self.config
        logits = predict_logits(model, d.x_val, cfg.eval_batch_size, cfg.tta, self.learner.amp, cfg.channels_last)
        loss = F.cross_entropy(logits, d.y_val, reduction="sum").item() if len(d.y_val) else 0.0
        correct = float((logits.argmax(1) == d.y_val).sum().item())
        loss, correct = self.world.sum([loss, correct], self.device)
        self.state.elapsed += time.perf_counter() - t0
        if self.timebox is not None:
            self.timebox.validated(self.clock() - c0)
        return loss / d.n_val, correct / d.n_val

    def end_epoch(self, row: dict[str, float]) -> None:
        """Record the epoch, keep the best model, write the files and the resume state."""
        s = self.state
        s.history.append(row)
        improved = not s.best or not self.data.n_val or row["val_accuracy"] > s.best["val_accuracy"]
        if improved:
            s.best = dict(row)
            s.best_state = {k: v.detach().clone() for k, v in self.learner.eval_model.state_dict().items()}
            s.stale = 0
        else:
            s.stale += 1
        s.epoch += 1
        s.step = 0
        if self.world.main:
            self.folder.write_metrics(s.history)
            if improved:
                self.save_model()
        if self.config.save_every and (row["epoch"] % self.config.save_every == 0 or self.done):
            self.save_state()
        self._emit("on_epoch_end", row)

    def save_model(self) -> None:
        """The best weights so far (the current eval model: called right after it improved)."""
        save_model(self.folder / MODEL, self.learner.eval_model, self._best_info())
        self._keep()  # a model worth keeping: a failure from here on leaves the run resumable

    def save_state(self) -> None:
        """The resume state (collective under torchrun)."""
        self.state.save(self.folder / RESUME, self.world, self.config.to_dict())

    def _best_info(self, **more: Any) -> ModelInfo:
        best = self.state.best
        return dataclasses.replace(
            self.info, epoch=int(best["epoch"]), val_accuracy=best["val_accuracy"], val_loss=best["val_loss"], **more
        )

    @property
    def done(self) -> bool:
        return self.plan.done(self.state.epoch, self.state.stale)

    # --- the whole run --------------------------------------------------------------------------

    def run(self) -> Run:
        try:
            if not self._ready:
                self.setup()
            with self.stop.handled() if self.handle_signals else contextlib.nullcontext():
                self._emit("on_train_start", self.config, self.info, self.state.epoch)
                while not self.done:
                    self._epoch()
            run = self.finish()
        except BaseException as e:
            self._close(e)
            raise
        self._close(None)
        return run

    def _epoch(self) -> None:
        """One epoch, validated and recorded; a stop request at its end saves and stops."""
        s = self.state
        row: dict[str, Any] = {"epoch": s.epoch, **self.train_epoch()}
        train_seconds = s.epoch_seconds
        t0 = time.perf_counter()
        row["val_loss"], row["val_accuracy"] = self.validate()
        row["lr"] = self.learner.optimizer.param_groups[0]["lr"]
        row["train_seconds"] = train_seconds
        row["seconds"] = train_seconds + time.perf_counter() - t0
        row["elapsed"] = s.elapsed
        self.end_epoch(row)
        if not self.done and self.world.any(self.stop.asked, self.device):
            if not self.config.save_every or (row["epoch"] % self.config.save_every):
                self.save_state()
            self._interrupted()

    def _interrupted(self) -> None:
        self._keep()  # the state is saved: the run stays, to be resumed
        raise Interrupted(self.folder.path, self.state.epoch, self.state.step, self.plan.steps_in(self.state.epoch))

    def _keep(self) -> None:
        if self.claim is not None:
            self.claim.keep()

    def _close(self, error: BaseException | None) -> None:
        """End the claim (a failure before it kept anything gives the folder back) and the process group."""
        if error is None:
            self._session.close()
        else:
            self._session.__exit__(type(error), error, error.__traceback__)

    def finish(self) -> Run:
        """The best epoch's model, calibrated; its file, the summary, and the end of the resume state."""
        cfg, s = self.config, self.state
        final = build_model(cfg.model, **cfg.model_args).to(self.device)
        final.load_state_dict(s.best_state)
        final.eval()
        t0 = time.perf_counter()
        calibration, confusion = calibrate_on_validation(final, self.data, self.config, self.world)
        s.elapsed += time.perf_counter() - t0
        info = self._best_info(**calibration)
        if self.world.main:
            if calibration:  # the best epoch's file, now with its temperature
                save_model(self.folder / MODEL, final, info)
            threads, processes = torch.get_num_threads(), self.world.size
            summary = RunSummary.of(
                info, epochs_run=len(s.history), train_seconds=s.elapsed, threads=threads, processes=processes
            )
            self.folder.write_summary(summary)
            # The summary marks the run finished; the resume state has served its purpose.
            (self.folder / RESUME).unlink(missing_ok=True)
            self.folder.drop_aside()
        run = Run(self.folder.path, cfg, s.history, s.best, final, info, s.elapsed, confusion)
        self._emit("on_train_end", run)
        return run

    def _emit(self, hook: str, *args) -> None:
        if self.world.main:
            for cb in self.callbacks:
                getattr(cb, hook)(*args)


def train(config: TrainConfig, callbacks: list[Callback] | tuple = ()) -> Run:
    """Train a model as ``config`` says, write the run folder, return the :class:`Run`."""
    return Trainer(config, callbacks).run()


def resume(run_dir: str | Path, callbacks: list[Callback] | tuple = ()) -> Run:
    """Continue the unfinished run in ``run_dir`` where its resume state stopped."""
    return Trainer(None, callbacks, resume=run_dir).run()
