"""Inference speed of the models on this machine: PyTorch eager, torch.compile, ONNX
Runtime float and int8. Prints a table; never run as a test.

    .venv/bin/python benchmarks/inference.py            # the full measurement (minutes)
    .venv/bin/python benchmarks/inference.py --quick    # seconds per model: checks it works

Throughput is images/s at batch 1, 64 and 1024 (median call time, so another process
briefly sharing the CPU does not skew it); latency is one image per call, p50 and p99.
Achieved GFLOP/s uses fmnist.models.flops_per_image (multiply-adds × 2 of convolutions
and dense layers) and is compared with the fp32 peak measured in the same run (a GEMM and a
convolution, fmnist/machine.py).
Weights are random: dense kernels take the same time whatever the values.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmnist.core.errors import FmnistError  # noqa: E402
from fmnist.core.machine import peaks  # noqa: E402
from fmnist.models import available, build_model, flops_per_image  # noqa: E402
from fmnist.runtime.export import _to_onnx, calibration_images, quantize_int8  # noqa: E402

BATCHES = (1, 64, 1024)


def cpu_peak() -> tuple[float, str]:
    """fp32 peak in GFLOP/s, measured now by a GEMM and a convolution (fmnist/machine.py)."""
    p = peaks()
    return p["fp32_gflops"], f"{p['cpu']}: {p['derivation']}"


def time_calls(fn, x, budget: float, min_calls: int) -> list[float]:
    """Seconds per call of fn(x), after a warm-up call, for ``budget`` seconds or ``min_calls``."""
    fn(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return times


def runners(name: str, model: torch.nn.Module, calib: np.ndarray, threads: int, compile_: bool):
    """(backend name, callable on a float32 numpy batch, or the reason it is unavailable)."""
    import onnxruntime as ort

    def torch_fn(m):
        def run(x):
            with torch.inference_mode():
                return m(torch.from_numpy(x))

        return run

    yield "torch eager", torch_fn(model)
    if compile_:
        # One specialised graph per batch size (dynamic=False) is the fastest compiled code,
        # but the shapes used here exceed dynamo's default of 8 recompiles per function.
        from torch import _dynamo

        for knob in ("recompile_limit", "cache_size_limit"):
            if hasattr(_dynamo.config, knob):
                setattr(_dynamo.config, knob, 64)
        try:
            compiled = torch.compile(model, dynamic=False)
            fn = torch_fn(compiled)
            fn(np.zeros((2, 1, 28, 28), np.float32))  # fail here, not mid-table
            yield "torch.compile", fn
        except Exception as e:
            yield "torch.compile", f"unavailable ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
    raw, _ = _to_onnx(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3

    def ort_fn(model_bytes):
        session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        return lambda x: session.run(None, {input_name: x})

    yield "onnxruntime fp32", ort_fn(raw)
    try:
        yield "onnxruntime int8", ort_fn(quantize_int8(raw, calib))
    except FmnistError as e:
        yield "onnxruntime int8", f"unavailable ({e})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="A few calls per measurement: checks the script works.")
    ap.add_argument("--models", default="seed,cnn,resnet", help="Comma-separated registry names.")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: one per core).")
    ap.add_argument("--no-compile", action="store_true", help="Skip torch.compile (its first compile takes ~20 s).")
    args = ap.parse_args()

    peak, how = cpu_peak()
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    budget, min_calls, latency_calls = (0.3, 2, 30) if args.quick else (3.0, 5, 2000)
    import onnxruntime

    print(
        f"fmnist inference benchmark, {datetime.now():%Y-%m-%d %H:%M}{' (--quick: rough numbers)' if args.quick else ''}"
    )
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {threads} threads")
    print(how)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(
            f"WARNING: load average {load:.1f} before starting: other processes share these cores, so the "
            "numbers are not representative; rerun on an idle machine. (Measured here: with the other two "
            "busy, PyTorch with 2 threads took 40 ms per single image instead of 0.2 ms with 1 thread, because "
            "each operator's thread barrier waits for a descheduled thread; --threads 1 avoids that.)"
        )
    try:
        calib = calibration_images()
    except FmnistError as e:
        print(f"int8 calibration on random images ({e})")
        calib = np.random.default_rng(0).integers(0, 256, (512, 1, 28, 28)).astype(np.float32)

    header = ["model", "backend"] + [f"img/s b{b}" for b in BATCHES] + ["p50 ms", "p99 ms", "GFLOP/s", "% peak"]
    rows = []
    rng = np.random.default_rng(0)
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in available():
            print(f"skipping {name!r}: not in the model registry yet (available: {', '.join(available())})")
            continue
        torch.manual_seed(0)
        model = build_model(name).eval()
        flops = flops_per_image(model)
        print(f"{name}: {flops / 1e6:.1f} MFLOP per image", flush=True)
        for backend, fn in runners(name, model, calib, threads, not args.no_compile):
            if isinstance(fn, str):
                rows.append([name, backend, fn])
                continue
            speeds = []
            for b in BATCHES:
                x = rng.integers(0, 256, (b, 1, 28, 28)).astype(np.float32)
                speeds.append(b / float(np.median(time_calls(fn, x, budget, 1 if b >= 1024 else min_calls))))
            lat = np.array(time_calls(fn, rng.integers(0, 256, (1, 1, 28, 28)).astype(np.float32), 0, latency_calls))
            gflops = max(speeds) * flops / 1e9
            rows.append(
                [name, backend, *(f"{s:,.0f}" for s in speeds)]
                + [f"{np.percentile(lat, 50) * 1e3:.3f}", f"{np.percentile(lat, 99) * 1e3:.3f}"]
                + [f"{gflops:.1f}", f"{gflops / peak * 100:.1f}%"]
            )
            print("  " + "  ".join(rows[-1][1:]), flush=True)

    print()
    widths = [max(len(str(r[i])) if i < len(r) else 0 for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        if len(r) == 3:
            print("  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2]]))
        else:
            print("  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print(
        "\nGFLOP/s: at the fastest batch size. int8 rows are compared with the fp32 peak too "
        "(VNNI int8 peak is 4× higher), so their % is not a utilisation."
    )


if __name__ == "__main__":
    main()
