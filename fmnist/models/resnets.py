"""Residual networks: the CPU default, wide ResNets for GPUs, and ResNet-18 in torchvision's
layout for pretrained weights."""

from __future__ import annotations

import torch
from torch import nn

from fmnist.core.spec import MEAN, NUM_CLASSES, STD
from fmnist.models.layers import GlobalPool, Normalize, ResidualStage, conv_bn_relu
from fmnist.models.registry import register


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
        *conv_bn_relu(1, stem),
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
