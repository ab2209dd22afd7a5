"""Registry of architectures, each taking 1×28×28 pixel values in [0, 255].

Every model starts with :class:`Normalize`, so a model file carries its own input
normalization and callers never have to remember the training set's mean and std.
Models return logits; softmax is applied at prediction time (and folded into the
cross-entropy loss during training, which is numerically safer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .errors import FmnistError
from .spec import IMAGE_SIZE, MEAN, NUM_CLASSES, STD

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


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    # No conv bias: the following batch norm's shift makes it redundant.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


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


def _pool_first(c_in: int, c_out: int) -> nn.Sequential:
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


@register("fast", "the sprint network: pool-first conv layers and a global pool, optionally a whitening stem")
def fast(
    widths: tuple[int, ...] | list[int] = (16, 32, 64),
    stem: str = "conv",
    stem_kernel: int = 4,
    stem_keep: int = 8,
    mean: float = MEAN,
    std: float = STD,
) -> nn.Module:
    """One pool-first layer (:func:`_pool_first`) per width (28 -> 14 -> 7 -> 3), max- and
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
        layers.append(_pool_first(c_in, width))
        c_in = width
    layers += [GlobalPool(), nn.Linear(2 * c_in, NUM_CLASSES)]
    return nn.Sequential(*layers)


class ResidualStage(nn.Module):
    """Conv to the new width, max-pool to half the resolution, then ``blocks`` residual
    blocks (Conv-BN-ReLU-Conv-BN plus the identity). Pooling *before* the residual convs
    makes them run at a quarter of the cost, which is where the FLOPs go on a CPU."""

    description = "widens the features, halves the resolution, then refines them with residual blocks"

    def __init__(self, c_in: int, c_out: int, blocks: int = 1):
        super().__init__()
        self.entry = _pool_first(c_in, c_out)
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


@register("resnet", "small residual network for 28×28: stem + 3 pool-first residual stages (the CPU default)")
def resnet(
    widths: tuple[int, int, int] | list[int] = (32, 64, 128),
    stem: int = 16,
    blocks: tuple[int, int, int] | list[int] = (1, 1, 1),
    dropout: float = 0.0,
    mean: float = MEAN,
    std: float = STD,
) -> nn.Module:
    a, b, c = widths
    return nn.Sequential(
        Normalize(mean, std),
        *_conv_bn_relu(1, stem),
        ResidualStage(stem, a, blocks[0]),  # 28 -> 14
        ResidualStage(a, b, blocks[1]),  # 14 -> 7
        ResidualStage(b, c, blocks[2]),  # 7 -> 3
        GlobalPool(),
        nn.Dropout(dropout),
        nn.Linear(2 * c, NUM_CLASSES),
    )


class WideBlock(nn.Module):
    """Pre-activation wide residual block (Zagoruyko & Komodakis 2016)."""

    description = "pre-activation wide residual block: BN-ReLU-Conv ×2 plus a shortcut"

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None if c_in == c_out and stride == 1 else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(self.drop(torch.relu(self.bn2(o))))
        return o + skip


class WideResNet(nn.Module):
    def __init__(self, depth: int, width: int, dropout: float, mean: float, std: float):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError("wrn depth must be 6n+4 (10, 16, 22, 28, ...)")
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.normalize = Normalize(mean, std)
        self.stem = nn.Conv2d(1, widths[0], 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        for g in range(3):
            for i in range(n):
                c_in = widths[g] if i == 0 else widths[g + 1]
                layers.append(WideBlock(c_in, widths[g + 1], 2 if (g > 0 and i == 0) else 1, dropout))
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[3], NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(self.normalize(x)))
        return self.fc(self.flatten(self.pool(self.relu(self.bn(x)))))


@register("wrn", "wide residual network WRN-depth-width (default WRN-16-4); for GPUs")
def wrn(depth: int = 16, width: int = 4, dropout: float = 0.0, mean: float = MEAN, std: float = STD) -> nn.Module:
    return WideResNet(depth, width, dropout, mean, std)


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block, with its parameter names (conv1, bn1, conv2, bn2, downsample)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """ResNet-18 with torchvision's key layout, so published ImageNet weights load into it
    (``fmnist train --model resnet18 --init-from resnet18.safetensors``). For 28×28 images the
    7×7 stem keeps its weights but ``stem_stride`` and ``maxpool`` decide how fast the image
    shrinks: the default (stride 2, no max-pool) gives 14×14 maps in the first stage."""

    def __init__(self, stem_stride: int, maxpool: bool, mean: float, std: float):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(1, 64, 7, stem_stride, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if maxpool else nn.Identity()
        widths = (64, 128, 256, 512)
        c_in = 64
        for i, w in enumerate(widths, 1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(c_in, w, stride), BasicBlock(w, w, 1)))
            c_in = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


@register("resnet18", "ResNet-18 in torchvision's layout, for ImageNet-pretrained weights (--init-from)")
def resnet18(stem_stride: int = 2, maxpool: bool = False, mean: float = MEAN, std: float = STD) -> nn.Module:
    return ResNet18(stem_stride, maxpool, mean, std)


