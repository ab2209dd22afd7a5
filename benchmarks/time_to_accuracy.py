"""Time to accuracy on this machine: the original Keras notebook (the baseline, in its own
virtual environment) and fmnist's recipes, trained one after the other in one sitting.

Prints, per recipe, seconds of training (validation included, as the notebook's own epochs
include it) until the validation accuracy first reaches 90.3% (the Keras notebook's level),
91%, 93% and 94%, the final test accuracy (read once, at the end), the achieved GFLOP/s
during training as a fraction of the peak *measured in the same run* for the precision the
recipe trained in (fp32 or bf16; the better of a GEMM and a convolution, fmnist/machine.py),
and the speed-up over the Keras notebook to 90.3%. Never run as a test:

    make keras-venv    # once: .venv-keras with tensorflow-cpu (skip it with --no-keras)
    .venv/bin/python benchmarks/time_to_accuracy.py [--presets sprint notebook quick] [--seeds 0 1 2]

Both sides train on the same 55,000 images and validate on the same 5,000 (fmnist's split,
written to an .npz for the Keras side). Every recipe runs with every seed (mean ± sample std);
the Keras notebook with the first. --json FILE keeps every run's numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from fmnist.core.machine import peaks  # noqa: E402
from fmnist.data import load_split, validation_split  # noqa: E402
from fmnist.reporting.evaluate import evaluate  # noqa: E402
from fmnist.training.presets import preset_config  # noqa: E402
from fmnist.training.trainer import train  # noqa: E402

THRESHOLDS = (0.903, 0.91, 0.93, 0.94)
# Keras reports accuracy as float32: 4,515 of 5,000 comes back as 0.90299999..., which must
# still count as 90.3% (one image in 5,000 is 2e-4, far above this tolerance).
TOLERANCE = 1e-6


def first_reach(history: list[tuple[float, float]], threshold: float) -> float | None:
    """Seconds at the end of the first epoch whose validation accuracy reached ``threshold``,
    from a run's stored (seconds, validation accuracy) pairs."""
    return next((t for t, acc in history if acc >= threshold - TOLERANCE), None)


ROOT = Path(__file__).resolve().parent.parent
KERAS_PYTHON = ROOT / ".venv-keras" / "bin" / "python"


def measure(preset: str, seed: int, out: Path) -> dict:
    config = preset_config(preset, seed=seed, out=str(out / preset), overwrite=True)
    t0 = time.perf_counter()
    run = train(config)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    test = evaluate(run.out_dir, write=False)
    eval_s = time.perf_counter() - t1
    train_s = sum(h["train_seconds"] for h in run.history)
    images = run.info.train_images // config.batch_size * config.batch_size * len(run.history)
    # Training costs about 3× the forward pass (forward, gradient w.r.t. inputs and weights).
    gflops = 3 * run.info.flops_per_image * images / train_s / 1e9
    return {
        "preset": preset,
        "model": config.model,
        "epochs": len(run.history),
        "train_s": train_s,
        "wall_s": wall,
        "eval_s": eval_s,
        "val": run.best["val_accuracy"],
        "test": test.accuracy,
        "gflops": gflops,
        "precision": run.info.precision,
        "history": [(h["elapsed"], h["val_accuracy"]) for h in run.history],
    }


def write_split(path: Path) -> Path:
    """fmnist's 55,000 / 5,000 / 10,000 split as the .npz the Keras notebook reads, so both
    sides train, select and test on the same images."""
    train, test = load_split("train"), load_split("test")
    tr, va = validation_split(train.labels)
    np.savez(
        path,
        x_train=train.images[tr],
        y_train=train.labels[tr],
        x_val=train.images[va],
        y_val=train.labels[va],
        x_test=test.images,
        y_test=test.labels,
    )
    return path


