"""The measured answer to "what could be done to improve the model's accuracy?".

Starting from the original notebook (seed CNN, Adam, batch 32), each step adds one
improvement on top of all earlier ones and trains over several seeds. The table says what
each step is worth in test accuracy, what it costs in time, and its FLOPs per image.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from fmnist.core.errors import FmnistError
from fmnist.core.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from fmnist.core.machine import describe
from fmnist.core.schema import accepts_settings, data_dir_param, param, verify_param
from fmnist.reporting.evaluate import evaluate
from fmnist.reporting.plots import subplots, to_png
from fmnist.training.config import TrainConfig
from fmnist.training.trainer import train


def parse_steps(text: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``."""
    chosen: list[int] = []
    try:
        for part in text.split(","):
            a, _, b = part.partition("-")
            chosen += list(range(int(a), int(b) + 1)) if b else [int(a)]
    except ValueError:
        raise FmnistError(f"--only {text!r}: use numbers, ranges and commas, e.g. 0-3,7") from None
    return chosen


@dataclass(frozen=True)
class AblateSettings:
    """How much each step of `fmnist ablate` trains, and which steps."""

    # --budget and --steps until 2026-12: the budget counts epochs, and transfer-study's
    # --steps counts optimizer steps.
    epochs: int = param(
        3, "Epochs per training run (more: slower, closer to converged).", min=1, formerly=("--budget",)
    )
    seeds: int = param(3, "Seeds per step; the table shows mean ± std.", min=1)
    out: str = param("runs/ablation", "Folder for the runs, table and chart.", path=True)
    only: list[int] | None = param(
        None, "Only these steps, e.g. 0-3 or 7,8 (default: all).", parse=parse_steps, formerly=("--steps",)
    )
    data_dir: str | None = data_dir_param()
    verify: bool = verify_param()


@dataclass
class Step:
    name: str  # short label for the chart
    change: str  # what this step adds, for the table
    config: dict[str, Any]  # TrainConfig values, cumulative
    eval_only: dict[str, Any] = field(default_factory=dict)  # re-evaluate the previous models instead


def _steps() -> list[Step]:
    seed_cnn = {"widths": [32, 64], "convs": 1, "batchnorm": False, "dropout": 0.0, "padding": 0, "hidden": 128}
    steps: list[Step] = []
    cfg: dict[str, Any] = {"model": "seed", "model_args": {"normalize": "none"}}

    def add(name: str, change: str, **delta: Any) -> None:
        cfg.update(delta)
        steps.append(Step(name, change, {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items()}))

    add("raw pixels", "seed CNN, Adam 1e-3, batch 32, raw 0–255 pixels (no normalization)")
    add("/255", "pixels scaled to [0, 1]: the original notebook", model_args={"normalize": "scale"})
    add("standardize", "pixels standardized with the training mean/std", model_args={"normalize": "standardize"})
    add(
        "one-cycle SGD",
        "SGD + Nesterov, one-cycle schedule (peak 0.1), batch 256, weight decay 5e-4 (not on norms/biases)",
        optimizer="sgd",
        schedule="onecycle",
        lr=0.1,
        batch_size=256,
        weight_decay=5e-4,
    )
    add(
        "batch norm",
        "batch normalization after each convolution",
        model="cnn",
        model_args={**seed_cnn, "batchnorm": True},
    )
    add("dropout", "dropout 0.2 before the dense layers", model_args={**seed_cnn, "batchnorm": True, "dropout": 0.2})
    add(
        "wider+deeper",
        "padding keeps the resolution; 2 convs per stage, 3 stages of 32/64/128 filters",
        model_args={"widths": [32, 64, 128], "convs": 2, "batchnorm": True, "dropout": 0.2, "padding": 1, "hidden": 0},
    )
    add(
        "residual",
        "residual connections: the small ResNet (pool-first stages 32/64/128)",
        model="resnet",
        model_args={"widths": [32, 64, 128], "stem": 16},
    )
    add("flip", "random horizontal flips", flip=True)
    add("translate", "random shifts of up to 2 pixels", translate=2)
    add("erasing", "random erasing (p = 0.25)", erase=0.25)
    add("label smoothing", "label smoothing 0.1", label_smoothing=0.1)
    add("EMA", "exponential moving average of the weights (decay 0.99) for validation and saving", ema=0.99)
    steps.append(
        Step("flip TTA", "flip test-time augmentation (same models, mirror logits averaged)", dict(cfg), {"tta": True})
    )
    return steps


STEPS = _steps()


