"""Optimiser, learning-rate schedule and weight averaging: the pieces of a training recipe
that are plain functions of the configuration."""

from __future__ import annotations

import copy
import math

import torch

from fmnist.training.budget import Plan
from fmnist.training.config import TrainConfig
from fmnist.training.transfer import head_name


def param_groups(model: torch.nn.Module, weight_decay: float, decay_all: bool, head_lr: float = 0.0) -> list[dict]:
    """Weight decay on conv/dense weights only: decaying norms and biases only shrinks the
    model's ability to scale features and costs accuracy. Frozen parameters (no gradient) are
    left out; with ``head_lr`` the head (the last dense layer) gets its own learning rate."""
    head = head_name(model) if head_lr > 0 else None
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        in_head = head is not None and (name == head or name.startswith(head + "."))
        decays = decay_all or weight_decay == 0 or p.ndim > 1
        groups.setdefault((in_head, decays), []).append(p)
    out = []
    for (in_head, decays), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        group = {"params": params, "weight_decay": weight_decay if decays else 0.0}
        if in_head:
            group["lr"] = head_lr
        out.append(group)
    return out


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, config.weight_decay, config.decay_norm_and_bias, config.head_lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    # Keras-style Adam: L2 penalty added to the gradient.
    return torch.optim.Adam(groups, lr=config.lr)


def lr_factor(config: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at ``step`` of ``total``: linear warm-up, then the schedule."""
    warm = int(config.warmup_epochs * steps_per_epoch)
    if config.schedule == "onecycle":
        # Triangle: up over the warm-up (default 25% of training), then linearly down to 0.
        warm = warm or max(1, int(0.25 * total))
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))
    if step < warm:
        return (step + 1) / warm
    if config.schedule == "cosine":
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return 1.0


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, plan: Plan):
    """The schedule follows ``plan``: over its steps, and, where the plan was shortened on the
    way, over the fraction of it done (``plan.virtual_step``), so it still ends on the last step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(config, plan.virtual_step(s), plan.steps, plan.steps_per_epoch)
    )


class EMA:
    """Exponential moving average of the weights (buffers such as BN statistics copied).
    The decay ramps up as ``(1 + n) / (10 + n)`` after ``n`` updates, capped at ``decay``, so
    early, random weights are forgotten quickly."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.updates = 0
        self._src = list(model.parameters())
        self._dst = list(self.model.parameters())
        self._src_buf = list(model.buffers())
        self._dst_buf = list(self.model.buffers())

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = self.updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        self.updates += 1
        torch._foreach_lerp_(self._dst, self._src, 1.0 - d)
        for dst, src in zip(self._dst_buf, self._src_buf):
            dst.copy_(src)