# --- summary ---------------------------------------------------------------------------

DESCRIPTIONS: dict[type, str] = {
    nn.Conv2d: "detects local features such as edges and textures (learned 3×3 filters)",
    nn.ReLU: "keeps positive responses, zeroes the rest (non-linearity)",
    nn.MaxPool2d: "halves the resolution, keeps the strongest response in each 2×2 window",
    nn.AvgPool2d: "averages each window: smaller map, smoother response",
    nn.AdaptiveAvgPool2d: "averages each feature map to one number (global pooling)",
    nn.Flatten: "unrolls the feature maps into one vector for the dense layers",
    nn.Linear: "combines all features; each output is a weighted sum of every input",
    nn.BatchNorm2d: "re-centres and re-scales each channel: stable, faster training",
    nn.BatchNorm1d: "re-centres and re-scales each feature: stable, faster training",
    nn.Dropout: "randomly zeroes features while training so the model can't rely on any one",
    nn.Dropout2d: "randomly zeroes whole channels while training (regularization)",
    nn.Identity: "passes its input through unchanged",
}


@dataclass
class LayerRow:
    name: str
    kind: str
    description: str
    output_shape: tuple[int, ...]
    params: int
    flops: int  # floating-point operations per image (a multiply-add counts as 2)


def _units(module: nn.Module, prefix: str = ""):
    """The rows of the summary: leaves, or composite modules that describe themselves."""
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if hasattr(child, "description") or not any(True for _ in child.children()):
            yield full, child
        else:
            yield from _units(child, full + ".")


def _flops_hook(counter: list[int]):
    def hook(mod, inputs, output):
        if isinstance(mod, nn.Conv2d):
            per_out = 2 * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
            counter[0] += per_out * output[0].numel()
        elif isinstance(mod, nn.Linear):
            counter[0] += 2 * mod.in_features * mod.out_features

    return hook


def summarize(model: nn.Module) -> list[LayerRow]:
    """One row per layer, from a forward pass of one blank image."""
    rows: list[LayerRow] = []
    handles = []
    counters: dict[str, list[int]] = {}
    units = list(_units(model))
    shapes: dict[str, tuple[int, ...]] = {}
    for name, unit in units:
        counters[name] = [0]
        for sub in unit.modules():
            if isinstance(sub, (nn.Conv2d, nn.Linear)):
                handles.append(sub.register_forward_hook(_flops_hook(counters[name])))
        handles.append(
            unit.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    for name, unit in units:
        if name not in shapes:
            continue  # defined but unused in forward
        desc = getattr(unit, "description", None) or DESCRIPTIONS.get(type(unit), "")
        rows.append(
            LayerRow(
                name,
                type(unit).__name__,
                desc,
                shapes[name],
                sum(p.numel() for p in unit.parameters()),
                counters[name][0],
            )
        )
    return rows


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: nn.Module) -> int:
    """Forward-pass FLOPs for one image (multiply-adds of convolutions and dense layers × 2)."""
    return sum(r.flops for r in summarize(model))


KERAS_NAMES = {
    "Normalize": "Input",
    "Conv2d": "Conv2D",
    "MaxPool2d": "MaxPooling2D",
    "Linear": "Dense",
    "BatchNorm2d": "BatchNormalization",
    "AdaptiveAvgPool2d": "GlobalAveragePooling2D",
}


def summary_table(name: str, model: nn.Module | None = None):
    """A Rich table in the spirit of Keras' ``model.summary()``, plus FLOPs per image."""
    from rich.table import Table

    model = model if model is not None else build_model(name)
    rows = summarize(model)
    table = Table(title=f"model '{name}': {_ABOUT.get(name, '')}", title_justify="left")
    for col, kw in (
        ("Layer", {}),
        ("What it does", {"overflow": "fold"}),
        ("Output shape", {}),
        ("Params", {"justify": "right"}),
        ("FLOPs", {"justify": "right"}),
    ):
        table.add_column(col, **kw)
    table.add_row("Input", "a 28×28 grayscale image, pixel values 0–255", "(1, 28, 28)", "0", "0")
    for r in rows:
        kind = KERAS_NAMES.get(r.kind, r.kind)
        if r.kind == "Normalize":
            kind = "Normalize"
        table.add_row(f"{kind}", r.description, str(r.output_shape), f"{r.params:,}", _fmt_flops(r.flops))
    table.add_row(
        "Softmax", "turns the 10 scores into probabilities that sum to 1 (the output)", f"({NUM_CLASSES},)", "0", "-"
    )
    total_p = sum(r.params for r in rows)
    total_f = sum(r.flops for r in rows)
    table.add_section()
    table.add_row("Total", f"{total_p:,} trainable parameters", "", f"{total_p:,}", _fmt_flops(total_f))
    return table


def _fmt_flops(f: int) -> str:
    if f >= 1e9:
        return f"{f / 1e9:.2f} G"
    if f >= 1e6:
        return f"{f / 1e6:.2f} M"
    if f >= 1e3:
        return f"{f / 1e3:.1f} k"
    return str(f)
