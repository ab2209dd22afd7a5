"""fmnist: train, understand, improve and use a Fashion-MNIST classifier.

The library API mirrors the CLI::

    from fmnist import TrainConfig, train, evaluate, calibrate, predict, load_model, load_fashion_mnist
"""

from ._version import __version__
from .config import TrainConfig
from .data import load_fashion_mnist, load_split, validation_split
from .errors import FmnistError
from .evaluate import calibrate, evaluate
from .modelfile import ModelInfo, load_model
from .predict import predict
from .spec import CLASS_NAMES

# Note: the function below shadows its module as a package attribute (fmnist.train is the
# function). Import the module's internals with `from fmnist.train import X`.
from .train import resume, train  # noqa: E402

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
