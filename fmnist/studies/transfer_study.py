"""Does transfer learning help on this data? A measured answer.

A network is trained on the first five classes (T-shirt/top, Trouser, Pullover, Dress, Coat:
every training image of them). Its weights then start networks trained on the other five
(Sandal, Shirt, Sneaker, Bag, Ankle boot) with only 10, 100 or 1,000 labelled images per class,
against the same network trained from scratch on the same images, with the same recipe and the
same number of optimizer steps. Accuracy is measured on every test image of the five target
classes (5,000), choosing among those five classes. Each cell is mean ± sample std over seeds;
a seed changes which images are labelled and the new head's initial weights. The pretrained
network is trained once (seed 0).

Nothing is downloaded; the runs use the engine (`fmnist train`) on IDX files written for each
subset, so every run folder can be inspected afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmnist.core.errors import FmnistError
from fmnist.core.files import atomic_write_json, atomic_write_text
from fmnist.core.schema import DataSettings, accepts_settings, param
from fmnist.core.spec import CLASS_NAMES, FILES
from fmnist.data import load_split
from fmnist.data.idx import write_idx
from fmnist.runtime.inference import probabilities
from fmnist.runtime.modelfile import load_model
from fmnist.training.config import TrainConfig, parse_model_args
from fmnist.training.trainer import train

SOURCE = (0, 1, 2, 3, 4)
TARGET = (5, 6, 7, 8, 9)


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"10,100,1000"`` -> ``(10, 100, 1000)``."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise FmnistError(f"--sizes {text!r}: give whole numbers separated by commas, e.g. 10,100,1000") from None


@dataclasses.dataclass
class StudyPlan:
    """What the transfer study trains: the sizes it compares, and each network's recipe."""

    # at most 5,000 per class: the smallest class has 6,000 training images
    sizes: tuple[int, ...] = param(
        (10, 100, 1000), "Labelled images per target class, comma-separated.", parse=parse_sizes, min=1, max=5000
    )
    seeds: int = param(3, "Seeds per size; the table shows mean ± std.", min=1)
    model: str = param("cnn", "Architecture for both the pretrained and the scratch networks.")
    # None: the model's own defaults, but narrower for the cnn (16-32-64)
    model_args: dict[str, Any] | None = param(
        None,
        "KEY=VALUE (default widths=16,32,64 for cnn).",
        flags=("--model-arg",),
        multiple=True,
        metavar="KEY=VALUE",
        parse=parse_model_args,
    )
    pretrain_epochs: int = param(3, "Epochs on the five source classes.", min=1)
    steps: int = param(200, "Optimizer steps per fine-tuning run (the same for every size).", min=1)
    freeze: str = param("", "Parts of the pretrained network kept fixed (see `fmnist train --help`).")
    lr: float = param(1e-3, cli=False)

    def __post_init__(self) -> None:
        if self.model_args is None:
            self.model_args = {"widths": [16, 32, 64]} if self.model == "cnn" else {}


def _write_split(folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, arr in (
        ("train-images", train[0]),
        ("train-labels", train[1].astype(np.uint8)),
        ("t10k-images", test[0]),
        ("t10k-labels", test[1].astype(np.uint8)),
    ):
        write_idx(folder / FILES[key].name, arr)
    return folder


def _per_class(labels: np.ndarray, classes: tuple[int, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), n, replace=False) for c in classes])


def _target_accuracy(run_dir: Path, images: np.ndarray, labels: np.ndarray) -> float:
    model, _ = load_model(run_dir)
    probs = probabilities(model, torch.from_numpy(images).unsqueeze(1))
    chosen = np.asarray(TARGET)[probs[:, TARGET].argmax(1)]  # choose among the five target classes
    return float((chosen == labels).mean())


