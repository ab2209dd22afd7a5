"""GPU measurements for the `gpu` and `sota` presets, plus recipe exploration for the CPU
presets (accuracy only: a GPU trains the same recipe in seconds, the CPU timing is then
measured on the CPU). One prepared script for a short GPU lease:

    python benchmarks/gpu_presets.py --phase smoke --data-dir DIR --out OUT
    python benchmarks/gpu_presets.py --phase full  --data-dir DIR --out OUT [--sota-epochs N]

Writes one JSON line per run to OUT/results.jsonl and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from fmnist.reporting.evaluate import evaluate  # noqa: E402
from fmnist.training.presets import preset_config  # noqa: E402
from fmnist.training.trainer import train  # noqa: E402

R32 = {"widths": [32, 64, 128], "stem": 24}
R48 = {"widths": [48, 96, 192], "stem": 24}
R64 = {"widths": [64, 128, 256], "stem": 32}

QUICK_CANDIDATES = {
    "q-base": {},
    "q-lr0.1": {"lr": 0.1},
    "q-lr0.3": {"lr": 0.3},
    "q-b128": {"batch_size": 128, "lr": 0.1},
    "q-ema": {"ema": 0.99},
    "q-erase": {"erase": 0.1},
    "q-ls0.05": {"label_smoothing": 0.05},
    "q-r48e5": {"model_args": R48, "epochs": 5},
    "q-r32e7": {"epochs": 7},
}
CPU_BEST_CANDIDATES = {
    "cb-r48e24": {},
    "cb-r48e24-noerase": {"erase": 0.0},
    "cb-r64e16": {"model_args": R64, "epochs": 16},
    "cb-r48e30-ema": {"epochs": 30, "ema": 0.999},
}
# Second round, after the first missed 95% (see docs/benchmarks.md): more epochs at large batches.
GPU_CANDIDATES_2 = {
    "g2-b1024-e28": {"batch_size": 1024, "lr": 0.8, "epochs": 28},
    "g2-b2048-e36": {"batch_size": 2048, "lr": 1.2, "epochs": 36},
    "g2-r48-b1024-e30": {"model_args": R48, "batch_size": 1024, "lr": 0.8, "epochs": 30},
    "g2-b1024-e28-ema": {"batch_size": 1024, "lr": 0.8, "epochs": 28, "ema": 0.99},
}
# Tried in order with seed 0; the fastest whose validation accuracy reaches 95.2% is then
# trained with seeds 1 and 2 (chosen on validation, never on test).
GPU_CANDIDATES = {
    "g-b1024-e10": {"batch_size": 1024, "lr": 0.8, "epochs": 10},
    "g-b1024-e14": {"batch_size": 1024, "lr": 0.8, "epochs": 14},
    "g-b512-e12": {"epochs": 12},
    "g-r48-b512-e12": {"model_args": R48, "epochs": 12},
    "g-b1024-e18": {"batch_size": 1024, "lr": 0.8, "epochs": 18},
}


def one(name: str, preset: str, overrides: dict, seed: int, data_dir: str, out: Path, log) -> dict:
    cfg = preset_config(
        preset, seed=seed, out=str(out / "runs" / f"{name}-s{seed}"), overwrite=True, data_dir=data_dir, **overrides
    )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    run = train(cfg)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    res = evaluate(run.out_dir, data_dir, write=False)
    row = {
        "name": name,
        "preset": preset,
        "seed": seed,
        "overrides": overrides,
        "epochs": len(run.history),
        "train_s": round(train_s, 2),
        "epoch_s": [round(h["seconds"], 2) for h in run.history],
        "val": [round(h["val_accuracy"], 4) for h in run.history],
        "best_val": run.best["val_accuracy"],
        "best_epoch": run.best["epoch"],
        "test": res.accuracy,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    log(row)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", choices=["smoke", "full", "gpu2", "sota"], required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sota-epochs", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = open(out / "results.jsonl", "a")  # noqa: SIM115 - appended to for the whole run

    def log(row: dict) -> None:
        print(json.dumps(row), flush=True)
        results.write(json.dumps(row) + "\n")
        results.flush()

    print(
        f"torch {torch.__version__}, cuda {torch.cuda.is_available()} {torch.cuda.get_device_name() if torch.cuda.is_available() else ''}",
        flush=True,
    )
    if args.phase == "smoke":
        one("smoke-gpu", "gpu", {"epochs": 2}, 0, args.data_dir, out, log)
        one("smoke-sota", "sota", {"epochs": 1}, 0, args.data_dir, out, log)
        return
    if args.phase == "gpu2":
        rows = [one(name, "gpu", ov, 0, args.data_dir, out, log) for name, ov in GPU_CANDIDATES_2.items()]
        best = max(rows, key=lambda r: (r["best_val"] >= 0.952, r["best_val"]))
        print(f"chosen on validation: {best['name']}", flush=True)
        for seed in (1, 2):
            one(best["name"], "gpu", GPU_CANDIDATES_2[best["name"]], seed, args.data_dir, out, log)
    if args.phase == "full":
        rows = [one(name, "gpu", ov, 0, args.data_dir, out, log) for name, ov in GPU_CANDIDATES.items()]
        good = [r for r in rows if r["best_val"] >= 0.952]
        best = min(good, key=lambda r: sum(r["epoch_s"])) if good else max(rows, key=lambda r: r["best_val"])
        print(f"chosen on validation: {best['name']}", flush=True)
        for seed in (1, 2):
            one(best["name"], "gpu", GPU_CANDIDATES[best["name"]], seed, args.data_dir, out, log)
        for name, ov in QUICK_CANDIDATES.items():
            for seed in range(args.seeds):
                one(name, "quick", ov, seed, args.data_dir, out, log)
        for name, ov in CPU_BEST_CANDIDATES.items():
            one(name, "cpu-best", ov, 0, args.data_dir, out, log)
    if args.phase in ("full", "sota", "gpu2"):
        ov = {"epochs": args.sota_epochs} if args.sota_epochs else {}
        one("sota", "sota", ov, 0, args.data_dir, out, log)


if __name__ == "__main__":
    main()
