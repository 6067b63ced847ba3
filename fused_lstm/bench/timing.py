"""Interleaved timing: seconds per call of several steps, their order alternating round by
round, and the median/quartile summary of a list of times. `fused_lstm.demo` times with
this too."""

import statistics
import time
from typing import Callable, List, Sequence

import torch


def synchronize(device) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)  # empty queue: the events bracket this call only
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_interleaved(fns: Sequence[Callable[[], None]], reps: int, warmup: int,
                     device) -> List[List[float]]:
    """Seconds per call of each fn: `warmup` untimed rounds, then `reps` timed ones.

    Every round calls each fn once, in forward order on even rounds and reverse order on
    odd ones, so slow drift and any first-in-round effect fall on all fns alike.
    Returns one list of `reps` times per fn, in the order of `fns`.
    """
    device = torch.device(device)
    for _ in range(warmup):
        for fn in fns:
            fn()
    synchronize(device)
    times: List[List[float]] = [[] for _ in fns]
    for rep in range(reps):
        order = range(len(fns)) if rep % 2 == 0 else reversed(range(len(fns)))
        for k in order:
            times[k].append(_time_once(fns[k], device))
    return times


def summarize(times: Sequence[float]) -> dict:
    """Median, quartiles, min and max of a list of times (seconds)."""
    ts = sorted(times)
    if len(ts) >= 2:
        q1, _, q3 = statistics.quantiles(ts, n=4, method="inclusive")
    else:
        q1 = q3 = ts[0]
    return {"median_s": statistics.median(ts), "q1_s": q1, "q3_s": q3,
            "min_s": ts[0], "max_s": ts[-1], "times_s": list(times)}
