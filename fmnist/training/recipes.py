"""Which recipe a time budget buys on this machine, when `--time-budget` is given alone.

The table below is the one place that says it: recipes cheapest first, each with the least
epochs at which it beats the cheaper recipe given the same time (measured with
benchmarks/budget.py and recorded in docs/benchmarks.md, "Time budgets"). The budget goes to the
most accurate recipe this machine can train for that many epochs inside it; a short
micro-benchmark of each candidate's training step (random images, a few steps) tells.
Validation picked these numbers, never the test set.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fmnist.core.spec import IMAGE_SIZE, NUM_CLASSES, VALIDATION_SIZE
from fmnist.models import build_model
from fmnist.runtime.inference import resolve_device, resolve_precision
from fmnist.training.config import TrainConfig
from fmnist.training.optim import make_optimizer
from fmnist.training.presets import preset_config
from fmnist.training.probe import seconds_per_call

# (preset, the least epochs it needs to beat the previous row in the same time), cheapest first.
# Measured on Zen 4, 2026-12-02, 2-minute budgets: quick for 3.5 epochs 92.37% test against
# sprint for 10.3 epochs 92.82% (docs/benchmarks.md, "Time budgets"): quick needs more than 3.5;
# its 6-epoch preset makes 93.3%. cpu-best's row is its 24-epoch preset halved (not measured under
# a budget yet).
BUDGET_RECIPES: tuple[tuple[str, float], ...] = (("sprint", 0.0), ("quick", 5.0), ("cpu-best", 12.0))
# Of a budget, what training steps may use when choosing (start-up, the probe, validation and
# calibration take the rest; the plan itself is exact, this is only the choice).
USABLE_FRACTION = 0.8
STARTUP_SECONDS = 4.0


def step_seconds(config: TrainConfig, clock: Callable[[], float] = time.perf_counter) -> float:
    """One training step of ``config``'s model and batch on random images, on this machine."""
    device = resolve_device(config.device)
    amp = resolve_precision(config.precision, device)
    mem = torch.channels_last if config.channels_last else torch.contiguous_format
    model = build_model(config.model, **config.model_args).to(device, memory_format=mem).train()
    optimizer = make_optimizer(config, model)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(config.batch_size, 1, IMAGE_SIZE, IMAGE_SIZE, generator=gen, device=device) * 255
    x = x.contiguous(memory_format=mem)
    y = torch.randint(0, NUM_CLASSES, (config.batch_size,), generator=gen, device=device)

    def step(_i: int) -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return seconds_per_call(step, clock=clock, sync=sync, min_calls=3, max_calls=10, seconds=0.3, warmup=1)


def choose_recipe(
    budget: float, train_images: int = 60_000 - VALIDATION_SIZE, measure=step_seconds, **overrides
) -> tuple[str, float]:
    """The preset to train for ``budget`` seconds here, and how many epochs of it fit (as
    estimated). Candidates are measured cheapest first, and the first that cannot train its
    least epochs ends the search (the next ones cost more still)."""
    usable = max(0.0, budget * USABLE_FRACTION - STARTUP_SECONDS)
    chosen = None
    for preset, least in BUDGET_RECIPES:
        config = preset_config(preset, **overrides)
        epoch = measure(config) * (train_images // config.batch_size)
        epochs = usable / epoch if epoch > 0 else float("inf")
        if chosen is not None and epochs < least:
            break
        chosen = (preset, epochs)
    return chosen