@accepts_settings(DataSettings)
def run_study(
    out: str | Path,
    plan: StudyPlan = StudyPlan(),
    data_dir: str | None = None,
    verify: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    out = Path(out)
    train_split, test_split = load_split("train", data_dir, verify), load_split("test", data_dir, verify)
    x, y = train_split.images, train_split.labels
    fewest = min(int((y == c).sum()) for c in TARGET)
    if max(plan.sizes) > fewest:
        raise FmnistError(
            f"--sizes: at most {fewest:,} labelled images per class exist here, {max(plan.sizes):,} asked"
        )
    src_test = np.isin(test_split.labels, SOURCE)
    tgt_test = np.isin(test_split.labels, TARGET)
    started = time.perf_counter()
    common = dict(model=plan.model, model_args=plan.model_args, verify=False, overwrite=True, lr=plan.lr)
    common |= dict(flip=True, translate=2, optimizer="adam", batch_size=64)

    src = np.isin(y, SOURCE)
    src_dir = _write_split(
        out / "data/source", (x[src], y[src]), (test_split.images[src_test], test_split.labels[src_test])
    )
    log(f"pretraining {plan.model} on {int(src.sum()):,} images of classes {', '.join(CLASS_NAMES[c] for c in SOURCE)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # --no-verify on our own subsets, said once here instead
        pre = train(
            TrainConfig(
                **common, epochs=plan.pretrain_epochs, val_size=1000, data_dir=str(src_dir), out=str(out / "pretrained")
            )
        )
    log(f"  pretrained: {pre.best['val_accuracy']:.2%} validation accuracy on the source classes")

    target_test = (test_split.images[tgt_test], test_split.labels[tgt_test])
    rows = _fine_tune(out, plan, common, x, y, target_test, pre.out_dir, log)

    table = summarise(rows, plan.sizes)
    result = {
        "plan": dataclasses.asdict(plan),
        "pretrain_val_accuracy": pre.best["val_accuracy"],
        "rows": rows,
        "table": table,
        "seconds": time.perf_counter() - started,
    }
    atomic_write_json(out / "transfer.json", result)
    atomic_write_text(out / "transfer.md", markdown(result))
    return result


def _fine_tune(
    out: Path, plan: StudyPlan, common: dict, x, y, target_test, pretrained: Path, log
) -> list[dict[str, Any]]:
    """Each labelled-set size and seed, fine-tuned from ``pretrained`` and trained from scratch."""
    rows: list[dict[str, Any]] = []
    for n in plan.sizes:
        for seed in range(plan.seeds):
            rng = np.random.default_rng(1000 + seed)
            pick = _per_class(y, TARGET, n, rng)
            d = _write_split(
                out / f"data/n{n}-s{seed}",
                (x[pick], y[pick]),
                target_test,
            )
            batch = min(64, len(pick))
            epochs = max(1, math.ceil(plan.steps * batch / len(pick)))
            for start in ("pretrained", "scratch"):
                cfg = TrainConfig(
                    **{**common, "batch_size": batch},
                    epochs=epochs,
                    val_size=0,
                    seed=seed,
                    data_dir=str(d),
                    out=str(out / f"runs/n{n}-s{seed}-{start}"),
                    init_from=str(pretrained) if start == "pretrained" else None,
                    reset_head=start == "pretrained",
                    freeze=plan.freeze if start == "pretrained" else "",
                    save_every=0,
                )
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    run = train(cfg)
                acc = _target_accuracy(run.out_dir, *target_test)
                rows.append(
                    {"per_class": n, "seed": seed, "start": start, "accuracy": acc, "seconds": time.perf_counter() - t0}
                )
                log(f"  {n:>5} per class, seed {seed}, {start:<10} {acc:.2%}  ({epochs} epochs of batch {batch})")
    return rows


def summarise(rows: list[dict[str, Any]], sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    out = []
    for n in sizes:
        cell: dict[str, Any] = {"per_class": n}
        for start in ("pretrained", "scratch"):
            accs = [r["accuracy"] for r in rows if r["per_class"] == n and r["start"] == start]
            cell[start] = (statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0)
        cell["gain"] = cell["pretrained"][0] - cell["scratch"][0]
        out.append(cell)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| labelled images per class | from scratch % | from the 5-class network % | gain (points) |",
        "|---:|---:|---:|---:|",
    ]
    for c in result["table"]:
        (pm, ps), (sm, ss) = c["pretrained"], c["scratch"]
        lines.append(
            f"| {c['per_class']:,} | {100 * sm:.2f} ± {100 * ss:.2f} | {100 * pm:.2f} ± {100 * ps:.2f} | {100 * c['gain']:+.2f} |"
        )
    return "\n".join(lines) + "\n\n```\n" + json.dumps(result["plan"]) + "\n```\n"