@accepts_settings(AblateSettings, epochs="budget", only="steps")
def ablate(
    budget: int = 3,
    seeds: int = 3,
    out: str | os.PathLike = "runs/ablation",
    data_dir: str | None = None,
    steps: list[int] | None = None,
    log=print,
    verify: bool = True,
) -> list[dict[str, Any]]:
    """Train every step (or the ``steps`` given by index) for ``budget`` epochs over
    ``seeds`` seeds; write ``ablation.md``, ``ablation.json`` and ``ablation.png`` to ``out``."""
    if budget <= 0 or seeds <= 0:
        raise FmnistError("--epochs and --seeds must be positive")
    out = Path(out)
    chosen = range(len(STEPS)) if steps is None else steps
    for i in chosen:
        if not 0 <= i < len(STEPS):
            raise FmnistError(f"--only: no step {i}; there are {len(STEPS)} (0..{len(STEPS) - 1})")
    rows: list[dict[str, Any]] = []
    previous: list[Path] = []
    for i in chosen:
        step = STEPS[i]
        tests, vals, times, flops, runs = [], [], [], 0, []
        for s in range(seeds):
            run_dir = out / f"step{i:02d}-seed{s}"
            if step.eval_only:
                if not previous:
                    raise FmnistError(f"step {i} ({step.name}) re-evaluates step {i - 1}; run them together")
                run_dir = previous[s]
                t = 0.0
            else:
                cfg = TrainConfig(
                    **step.config, epochs=budget, seed=s, out=str(run_dir), overwrite=True, data_dir=data_dir
                )
                cfg.verify = verify
                t0 = time.perf_counter()
                run = train(cfg)
                t = time.perf_counter() - t0
                vals.append(run.best["val_accuracy"])
                flops = run.info.flops_per_image
            result = evaluate(run_dir, data_dir, tta=step.eval_only.get("tta"), write=False, verify=verify)
            tests.append(result.accuracy)
            times.append(t)
            runs.append(run_dir)
            if step.eval_only:
                flops = result.info.flops_per_image * 2
        row = _row(i, step, tests, vals, times, flops, rows[-1] if rows else None)
        rows.append(row)
        previous = runs
        log(
            f"step {i:2d} {step.name:<16} test {row['test_mean'] * 100:.2f} ± {row['test_std'] * 100:.2f}%  "
            f"val {row['val_mean'] * 100:.2f}%  {row['train_seconds']:.0f}s/run  {flops / 1e6:.1f} MFLOPs"
        )
    write_results(rows, out, budget, seeds)
    return rows


def _row(i: int, step: Step, tests, vals, times, flops, before: dict[str, Any] | None) -> dict[str, Any]:
    """A step's line of the table: its mean ± std over the seeds (an evaluation-only step shows
    the validation accuracy of the step ``before`` it, whose models it re-evaluates)."""
    return {
        "step": i,
        "name": step.name,
        "change": step.change,
        "test_mean": statistics.mean(tests),
        "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
        "tests": tests,
        "val_mean": statistics.mean(vals) if vals else before["val_mean"] if before else float("nan"),
        "train_seconds": statistics.mean(times) if not step.eval_only else 0.0,
        "flops_per_image": flops,
    }


def markdown_table(rows: list[dict[str, Any]], budget: int, seeds: int) -> str:
    lines = [
        f"Each step adds one change to all the steps above it; {budget} epochs per run, {seeds} seeds "
        f"(0..{seeds - 1}); test accuracy on the 10,000 test images, mean ± sample std over seeds.",
        f"Measured {date.today().isoformat()} on {describe()}.",
        "",
        "| step | change | test accuracy | Δ vs previous | val accuracy | train time / run | FLOPs / image |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    prev = None
    for r in rows:
        delta = "" if prev is None else f"{(r['test_mean'] - prev) * 100:+.2f}"
        time_s = "(no training)" if r["train_seconds"] == 0 else f"{r['train_seconds']:.0f} s"
        lines.append(
            f"| {r['step']} | {r['change']} | {r['test_mean'] * 100:.2f} ± {r['test_std'] * 100:.2f}% | {delta} | "
            f"{r['val_mean'] * 100:.2f}% | {time_s} | {r['flops_per_image'] / 1e6:.1f} M |"
        )
        prev = r["test_mean"]
    return "\n".join(lines) + "\n"


def chart_png(rows: list[dict[str, Any]]) -> bytes:
    fig, ax = subplots(figsize=(9, 4.8), dpi=110)
    names = [r["name"] for r in rows]
    means = [r["test_mean"] * 100 for r in rows]
    stds = [r["test_std"] * 100 for r in rows]
    ax.bar(range(len(rows)), means, yerr=stds, capsize=3, color="#4C72B0")
    for x, m in enumerate(means):
        ax.text(x, m + 0.05, f"{m:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rows)), names, rotation=40, ha="right")
    lo = min(means) - 1.0
    ax.set_ylim(lo, max(means) + 0.6)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Ablation: each bar adds one improvement to all bars on its left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return to_png(fig)


def write_results(rows: list[dict[str, Any]], out: Path, budget: int, seeds: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "ablation.json", {"budget": budget, "seeds": seeds, "rows": rows})
    atomic_write_text(out / "ablation.md", markdown_table(rows, budget, seeds))
    atomic_write_bytes(out / "ablation.png", chart_png(rows))
