"""Accuracy against time budget: what `fmnist train --time-budget B` buys on this machine, and
the original Keras notebook given the same wall-clock budgets in the same sitting.

Each fmnist run is one whole `fmnist train --time-budget B` process, timed from its start to
its exit (start-up, data loading, the probe, training, calibration and the saved files), then
evaluated on the test set (outside the budget: the budget is training's). The Keras notebook
(benchmarks/keras_notebook.py in .venv-keras, `make keras-venv`) trains whole epochs and is
credited with the test accuracy of the last epoch that ended inside each budget, counted from
its own process start.

    python benchmarks/budget.py [--budgets 30s 1m 2m 5m 15m] [--seeds 0 1 2] [--max-seeds-over 300]
        [--no-keras] [--keras-epochs 20] [--json docs/data/budget-<cpu>-<date>.json] [--plot docs/budget.png]
    python benchmarks/budget.py --table FILE.json [--plot docs/budget.png]    # re-render a saved run

Prints a Markdown table; nothing here is asserted (docs/benchmarks.md records the numbers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from time_to_accuracy import write_split  # benchmarks/ is the script's folder: on sys.path

from fmnist.core.machine import cpu_kind, describe
from fmnist.reporting.evaluate import evaluate
from fmnist.reporting.plots import subplots, to_png
from fmnist.training.budget import format_duration, parse_duration

ROOT = Path(__file__).resolve().parent.parent
FMNIST = Path(sys.executable).parent / "fmnist"
KERAS_PYTHON = ROOT / ".venv-keras" / "bin" / "python"


def run_fmnist(budget: float, seed: int, out: Path) -> dict:
    run = out / f"b{budget:g}-s{seed}"
    cmd = [str(FMNIST), "train", "--time-budget", f"{budget:g}", "--seed", str(seed), "--out", str(run)]
    t0 = time.perf_counter()
    done = subprocess.run([*cmd, "--overwrite", "--plain"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        return {"budget": budget, "seed": seed, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    config = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    test = evaluate(run, write=False)
    plan = config.get("resolved", {}).get("plan", {})
    return {
        "budget": budget,
        "seed": seed,
        "wall_s": wall,
        "overrun": wall / budget - 1,
        "preset": config.get("preset"),
        "model": config.get("model"),
        "steps": (plan.get("changes") or [[0, plan.get("steps")]])[-1][1] if plan else None,
        "replanned": bool(plan.get("changes")),
        "first_plan": plan.get("steps"),
        "probe": config.get("resolved", {}).get("probe"),
        "warnings": [line for line in done.stderr.splitlines() if "warning" in line.lower()][-5:],
        "epochs": summary.get("epochs_run"),
        "val": summary.get("val_accuracy"),
        "test": test.accuracy,
        "log_tail": done.stdout.strip().splitlines()[-3:],
    }


def run_keras(out: Path, seed: int, epochs: int) -> dict:
    data = write_split(out / "split.npz")
    cmd = [str(KERAS_PYTHON), str(ROOT / "benchmarks" / "keras_notebook.py"), str(data)]
    done = subprocess.run(
        [*cmd, "--seed", str(seed), "--epochs", str(epochs), "--test-every-epoch"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def keras_at(keras: dict, budget: float) -> dict | None:
    """The last epoch that ended inside ``budget`` seconds of the Keras process's life."""
    inside = [h for h in keras["history"] if h["since_start"] <= budget]
    return inside[-1] if inside else None


def table(result: dict) -> str:
    lines = [
        f"{result['machine']} ({result['cpu_kind']}), {result['date']}",
        "",
        "| budget | fmnist recipe | steps (epochs) | whole call, s | overrun | val | test (mean ± sd, n) "
        "| Keras notebook: epochs inside | Keras test |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keras = result.get("keras")
    for budget in result["budgets"]:
        rows = [r for r in result["runs"] if r["budget"] == budget and "error" not in r]
        errors = [r for r in result["runs"] if r["budget"] == budget and "error" in r]
        k = keras_at(keras, budget) if keras else None
        kcells = (f"{k['epoch']}", f"{k['test_accuracy'] * 100:.2f}%") if k else (("0", "-") if keras else ("-", "-"))
        if not rows:
            why = errors[0]["error"] if errors else "not run"
            lines.append(f"| {format_duration(budget)} | {why} | | | | | | {kcells[0]} | {kcells[1]} |")
            continue
        tests = [r["test"] * 100 for r in rows]
        sd = f" ± {statistics.stdev(tests):.2f}" if len(tests) > 1 else ""
        recipe = ", ".join(sorted({f"{r['preset'] or r['model']}" for r in rows}))
        steps = ", ".join(f"{r['steps']} ({r['epochs']})" for r in rows)
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in rows)
        over = max(r["overrun"] for r in rows) * 100
        vals = ", ".join(f"{r['val'] * 100:.2f}" for r in rows)
        lines.append(
            f"| {format_duration(budget)} | {recipe} | {steps} | {walls} | {over:+.1f}% (worst) | {vals} "
            f"| {statistics.mean(tests):.2f}%{sd} ({len(tests)}) | {kcells[0]} | {kcells[1]} |"
        )
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    fig, ax = subplots(figsize=(7, 4.2))
    budgets = result["budgets"]
    xs, means, sds = [], [], []
    for b in budgets:
        tests = [r["test"] * 100 for r in result["runs"] if r["budget"] == b and "error" not in r]
        if tests:
            xs.append(b)
            means.append(statistics.mean(tests))
            sds.append(statistics.stdev(tests) if len(tests) > 1 else 0.0)
    ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, label="fmnist train --time-budget")
    keras = result.get("keras")
    if keras:
        kx = [h["since_start"] for h in keras["history"]]
        ky = [h["test_accuracy"] * 100 for h in keras["history"]]
        ax.step(kx, ky, where="post", marker=".", label="Keras notebook (whole epochs)")
    ax.set_xscale("log")
    ax.set_xticks(budgets, [format_duration(b) for b in budgets])
    ax.set_xlabel("wall-clock budget of the whole training call")
    ax.set_ylabel("test accuracy, %")
    ax.set_title(f"Accuracy per budget, {result['cpu_kind']}, {result['date']}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    path.write_bytes(to_png(fig))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", nargs="+", default=["30s", "1m", "2m", "5m", "15m"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--max-seeds-over", type=float, default=300, help="budgets above this many seconds: one seed")
    ap.add_argument("--no-keras", action="store_true")
    ap.add_argument("--keras-epochs", type=int, default=20)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--table", type=Path, help="re-render a saved result")
    args = ap.parse_args()
    if args.table:
        result = json.loads(args.table.read_text())
    else:
        budgets = sorted(parse_duration(b) for b in args.budgets)
        result = {"machine": describe(), "cpu_kind": cpu_kind(), "date": date.today().isoformat()}
        result.update(budgets=budgets, runs=[])
        with tempfile.TemporaryDirectory() as tmp:
            for b in budgets:
                for seed in args.seeds if b <= args.max_seeds_over else args.seeds[:1]:
                    r = run_fmnist(b, seed, Path(tmp))
                    print(json.dumps({k: v for k, v in r.items() if k != "log_tail"}), flush=True)
                    result["runs"].append(r)
            if not args.no_keras:
                if not KERAS_PYTHON.exists():
                    raise SystemExit("error: no .venv-keras: run `make keras-venv` first, or pass --no-keras")
                result["keras"] = run_keras(Path(tmp), args.seeds[0], args.keras_epochs)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
