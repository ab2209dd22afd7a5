"""The resume state of a training run: :class:`TrainState`, everything the loop needs to
continue exactly where it stopped, and its file, one safetensors file whose tensors hold the
model, the EMA, the optimizer and the random-number generators, and whose metadata holds
everything else as JSON (epoch, step, history, best-so-far, scheduler, the configuration).
Never pickle: loading it runs no code. Written atomically, so a ``kill -9`` leaves the
previous state.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from fmnist._version import __version__
from fmnist.core.errors import FmnistError
from fmnist.core.files import atomic_write_bytes
from fmnist.runtime.modelfile import _canonical
from fmnist.training.distributed import World
from fmnist.training.optim import EMA

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


# --- the state of a run ------------------------------------------------------------------------


def derived_seed(*parts: int) -> int:
    """Independent seeds for independent streams (the batch order, each process's
    augmentation), so they are never the same sequence."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class Rngs:
    """The random-number generators of one process, besides PyTorch's global one."""

    perm: torch.Generator  # the batch order: one sequence on every process
    aug: torch.Generator  # this process's augmentation
    numpy: np.random.Generator  # this process's mixup and cutmix draws

    @classmethod
    def seeded(cls, seed: int, rank: int, device: torch.device) -> Rngs:
        """Seed every generator from the run's seed (the global one too: dropout, initial weights)."""
        torch.manual_seed(derived_seed(seed, 1, rank))
        return cls(
            perm=torch.Generator(device=device).manual_seed(derived_seed(seed, 2)),
            aug=torch.Generator(device=device).manual_seed(derived_seed(seed, 3, rank)),
            numpy=np.random.default_rng(derived_seed(seed, 4, rank)),
        )


@dataclass
class TrainState:
    """Everything needed to continue a run exactly where it stopped: what it trains (model,
    EMA, optimizer, scheduler), every random-number generator, and the counters. The loop
    reads and advances it; :meth:`save` and :meth:`load` are collective under torchrun."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    rngs: Rngs
    device: torch.device
    epoch: int = 1
    step: int = 0  # steps done in the current epoch
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None
    stale: int = 0  # epochs since the best one
    elapsed: float = 0.0  # training + validation seconds, over every session of this run
    epoch_seconds: float = 0.0
    perm: torch.Tensor | None = None  # this epoch's batch order
    # This epoch's sums so far, kept on the device: reading them is a sync point.
    loss_sum: torch.Tensor = field(init=False)
    correct: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)

    def save(self, path: Path, world: World, config: dict[str, Any]) -> None:
        """Write the state to ``path``: every process contributes its random-number
        generators, rank 0 writes. ``config``: the run's settings, checked on :meth:`load`."""
        rng = {
            "torch": torch.get_rng_state(),
            "aug": self.rngs.aug.get_state(),
            "numpy": self.rngs.numpy.bit_generator.state,
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        gathered = world.gather({k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in rng.items()})
        if world.main:
            opt_tensors, opt_meta = optimizer_state(self.optimizer)
            tensors = {**self._tensors(gathered), **opt_tensors}
            save_state(path, tensors, {**self._meta(config, world.size, gathered), "optimizer": opt_meta})

    def _tensors(self, gathered: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tensors = prefixed("model", self.model.state_dict())
        if self.ema is not None:
            tensors.update(prefixed("ema", self.ema.model.state_dict()))
        if self.best_state is not None:
            tensors.update(prefixed("best", self.best_state))
        tensors["rng.perm"] = self.rngs.perm.get_state()
        for r, states in enumerate(gathered):
            tensors[f"rng.torch.{r}"] = torch.tensor(states["torch"], dtype=torch.uint8)
            tensors[f"rng.aug.{r}"] = torch.tensor(states["aug"], dtype=torch.uint8)
            if "cuda" in states:
                tensors[f"rng.cuda.{r}"] = torch.tensor(states["cuda"], dtype=torch.uint8)
        if self.step:
            tensors["perm"] = self.perm
        return tensors

    def _meta(self, config: dict[str, Any], world_size: int, gathered: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "config": config,
            "world_size": world_size,
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
            "numpy": [s["numpy"] for s in gathered],
        }

    def load(self, path: Path, world: World, config: dict[str, Any], config_path: Path) -> None:
        """Restore what :meth:`save` wrote, refusing a state from other settings
        (``config``, as in ``config_path``) or another number of processes. Only rank 0
        reads the file (on several machines only its folder has one); it sends the others
        what they need."""
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] | None = None
        if world.main:
            try:
                tensors, meta = load_state(path)
            except FmnistError as e:
                meta = {"error": str(e)}
        meta = world.share(meta)
        if "error" in meta:
            raise FmnistError(meta["error"])
        check_state(path, meta, config, config_path, world.size)
        self._restore(world.share_tensors(tensors, self.device), meta, world.rank)

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], rank: int) -> None:
        self.model.load_state_dict(unprefixed("model", tensors))
        if self.ema is not None:
            self.ema.model.load_state_dict(unprefixed("ema", tensors))
            self.ema.updates = meta["ema_updates"]
        best = unprefixed("best", tensors)
        self.best_state = {k: v.to(self.device) for k, v in best.items()} or None
        load_optimizer_state(self.optimizer, tensors, meta["optimizer"])
        self.scheduler.load_state_dict(meta["scheduler"])
        self.rngs.perm.set_state(tensors["rng.perm"])
        self.rngs.aug.set_state(tensors[f"rng.aug.{rank}"])
        torch.set_rng_state(tensors[f"rng.torch.{rank}"])
        if self.device.type == "cuda" and f"rng.cuda.{rank}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.cuda.{rank}"], self.device)
        self.rngs.numpy.bit_generator.state = meta["numpy"][rank]
        self.epoch, self.step = meta["epoch"], meta["step"]
        self.history, self.best, self.stale = meta["history"], meta["best"], meta["stale"]
        self.elapsed, self.epoch_seconds = meta["elapsed"], meta["epoch_seconds"]
        self.loss_sum.fill_(meta["loss_sum"])
        self.correct.fill_(meta["correct"])
        self.perm = tensors["perm"].to(self.device) if self.step else None


def check_state(path: Path, meta: dict[str, Any], config: dict[str, Any], config_path: Path, world_size: int) -> None:
    """A resume state belongs to the settings it was saved with and its number of processes."""

    def comparable(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in ("out", "overwrite")}

    if comparable(meta["config"]) != comparable(config):
        changed = sorted(k for k in comparable(meta["config"]) if meta["config"].get(k) != config.get(k))
        raise FmnistError(
            f"{path} belongs to other settings than {config_path} "
            f"({', '.join(changed) or 'unknown keys'} differ); restore config.json or retrain"
        )
    if meta["world_size"] != world_size:
        raise FmnistError(
            f"{path} was written by {meta['world_size']} process(es); resume it with the same number "
            f"(torchrun --nproc-per-node), not {world_size}"
        )
