"""What this machine is and can do at best, for the "fraction of peak" columns of benchmarks.

The fp32 peak is derived, not measured: cores × FMA units per core × SIMD lanes × 2 flops
per FMA × clock. On an AVX-512 core with two FMA units that is 2 × 16 × 2 = 64 flops per
cycle. The clock is the one /proc/cpuinfo reports (nominal; turbo may run higher, which
would make the true peak higher and our fractions lower). Where the CPU has AMX, the bf16
tile units add 1,024 bf16 multiply-adds per cycle per core (Intel's figure), which is what
bf16 autocast uses through oneDNN, so bf16 training can exceed the fp32 peak.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def clock_ghz() -> float:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1000
    except OSError:
        pass
    return float("nan")


def peaks() -> dict[str, float | str]:
    flags = cpu_flags()
    cores = os.cpu_count() or 1
    ghz = clock_ghz()
    if "avx512f" in flags:
        per_cycle, isa = 64, "AVX-512, 2 FMA units: 2 × 16 lanes × 2 flops"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, isa = 32, "AVX2, 2 FMA units: 2 × 8 lanes × 2 flops"
    else:
        per_cycle, isa = 8, "SSE: 2 × 4 lanes"
    fp32 = cores * per_cycle * ghz
    amx = cores * 2048 * ghz if "amx_bf16" in flags else 0.0
    return {
        "cpu": cpu_name(),
        "cores": cores,
        "ghz": ghz,
        "fp32_gflops": fp32,
        "amx_bf16_gflops": amx,
        "derivation": f"{cores} cores × {per_cycle} flops/cycle ({isa}) × {ghz:.2f} GHz = {fp32:.0f} GFLOP/s fp32"
        + (f"; AMX bf16: {cores} × 2048 × {ghz:.2f} = {amx / 1000:.1f} TFLOP/s" if amx else ""),
    }


def describe() -> str:
    """One line for a results table: CPU, threads, PyTorch version."""
    import torch

    return f"{platform.machine()} {cpu_name()}, {torch.get_num_threads()} threads, PyTorch {torch.__version__}"


if __name__ == "__main__":
    for k, v in peaks().items():
        print(f"{k}: {v}")
