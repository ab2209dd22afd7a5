"""The images a run trains and validates on, built from its config: the training set's
split into training and validation images (the config's held-out split and subset, or one a
study passes in), both parts as tensors on the training device, the validation part sharded
over the processes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from fmnist.core.errors import FmnistError
from fmnist.data import Split, load_split, validation_split
from fmnist.training.config import TrainConfig
from fmnist.training.distributed import World

# Which images of the training set to train on and which to validate on (indices).
Splitter = Callable[[Split], tuple[np.ndarray, np.ndarray]]


def config_split(config: TrainConfig) -> Splitter:
    """The config's split: ``val_size`` images held out (stratified, seeded by ``split_seed``),
    then with ``subset`` a seeded sample of the rest."""

    def split(data: Split) -> tuple[np.ndarray, np.ndarray]:
        if config.val_size >= len(data):
            raise FmnistError(f"--val-size {config.val_size} leaves no training images out of {len(data):,}")
        train_idx, val_idx = validation_split(data.labels, config.val_size, config.split_seed)
        if config.subset:
            # A seeded, class-balanced-in-expectation subset for smoke runs.
            train_idx = np.sort(np.random.default_rng(config.split_seed).permutation(train_idx)[: config.subset])
        return train_idx, val_idx

    return split


def fixed_split(train_idx: np.ndarray, val_idx: np.ndarray | None = None) -> Splitter:
    """Train on ``train_idx`` and validate on ``val_idx`` (default: nothing held out)."""
    val = np.empty(0, dtype=np.int64) if val_idx is None else val_idx
    return lambda data: (train_idx, val)


@dataclass
class TrainingData:
    """uint8 images (N×1×28×28) and labels on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor  # this process's shard of the validation split
    y_val: torch.Tensor
    n_val: int  # the whole validation split, over every process

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_train[idx], self.y_train[idx]


def load_training_data(config: TrainConfig, world: World, device: torch.device, split: Splitter) -> TrainingData:
    data = load_split("train", config.data_dir, verify=config.verify, progress=world.main)
    train_idx, val_idx = split(data)
    if len(train_idx) < world.size:
        raise FmnistError(f"{len(train_idx)} training images cannot be shared by {world.size} processes")
    x_train, y_train = to_device(data, train_idx, device)
    # Each process validates its own contiguous shard; the counts are summed, so the
    # figure is exact over the whole split with no padded duplicates.
    lo, hi = (len(val_idx) * world.rank) // world.size, (len(val_idx) * (world.rank + 1)) // world.size
    x_val, y_val = to_device(data, val_idx[lo:hi], device)
    return TrainingData(x_train, y_train, x_val, y_val, len(val_idx))


def to_device(data: Split, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(data.images[idx])).unsqueeze(1).to(device)
    y = torch.from_numpy(data.labels[idx]).to(device)
    return x, y
