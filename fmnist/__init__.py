"""fmnist: train, understand, improve and use a Fashion-MNIST classifier.

The library API mirrors the CLI::

    from fmnist import TrainConfig, train, evaluate, calibrate, predict, load_model, load_fashion_mnist

The names below are imported on first use (PEP 562): ``import fmnist`` costs almost nothing,
and a program that only predicts or serves never loads the training engine.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from fmnist._version import __version__

# public name -> the module that defines it
_LAZY = {
    "CLASS_NAMES": "fmnist.core.spec",
    "FmnistError": "fmnist.core.errors",
    "ModelInfo": "fmnist.runtime.modelfile",
    "TrainConfig": "fmnist.training.config",
    "calibrate": "fmnist.reporting.evaluate",
    "evaluate": "fmnist.reporting.evaluate",
    "load_fashion_mnist": "fmnist.data",
    "load_model": "fmnist.runtime.modelfile",
    "load_split": "fmnist.data",
    "predict": "fmnist.runtime.predict",
    "resume": "fmnist.tracking",
    "train": "fmnist.tracking",
    "validation_split": "fmnist.data",
}

__all__ = [
    "CLASS_NAMES",
    "FmnistError",
    "ModelInfo",
    "TrainConfig",
    "__version__",
    "calibrate",
    "evaluate",
    "load_fashion_mnist",
    "load_model",
    "load_split",
    "predict",
    "resume",
    "train",
    "validation_split",
]

if TYPE_CHECKING:
    from fmnist.core.errors import FmnistError
    from fmnist.core.spec import CLASS_NAMES
    from fmnist.data import load_fashion_mnist, load_split, validation_split
    from fmnist.reporting.evaluate import calibrate, evaluate
    from fmnist.runtime.modelfile import ModelInfo, load_model
    from fmnist.runtime.predict import predict
    from fmnist.tracking import resume, train
    from fmnist.training.config import TrainConfig


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fmnist' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
