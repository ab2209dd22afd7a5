"""Time to accuracy on this machine: the notebook's recipe (the baseline) against the
`quick` and `cpu-best` presets, trained one after the other in one process.

Prints seconds of training until the validation accuracy first reaches 91% (the notebook's
level), 93% and 94%, the final test accuracy (read once, at the end), the achieved GFLOP/s
during training and that figure as a fraction of the machine's fp32 peak
(fmnist/machine.py says how the peak is derived), and each preset's speed-up over the
baseline. Never run as a test:

    .venv/bin/python benchmarks/time_to_accuracy.py [--presets notebook quick cpu-best] [--seeds 0 1 2]

The baseline (first preset) is trained with the first seed only; the others with every seed,
reported as mean ± sample std. --json FILE keeps every run's numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from fmnist.evaluate import evaluate  # noqa: E402
from fmnist.machine import peaks  # noqa: E402
from fmnist.presets import preset_config  # noqa: E402
from fmnist.train import train  # noqa: E402

THRESHOLDS = (0.91, 0.93, 0.94)


def measure(preset: str, seed: int, out: Path) -> dict:
    config = preset_config(preset, seed=seed, out=str(out / preset), overwrite=True)
    t0 = time.perf_counter()
    run = train(config)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    test = evaluate(run.out_dir, write=False)
    eval_s = time.perf_counter() - t1
    reach = {}
    for th in THRESHOLDS:
        hit = next((h for h in run.history if h["val_accuracy"] >= th), None)
        reach[th] = hit["elapsed"] if hit else None
    train_s = sum(h["train_seconds"] for h in run.history)
    images = run.info.train_images // config.batch_size * config.batch_size * len(run.history)
    # Training costs about 3× the forward pass (forward, gradient w.r.t. inputs and weights).
    gflops = 3 * run.info.flops_per_image * images / train_s / 1e9
    return {
        "preset": preset,
        "model": config.model,
        "epochs": len(run.history),
        "reach": reach,
        "train_s": train_s,
        "wall_s": wall,
        "eval_s": eval_s,
        "val": run.best["val_accuracy"],
        "test": test.accuracy,
        "gflops": gflops,
        "precision": run.info.precision,
        "history": [(h["elapsed"], h["val_accuracy"]) for h in run.history],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["notebook", "quick", "cpu-best"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--json", type=Path, default=None, help="also write every run's numbers here")
    args = ap.parse_args()
    p = peaks()
    print(f"machine: {p['cpu']}, {p['cores']} cores; peak {p['derivation']}")
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, preset in enumerate(args.presets):
            for seed in args.seeds[:1] if k == 0 else args.seeds:
                r = measure(preset, seed, Path(tmp))
                runs.setdefault(preset, []).append(r)
                print(
                    f"  {preset} seed {seed}: test {r['test'] * 100:.2f}% train {r['wall_s']:.0f}s + eval {r['eval_s']:.0f}s",
                    flush=True,
                )
                if args.json:
                    args.json.write_text(json.dumps({"machine": p, "runs": runs}, indent=1))
    base = runs[args.presets[0]][0]
    # Speed-up: time to the baseline's best validation accuracy, baseline over preset.
    target = max(v for _, v in base["history"])
    base_t = next(t for t, v in base["history"] if v >= target)

    def time_to(r):
        return next((t for t, v in r["history"] if v >= target), None)

    def ms(values, scale=1.0, digits=0):
        values = [v * scale for v in values if v is not None]
        if not values:
            return "—"
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    print()
    print(
        "| recipe | model | epochs | seeds | s to 91% val | s to 93% val | s to 94% val | train + eval s | test accuracy % | GFLOP/s | % of fp32 peak | speed-up to baseline's best val |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for preset, rs in runs.items():
        hits = [t for t in map(time_to, rs) if t]
        speed = f"{base_t / statistics.mean(hits):.1f}× ({statistics.mean(hits):.0f} s)" if hits else "—"
        print(
            f"| {preset} | {rs[0]['model']} | {rs[0]['epochs']} | {len(rs)} | {ms([r['reach'][0.91] for r in rs])} | "
            f"{ms([r['reach'][0.93] for r in rs])} | {ms([r['reach'][0.94] for r in rs])} | "
            f"{ms([r['wall_s'] + r['eval_s'] for r in rs])} | {ms([r['test'] for r in rs], 100, 2)} | "
            f"{ms([r['gflops'] for r in rs])} | {ms([r['gflops'] / p['fp32_gflops'] for r in rs], 100)} | {speed} |"
        )
    print(
        f"\nprecision: {', '.join(sorted({r['precision'] for rs in runs.values() for r in rs}))}; "
        "'s to X% val' is training time from the start of epoch 1 to the end of the first epoch whose "
        "validation accuracy reached X% ('—': never reached); test accuracy is read once, at the end."
    )


if __name__ == "__main__":
    main()
