"""The small architectures: the notebook's seed CNN, the MLP baseline, the better CNN and
the sprint network."""

from __future__ import annotations

from torch import nn

from fmnist.core.spec import IMAGE_SIZE, MEAN, NUM_CLASSES, STD
from fmnist.models.layers import GlobalPool, Normalize, PatchWhitening, pool_first
from fmnist.models.registry import register


@register("seed", "the original notebook's CNN: 2×(Conv2D+ReLU+MaxPool) → Dense 128 → Dense 10 (225,034 params)")
def seed(mean: float = MEAN, std: float = STD, normalize: str = "standardize") -> nn.Module:
    return nn.Sequential(
        Normalize(mean, std, normalize),
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 5 * 5, 128),
        nn.ReLU(),
        nn.Linear(128, NUM_CLASSES),
    )


@register("mlp", "the classic tutorial baseline: Flatten → Dense 128 + ReLU → Dense 10")
def mlp(hidden: int = 128, mean: float = MEAN, std: float = STD) -> nn.Module:
    return nn.Sequential(
        Normalize(mean, std),
        nn.Flatten(),
        nn.Linear(IMAGE_SIZE * IMAGE_SIZE, hidden),
        nn.ReLU(),
        nn.Linear(hidden, NUM_CLASSES),
    )


@register("cnn", "the seed CNN made better: 3 stages of 2×(Conv+BN+ReLU) with padding, max-pool, dropout")
def cnn(
    widths: tuple[int, ...] | list[int] = (32, 64, 128),
    convs: int = 2,
    batchnorm: bool = True,
    dropout: float = 0.2,
    padding: int = 1,
    hidden: int = 0,
    mean: float = MEAN,
    std: float = STD,
) -> nn.Module:
    """``convs`` Conv(+BN)+ReLU layers per stage, then a 2×2 max-pool, per width in ``widths``;
    an optional dense ``hidden`` layer before the output. With widths=(32, 64), convs=1,
    batchnorm=False, dropout=0, padding=0, hidden=128 this is exactly the seed network, which
    is how the ablation adds one improvement at a time."""
    layers: list[nn.Module] = [Normalize(mean, std)]
    size, c_in = IMAGE_SIZE, 1
    for width in widths:
        for _ in range(convs):
            # A conv bias is redundant before batch norm (its shift does the same job).
            layers.append(nn.Conv2d(c_in, width, 3, padding=padding, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            size, c_in = size - 2 * (1 - padding), width
        layers.append(nn.MaxPool2d(2))
        size //= 2
    layers += [nn.Flatten(), nn.Dropout(dropout)] if dropout else [nn.Flatten()]
    features = c_in * size * size
    if hidden:
        layers += [nn.Linear(features, hidden), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        features = hidden
    layers.append(nn.Linear(features, NUM_CLASSES))
    return nn.Sequential(*layers)


# Called "fast" until 2026-12: a name that said what it was for (the sprint preset), not what it is.
@register(
    "poolfirst",
    "the sprint network: pool-first conv layers and a global pool, optionally a whitening stem",
    formerly=("fast",),
)
def poolfirst(
    widths: tuple[int, ...] | list[int] = (16, 32, 64),
    stem: str = "conv",
    stem_kernel: int = 4,
    stem_keep: int = 8,
    mean: float = MEAN,
    std: float = STD,
) -> nn.Module:
    """One pool-first layer (:func:`pool_first`) per width (28 -> 14 -> 7 -> 3), max- and
    mean-pooled per channel, then the output layer. ``stem="whiten"`` starts instead with a
    frozen :class:`PatchWhitening` of ``stem_kernel``×``stem_kernel`` patches at stride 2
    (28 -> 14, 2×``stem_keep`` channels, then batch norm and ReLU), so the first width already
    works at 14×14: no layer runs at full resolution."""
    if stem not in ("conv", "whiten"):
        raise ValueError(f"stem must be conv or whiten, not {stem!r}")
    layers: list[nn.Module] = [Normalize(mean, std)]
    c_in = 1
    if stem == "whiten":
        layers += [PatchWhitening(stem_kernel, 2, stem_keep), nn.BatchNorm2d(2 * stem_keep), nn.ReLU(inplace=True)]
        c_in = 2 * stem_keep
    for width in widths:
        layers.append(pool_first(c_in, width))
        c_in = width
    layers += [GlobalPool(), nn.Linear(2 * c_in, NUM_CLASSES)]
    return nn.Sequential(*layers)
