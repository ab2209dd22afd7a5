"""fmnist: train, understand, improve and use a Fashion-MNIST classifier.

The library API mirrors the CLI::

    from fmnist import TrainConfig, train, evaluate, predict, load_model, load_fashion_mnist
"""

__version__ = "0.1.0"

# Note: the functions below shadow their modules of the same name as package attributes
# (fmnist.train is the function). Import module internals with `from fmnist.train import X`.
from .checkpoint import load_model  # noqa: E402
from .data import CLASS_NAMES, load_fashion_mnist, load_split, validation_split  # noqa: E402
from .errors import FmnistError  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .predict import predict  # noqa: E402
from .train import TrainConfig, train  # noqa: E402

__all__ = [
    "CLASS_NAMES",
    "FmnistError",
    "TrainConfig",
    "evaluate",
    "load_fashion_mnist",
    "load_model",
    "load_split",
    "predict",
    "train",
    "validation_split",
]
