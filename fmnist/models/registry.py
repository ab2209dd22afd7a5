"""Registry of architectures, each taking 1×28×28 pixel values in [0, 255].

Every model starts with :class:`Normalize`, so a model file carries its own input
normalization and callers never have to remember the training set's mean and std.
Models return logits; softmax is applied at prediction time (and folded into the
cross-entropy loss during training, which is numerically safer).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from torch import nn

from fmnist.core.errors import FmnistError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_ABOUT: dict[str, str] = {}
_FORMERLY: dict[str, str] = {}  # old name -> new name


def register(name: str, about: str, formerly: tuple[str, ...] = ()):
    """Register an architecture; ``formerly``: names it had before, which model files and
    configs may still carry (they keep working, with a note)."""

    def deco(fn):
        _REGISTRY[name] = fn
        _ABOUT[name] = about
        _FORMERLY.update(dict.fromkeys(formerly, name))
        return fn

    return deco


def available() -> dict[str, str]:
    """Model name -> one-line description."""
    return dict(_ABOUT)


def canonical_name(name: str, note: bool = True) -> str:
    """The current name of a model: ``name`` itself, or the new name of a renamed one (with
    a note, unless ``note`` is False)."""
    new = _FORMERLY.get(name)
    if new is None:
        return name
    if note:
        warnings.warn(f"model {name!r} is now called {new!r}; the old name still works", FutureWarning, stacklevel=2)
    return new


def build_model(name: str, **kwargs) -> nn.Module:
    name = canonical_name(name)
    if name not in _REGISTRY:
        raise FmnistError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}")
    try:
        return _REGISTRY[name](**kwargs)
    except (TypeError, ValueError) as e:
        raise FmnistError(f"bad arguments for model {name!r}: {e}") from None
