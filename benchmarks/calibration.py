"""Calibration of trained runs on the 10,000 test images: accuracy, expected calibration error
(15 bins) of the raw softmax and of the temperature-scaled probabilities, the temperature
(fitted on the validation split when the run was trained, or by `fmnist calibrate`), and the
test NLL both ways. Prints one Markdown table row per run. Never run as a test:

    .venv/bin/python benchmarks/calibration.py runs/notebook runs/quick
"""

from __future__ import annotations

import argparse
import time
from datetime import date

from fmnist.core.machine import cpu_name
from fmnist.reporting.evaluate import evaluate
from fmnist.runtime.calibration import expected_calibration_error, nll
from fmnist.runtime.inference import softmax


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args()
    print(f"{cpu_name()}, {date.today().isoformat()}")
    print(
        "| run | preset | T (validation) | test accuracy % | ECE raw | ECE calibrated | NLL raw | NLL calibrated | s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for run in args.runs:
        t0 = time.perf_counter()
        r = evaluate(run, write=False)
        t = r.info.softmax_temperature
        scaled = softmax(r.logits, t)
        assert (scaled.argmax(1) == r.raw_probs.argmax(1)).all()  # accuracy unchanged, by construction
        print(
            f"| {run} | {r.info.preset} | {t:.3f} | {r.accuracy * 100:.2f} | {r.ece_raw:.4f} | "
            f"{expected_calibration_error(scaled, r.labels):.4f} | {nll(r.logits, r.labels):.4f} | "
            f"{nll(r.logits, r.labels, t):.4f} | {time.perf_counter() - t0:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
