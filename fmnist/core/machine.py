"""What this machine is, and what it can do at best, for the "fraction of peak" columns of
the benchmarks.

The peak is *measured* in the same run as the figure it divides: a large matrix multiply
(GEMM) and a large 3×3 convolution, each in fp32 and in bf16, through the same PyTorch and
oneDNN the training uses. A peak derived from the ISA and the nominal clock (cores × FMA units
× SIMD lanes × 2 × GHz) is printed beside it for information only: it is wrong in both
directions (turbo clocks; Zen 4 runs AVX-512 on 256-bit datapaths, so the derivation counts
double there; a VM may hide AVX-512 from the guest altogether).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch


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


def isa() -> str:
    """The vector and matrix instructions this CPU offers to programs, as the kernel reports them
    (a virtual machine may hide some of what the silicon has)."""
    flags = cpu_flags()
    if "avx512f" in flags:
        parts = ["AVX-512"] + (["AVX-512-BF16"] if "avx512_bf16" in flags else [])
    elif "avx2" in flags:
        parts = ["AVX2", "no AVX-512"]
    else:
        parts = ["no AVX2"]
    parts.append("AMX" if "amx_bf16" in flags else "no AMX")
    return ", ".join(parts)


def cpu_kind() -> str:
    """One line naming the CPU for a results table: model name, cores and instruction set."""
    return f"{cpu_name()}, {os.cpu_count() or 1} cores, {isa()}"


def device_name(device: str) -> str:
    """What a run trained on, for the run table: the GPU's name, else the CPU kind."""
    if device.startswith("cuda") and torch.cuda.is_available():
        try:
            return torch.cuda.get_device_name(torch.device(device))
        except (RuntimeError, AssertionError, ValueError):
            return device
    if device.startswith("mps"):
        return "Apple GPU (MPS)"
    return cpu_kind()


def nominal_fp32_gflops() -> tuple[float, str]:
    """The fp32 peak derived from the ISA and the nominal clock, with its derivation. For
    information only: divide by ``measured_peaks()`` instead."""
    flags = cpu_flags()
    cores = os.cpu_count() or 1
    ghz = clock_ghz()
    if "avx512f" in flags:
        per_cycle, what = 64, "AVX-512, 2 FMA units: 2 × 16 lanes × 2 flops"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, what = 32, "AVX2, 2 FMA units: 2 × 8 lanes × 2 flops"
    else:
        per_cycle, what = 8, "SSE: 2 × 4 lanes"
    fp32 = cores * per_cycle * ghz
    return fp32, f"{cores} cores × {per_cycle} flops/cycle ({what}) × {ghz:.2f} GHz = {fp32:.0f} GFLOP/s"


def _best_rate(fn, flops: float, seconds: float) -> float:
    """GFLOP/s of the fastest of repeated calls of ``fn`` within about ``seconds``."""
    fn()  # warm-up: oneDNN picks and caches its kernel on the first call
    best = float("inf")
    start = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        calls += 1
    return flops / best / 1e9


def measured_peaks(seconds: float = 1.0) -> dict[str, float]:
    """GFLOP/s this process reaches on a GEMM (1,024³) and on a 3×3 convolution (batch 64,
    64→64 channels at 28×28, forward), in fp32 and bf16, best call of ~``seconds`` each.

    These are the denominators for "fraction of peak": they use the same threads, library and
    kernels as training. bf16 is what autocast runs; where the CPU lacks native bf16 support the
    figure shows it (on an AVX2-only CPU bf16 is far slower than fp32)."""
    out: dict[str, float] = {}
    n = 1024
    conv_shape = (64, 64, 28, 28)  # N, C, H, W
    conv_flops = 2.0 * conv_shape[0] * 64 * conv_shape[2] * conv_shape[3] * conv_shape[1] * 9
    with torch.inference_mode():
        for dtype, tag in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            a = torch.randn(n, n).to(dtype)
            b = torch.randn(n, n).to(dtype)
            out[f"gemm_{tag}"] = _best_rate(lambda a=a, b=b: torch.mm(a, b), 2.0 * n**3, seconds)
            x = torch.randn(*conv_shape).to(dtype).contiguous(memory_format=torch.channels_last)
            w = torch.randn(64, conv_shape[1], 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
            out[f"conv_{tag}"] = _best_rate(
                lambda x=x, w=w: torch.nn.functional.conv2d(x, w, padding=1), conv_flops, seconds
            )
    return out


def peaks(seconds: float = 1.0) -> dict[str, float | str]:
    """The CPU, its measured peaks (``measured_peaks``) and the nominal derivation beside them."""
    nominal, derivation = nominal_fp32_gflops()
    measured = measured_peaks(seconds)
    return {
        "cpu": cpu_kind(),
        "cores": os.cpu_count() or 1,
        **measured,
        # The denominator for fp32 work: the better of the two fp32 microbenchmarks.
        "fp32_gflops": max(measured["gemm_fp32"], measured["conv_fp32"]),
        "bf16_gflops": max(measured["gemm_bf16"], measured["conv_bf16"]),
        "nominal_fp32_gflops": nominal,
        "derivation": (
            f"measured: GEMM {measured['gemm_fp32']:.0f} / conv {measured['conv_fp32']:.0f} GFLOP/s fp32, "
            f"GEMM {measured['gemm_bf16']:.0f} / conv {measured['conv_bf16']:.0f} GFLOP/s bf16; "
            f"nominal (not used): {derivation}"
        ),
    }


def describe() -> str:
    """One line for a results table: CPU, threads, PyTorch version."""
    return (
        f"{platform.machine()} {cpu_name()} ({isa()}), {torch.get_num_threads()} threads, PyTorch {torch.__version__}"
    )


if __name__ == "__main__":
    for k, v in peaks().items():
        print(f"{k}: {v}")


def process_started(clock=time.monotonic) -> float:
    """When this process started, on ``clock`` (monotonic): from the kernel's start time, so the
    interpreter's start-up and the imports count, as a user timing the command sees them."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return clock()
    return clock() - max(0.0, age)
