"""Building blocks shared by the architectures: input normalization, the frozen
whitening stem, conv-BN-ReLU units, residual stages, global pooling."""

from __future__ import annotations

import torch
from torch import nn

from fmnist.core.spec import MEAN, STD


class Normalize(nn.Module):
    """Brings 0–255 pixels to the scale the network trains well on.

    ``mode="standardize"`` (default): scale to [0, 1], then subtract the training set's mean
    and divide by its std, so inputs are centred with unit spread: gradients are of similar
    size in every layer and training converges faster. ``"scale"`` only divides by 255 (what
    the original notebook did); ``"none"`` feeds raw 0–255 values (shown in the ablation).
    """

    def __init__(self, mean: float = MEAN, std: float = STD, mode: str = "standardize"):
        super().__init__()
        if mode not in ("standardize", "scale", "none"):
            raise ValueError(f"normalization mode must be standardize, scale or none, not {mode!r}")
        self.mean, self.std, self.mode = float(mean), float(std), mode
        # One fused multiply-add: (x/255 - mean)/std == x*scale + shift.
        if mode == "standardize":
            self.scale, self.shift = 1.0 / (255.0 * self.std), -self.mean / self.std
        elif mode == "scale":
            self.scale, self.shift = 1.0 / 255.0, 0.0
        else:
            self.scale, self.shift = 1.0, 0.0

    @property
    def description(self) -> str:
        return {
            "standardize": "scales pixels to [0, 1], then standardizes them (mean 0, std 1)",
            "scale": "scales pixels to [0, 1]",
            "none": "passes raw 0–255 pixel values through (no normalization)",
        }[self.mode]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    def extra_repr(self) -> str:
        return f"mode={self.mode}, mean={self.mean:.4f}, std={self.std:.4f}"


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    # No conv bias: the following batch norm's shift makes it redundant.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def pool_first(c_in: int, c_out: int) -> nn.Sequential:
    """Conv, then 2×2 max-pool, then batch norm and ReLU on the pooled map: the same features
    as Conv-BN-ReLU-pool, with the memory-bound steps (BN, ReLU and their gradients) on a
    quarter of the values. On a CPU those steps, not the multiply-adds, bound small networks."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class PatchWhitening(nn.Module):
    """A frozen first convolution that whitens ``kernel``×``kernel`` patches, after Keller
    Jordan's airbench: its filters are the top ``keep`` principal components of the training
    images' patches, each divided by the square root of its variance, plus their negatives
    (so the ReLU after it keeps both signs). The first layer then starts out decorrelated and
    never needs training, which saves its backward pass. :meth:`fit` computes the filters from
    training images before training starts; they are saved with the other weights."""

    description = "frozen filters that decorrelate image patches (PCA whitening of the training images)"

    def __init__(self, kernel: int = 4, stride: int = 2, keep: int = 8, eps: float = 5e-4):
        super().__init__()
        if not 2 <= kernel <= 8:
            raise ValueError(f"the whitening kernel must be 2 to 8 pixels wide, not {kernel}")
        if not 1 <= keep <= kernel * kernel:
            raise ValueError(f"keep must be between 1 and {kernel * kernel} for a {kernel}x{kernel} patch, not {keep}")
        self.kernel, self.keep, self.eps = kernel, keep, eps
        self.conv = nn.Conv2d(1, 2 * keep, kernel, stride, padding=(kernel - stride) // 2, bias=False)
        self.conv.weight.requires_grad_(False)

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Set the filters from ``x``, a float batch (N, 1, H, W) as this layer sees it."""
        pad, k = self.conv.padding[0], self.kernel
        x = x.cpu()  # float64 statistics: on the CPU, which every device's weights can be copied from
        total = torch.zeros(k * k, dtype=torch.float64)
        products = torch.zeros(k * k, k * k, dtype=torch.float64)
        count = 0
        for chunk in x.split(1000):  # every patch (stride 1), a chunk at a time to bound memory
            chunk = nn.functional.pad(chunk.float(), (pad, pad, pad, pad))
            patches = chunk.unfold(2, k, 1).unfold(3, k, 1).reshape(-1, k * k)
            total += patches.sum(0, dtype=torch.float64)
            products += (patches.T @ patches).double()  # float32 GEMM: 6x faster than float64 here
            count += len(patches)
        mean = total / count
        cov = products / count - torch.outer(mean, mean)
        values, vectors = torch.linalg.eigh(cov)  # ascending
        values, vectors = values.flip(0)[: self.keep], vectors.flip(1)[:, : self.keep]
        filters = (vectors / torch.sqrt(values.clamp(min=0) + self.eps)).T.reshape(self.keep, 1, k, k)
        self.conv.weight.copy_(torch.cat([filters, -filters]).to(self.conv.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


WHITENING_IMAGES = 10_000


def fit_to_data(model: nn.Module, images: torch.Tensor) -> bool:
    """Fit the data-dependent layers of a new model (a :class:`PatchWhitening` stem) to the
    first :data:`WHITENING_IMAGES` training images (uint8 or float, N×1×28×28), feeding them
    through the layers before it. Returns whether there was anything to fit."""
    if not isinstance(model, nn.Sequential) or not any(isinstance(m, PatchWhitening) for m in model):
        return False
    x = images[:WHITENING_IMAGES].to(next(model.parameters()).device).float()
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, PatchWhitening):
                layer.fit(x)
                return True
            x = layer(x)
    return False  # pragma: no cover - the any() above found one


class ResidualStage(nn.Module):
    """Conv to the new width, max-pool to half the resolution, then ``blocks`` residual
    blocks (Conv-BN-ReLU-Conv-BN plus the identity). Pooling *before* the residual convs
    makes them run at a quarter of the cost, which is where the FLOPs go on a CPU."""

    description = "widens the features, halves the resolution, then refines them with residual blocks"

    def __init__(self, c_in: int, c_out: int, blocks: int = 1):
        super().__init__()
        self.entry = pool_first(c_in, c_out)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
            )
            for _ in range(blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.entry(x)
        for block in self.blocks:
            x = torch.relu(x + block(x))
        return x


class GlobalPool(nn.Module):
    """Max- and average-pools each feature map to one number each (so the head sees both
    'is the feature anywhere' and 'how much of it')."""

    description = "pools each feature map to its maximum and its mean"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.amax((2, 3)), x.mean((2, 3))], 1)
