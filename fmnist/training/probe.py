"""Measuring what a step of training costs on this machine (:mod:`fmnist.training.timebox`
runs it on a throw-away learner, so the run itself is untouched)."""

from __future__ import annotations

import time
from collections.abc import Callable

# Steps measured: at least this many, and until this many seconds have passed (a slow
# machine is measured on fewer steps, a fast one on more, both to about the same precision).
PROBE_MIN_STEPS = 4
PROBE_MAX_STEPS = 60
PROBE_SECONDS = 1.0
# The first steps create the kernels (oneDNN primitives, cuDNN plans): not representative.
PROBE_WARMUP_STEPS = 2
OUTLIER_FACTOR = 3.0


def seconds_per_call(
    fn: Callable[[int], None],
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] = lambda: None,
    min_calls: int = PROBE_MIN_STEPS,
    max_calls: int = PROBE_MAX_STEPS,
    seconds: float = PROBE_SECONDS,
    warmup: int = PROBE_WARMUP_STEPS,
) -> float:
    """The typical time of ``fn(i)`` after ``warmup`` calls (:func:`typical`), over at least
    ``min_calls`` calls and until ``seconds`` have passed (at most ``max_calls``). ``sync``
    waits for queued device work after each call (a GPU runs asynchronously: without it the
    clock measures the launch only)."""
    for i in range(warmup):
        fn(i)
    sync()
    times: list[float] = []
    t0 = clock()
    while len(times) < min_calls or (len(times) < max_calls and clock() - t0 < seconds):
        c0 = clock()
        fn(warmup + len(times))
        sync()
        times.append(clock() - c0)
    return typical(times)


def typical(times: list[float]) -> float:
    """The mean of ``times`` without the outliers: a call over 3x the median is a moment when
    something else had the machine (another process, the disk), not what a step costs. A
    2-minute budget whose probe caught one such moment had planned 25x too few steps."""
    ordered = sorted(times)
    median = ordered[len(ordered) // 2]
    kept = [t for t in times if t <= OUTLIER_FACTOR * median]
    return sum(kept) / len(kept)
