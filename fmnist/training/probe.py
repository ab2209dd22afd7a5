"""Measuring what a training run costs on this machine, without changing the run.

The probe runs real optimizer steps on the real model, then puts every piece of state back
(weights, optimizer moments, the schedule, BN statistics, the weight average and every
random-number generator), so a run that was probed trains exactly like one that was not:
the plan it produced, repeated without a budget, gives the same model bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

# Steps measured: at least this many, and until this many seconds have passed (a slow
# machine is measured on fewer steps, a fast one on more, both to about the same precision).
PROBE_MIN_STEPS = 4
PROBE_MAX_STEPS = 60
PROBE_SECONDS = 1.0
# The first steps create the kernels (oneDNN primitives, cuDNN plans): not representative.
PROBE_WARMUP_STEPS = 2


def _states(obj: Any) -> Any:
    return copy.deepcopy(obj.state_dict())


@contextlib.contextmanager
def undone(
    stateful: Iterable[Any], generators: Iterable[torch.Generator] = (), numpy_rngs: Iterable[np.random.Generator] = ()
) -> Iterator[None]:
    """Run the block, then restore ``stateful`` objects (anything with ``state_dict`` /
    ``load_state_dict``: models, optimizers, schedulers), the generators and the global torch RNG."""
    stateful, generators, numpy_rngs = list(stateful), list(generators), list(numpy_rngs)
    saved = [_states(o) for o in stateful]
    gen_states = [g.get_state() for g in generators]
    np_states = [copy.deepcopy(r.bit_generator.state) for r in numpy_rngs]
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        for obj, state in zip(stateful, saved):
            obj.load_state_dict(state)
        for g, state in zip(generators, gen_states):
            g.set_state(state)
        for r, state in zip(numpy_rngs, np_states):
            r.bit_generator.state = state
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


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