def measure_keras(out: Path, seed: int) -> dict:
    """The Keras notebook on fmnist's split, in .venv-keras (benchmarks/keras_notebook.py)."""
    data = write_split(out / "split.npz")
    t0 = time.perf_counter()
    done = subprocess.run(
        [str(KERAS_PYTHON), str(ROOT / "benchmarks" / "keras_notebook.py"), str(data), "--seed", str(seed)],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t0
    r = json.loads(done.stdout.strip().splitlines()[-1])
    history = r["history"]
    train_s = sum(h["train_seconds"] for h in history)
    return {
        "preset": "keras notebook",
        "model": f"notebook CNN ({r['framework']})",
        "epochs": len(history),
        "train_s": train_s,
        "wall_s": history[-1]["elapsed"],
        "process_s": wall,
        "eval_s": r["eval_seconds"],
        "val": max(h["val_accuracy"] for h in history),
        "test": r["test_accuracy"],
        # Forward multiply-adds × 2 of the 225,034-parameter network: convolutions and dense layers.
        "gflops": 3 * KERAS_FLOPS * len(np.load(data)["y_train"]) * len(history) / train_s / 1e9,
        "precision": "fp32 (TensorFlow)",
        "history": [(h["elapsed"], h["val_accuracy"]) for h in history],
    }


# 2 × multiply-adds per image of the notebook network: conv 26²·32·9, conv 11²·64·32·9,
# dense 1600·128 and 128·10.
KERAS_FLOPS = 2 * (26 * 26 * 32 * 9 + 11 * 11 * 64 * 32 * 9 + 1600 * 128 + 128 * 10)


def table(runs: dict[str, list[dict]], p: dict) -> None:
    """Print the markdown table. Times to each accuracy come from each run's stored history
    (seconds, validation accuracy), so a table can be re-rendered from a --json file."""

    def ms(values, scale=1.0, digits=0):
        values = [v * scale for v in values if v is not None]
        if not values:
            return "—"
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    def peak_for(precision: str) -> float:
        # a bf16 run is measured against the bf16 peak: dividing by fp32's would overstate it
        return p["bf16_gflops"] if precision.startswith("bf") else p["fp32_gflops"]

    base = runs.get("keras notebook", [None])[0]
    base_t = first_reach(base["history"], 0.903) if base else None
    print(
        "| recipe | model | epochs | seeds | s to 90.3% val | s to 91% | s to 93% | s to 94% | train + eval s "
        "| test accuracy % | GFLOP/s | % of measured peak (its precision) | speed-up to 90.3% vs Keras |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, rs in runs.items():
        hits = [t for t in (first_reach(r["history"], 0.903) for r in rs) if t]
        speed = f"{base_t / statistics.mean(hits):.1f}×" if hits and base_t else "—"
        print(
            f"| {name} | {rs[0]['model']} | {rs[0]['epochs']} | {len(rs)} | "
            + " | ".join(ms([first_reach(r["history"], th) for r in rs], digits=1) for th in THRESHOLDS)
            + f" | {ms([r['wall_s'] + r['eval_s'] for r in rs])} | {ms([r['test'] for r in rs], 100, 2)} | "
            f"{ms([r['gflops'] for r in rs])} | {ms([r['gflops'] / peak_for(r['precision']) for r in rs], 100)} | {speed} |"
        )
    print(
        f"\nprecision: {', '.join(sorted({r['precision'] for rs in runs.values() for r in rs}))}; "
        "'s to X%' is time from the start of epoch 1 to the end of the first epoch whose validation "
        "accuracy reached X%, validation included ('—': never reached); 'train + eval s' is the whole "
        "training call (data, set-up, calibration and saving included) plus the test evaluation; test "
        "accuracy is read once, at the end. "
        f"Measured peaks: {p['fp32_gflops']:.0f} GFLOP/s fp32, {p['bf16_gflops']:.0f} GFLOP/s bf16."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["sprint", "notebook", "quick"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--no-keras", action="store_true", help="skip the Keras notebook baseline")
    ap.add_argument("--json", type=Path, default=None, help="also write every run's numbers here")
    ap.add_argument("--table", type=Path, default=None, help="only print the table of a --json file; train nothing")
    args = ap.parse_args()
    if args.table:
        try:
            saved = json.loads(args.table.read_text())
            machine, runs = saved["machine"], saved["runs"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"error: {args.table} is not a --json file of this script: {e}") from None
        print(f"machine: {machine['cpu']}; {machine['derivation']}")
        table(runs, machine)
        return
    p = peaks()
    print(f"machine: {p['cpu']}; {p['derivation']}", flush=True)
    runs: dict[str, list[dict]] = {}

    def keep(name: str, r: dict) -> None:
        runs.setdefault(name, []).append(r)
        print(
            f"  {name}: test {r['test'] * 100:.2f}% train {r['wall_s']:.0f}s + eval {r['eval_s']:.0f}s",
            flush=True,
        )
        if args.json:
            args.json.write_text(json.dumps({"machine": p, "runs": runs}, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_keras:
            if not KERAS_PYTHON.exists():
                raise SystemExit("error: no .venv-keras: run `make keras-venv` first, or pass --no-keras")
            keep("keras notebook", measure_keras(Path(tmp), args.seeds[0]))
        for preset in args.presets:
            for seed in args.seeds:
                keep(preset, measure(preset, seed, Path(tmp)))
    print()
    table(runs, p)


if __name__ == "__main__":
    main()
