"""Registry of architectures, each taking 1×28×28 pixel values in [0, 255].

Every model starts with :class:`Normalize`, so a model file carries its own input
normalization and callers never have to remember the training set's mean and std.
Models return logits; softmax is applied at prediction time (and folded into the
cross-entropy loss during training, which is numerically safer).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fmnist.core.errors import FmnistError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_ABOUT: dict[str, str] = {}


def register(name: str, about: str):
    def deco(fn):
        _REGISTRY[name] = fn
        _ABOUT[name] = about
        return fn

    return deco


def available() -> dict[str, str]:
    """Model name -> one-line description."""
    return dict(_ABOUT)


def build_model(name: str, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise FmnistError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}")
    try:
        return _REGISTRY[name](**kwargs)
    except (TypeError, ValueError) as e:
        raise FmnistError(f"bad arguments for model {name!r}: {e}") from None
