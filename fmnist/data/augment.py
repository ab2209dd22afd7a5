"""Batch-level augmentations on tensors, on the training device.

Each function takes a float batch ``x`` of shape (N, C, H, W) and a ``torch.Generator``
on the same device, and returns a new batch; labels are never reordered, so they stay
aligned. No per-image Python loops: every image gets its own random parameters through
broadcasting and a single gather.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _rand(n: int, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device)


def flip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p`` (garments are roughly symmetric)."""
    mask = _rand(x.shape[0], gen, x.device) < p
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def translate(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Shift each image by up to ``pad`` pixels in each direction, filling with zeros
    (the same as a random crop of a zero-padded image)."""
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    dev = x.device
    shifts = torch.randint(0, 2 * pad + 1, (2, n), generator=gen, device=dev)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (torch.arange(h, device=dev)[None, :] + shifts[0][:, None])[:, None, :, None]  # n,1,h,1
    cols = (torch.arange(w, device=dev)[None, :] + shifts[1][:, None])[:, None, None, :]  # n,1,1,w
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def erase(
    x: torch.Tensor,
    gen: torch.Generator,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.25),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float = 0.0,
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017): with probability ``p``, blank one rectangle of
    ``scale`` of the image's area and aspect ``ratio`` per image, filled with ``value``."""
    n, _, h, w = x.shape
    dev = x.device
    area = (scale[0] + (scale[1] - scale[0]) * _rand(n, gen, dev)) * (h * w)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * _rand(n, gen, dev)
    r = torch.exp(log_r)
    eh = torch.sqrt(area * r).round().clamp(1, h)
    ew = torch.sqrt(area / r).round().clamp(1, w)
    y0 = ((h - eh + 1) * _rand(n, gen, dev)).floor()
    x0 = ((w - ew + 1) * _rand(n, gen, dev)).floor()
    apply = _rand(n, gen, dev) < p
    rows = torch.arange(h, device=dev)[None, :]
    cols = torch.arange(w, device=dev)[None, :]
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + eh)[:, None])  # n,h
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + ew)[:, None])  # n,w
    mask = in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]
    return x.masked_fill(mask[:, None], value)


def mix(
    x: torch.Tensor,
    y: torch.Tensor,
    rng: np.random.Generator,
    gen: torch.Generator,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """MixUp or CutMix (one of the enabled ones, chosen per batch) with a permuted copy of the
    batch. Returns ``(x_mixed, y, y_partner, lam)``; the loss is
    ``lam * ce(out, y) + (1 - lam) * ce(out, y_partner)``."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return x, y, y, 1.0
    n, _, h, w = x.shape
    perm = torch.randperm(n, generator=gen, device=x.device)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < 0.5)
    if not use_cutmix:
        lam = float(rng.beta(mixup_alpha, mixup_alpha))
        return x * lam + x[perm] * (1 - lam), y, y[perm], lam
    lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
    ch, cw = int(round(h * math.sqrt(1 - lam))), int(round(w * math.sqrt(1 - lam)))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - ch // 2, 0), min(cy + (ch + 1) // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + (cw + 1) // 2, w)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the exact pasted area
    return out, y, y[perm], lam
