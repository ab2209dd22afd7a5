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


def seconds_per_call(
    fn: Callable[[int], None],
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] = lambda: None,
    min_calls: int = PROBE_MIN_STEPS,
    max_calls: int = PROBE_MAX_STEPS,
    seconds: float = PROBE_SECONDS,
    warmup: int = PROBE_WARMUP_STEPS,
) -> float:
    """The mean time of ``fn(i)`` after ``warmup`` calls, over at least ``min_calls`` calls
    and until ``seconds`` have passed (at most ``max_calls``). ``sync`` waits for queued
    device work (a GPU runs asynchronously: without it the clock measures the launch only)."""
    for i in range(warmup):
        fn(i)
    sync()
    t0 = clock()
    n = 0
    while n < min_calls or (n < max_calls and clock() - t0 < seconds):
        fn(warmup + n)
        n += 1
        if n >= min_calls:
            sync()
    sync()
    return (clock() - t0) / n
