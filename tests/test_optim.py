"""Optimiser, schedules and the weight average."""

import pytest
import torch

from fmnist.models import build_model
from fmnist.training.config import TrainConfig
from fmnist.training.optim import EMA, lr_factor, param_groups


def test_onecycle_and_cosine_schedules():
    cfg = TrainConfig(schedule="onecycle")
    f = [lr_factor(cfg, s, 100, 10) for s in range(100)]
    assert max(f) == pytest.approx(1.0) and f[0] < 0.1 and f[-1] < 0.05 and f.index(max(f)) == 24
    cos = TrainConfig(schedule="cosine", warmup_epochs=1)
    g = [lr_factor(cos, s, 100, 10) for s in range(100)]
    assert g[0] == pytest.approx(0.1) and g[9] == pytest.approx(1.0) and g[-1] < 0.01
    assert all(a >= b for a, b in zip(g[10:], g[11:]))
    assert [lr_factor(TrainConfig(), s, 100, 10) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]


def test_weight_decay_skips_norms_and_biases():
    m = build_model("cnn")
    decay, no_decay = param_groups(m, 5e-4, decay_all=False)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))
    (everything,) = param_groups(m, 5e-4, decay_all=True)
    assert len(everything["params"]) == len(list(m.parameters()))


def test_ema_decay_ramps_up_then_holds():
    ema = EMA(build_model("mlp"), 0.99)
    seen = []
    for _ in range(1000):
        seen.append(ema.current_decay())
        ema.update()
    # (1 + n) / (10 + n) for the n-th update, capped at the configured decay.
    assert seen[:3] == [pytest.approx(2 / 11), pytest.approx(3 / 12), pytest.approx(4 / 13)]
    assert seen[-1] == 0.99 and all(a <= b for a, b in zip(seen, seen[1:]))
    # (1 + n) / (10 + n) >= 0.99 from the 890th update on
    assert seen.index(0.99) == 889 and seen[888] < 0.99


def test_ema_moves_towards_the_weights_by_the_current_decay():
    m = build_model("mlp")
    ema = EMA(m, 0.9)
    before = next(ema.model.parameters()).clone()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    d = ema.current_decay()
    ema.update()
    after = next(ema.model.parameters())
    torch.testing.assert_close(after, d * before + (1 - d) * next(m.parameters()))
    assert not torch.equal(after, next(m.parameters()))
