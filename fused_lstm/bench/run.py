"""One config measured: agreement with nn.LSTM, interleaved times and GFLOP/s per mode, and
the peak memory of a training step, as one JSON-able dict."""

from typing import Sequence

import torch

from .cases import agreement_tolerance, build, make_step, max_grad_rel_diff, max_rel_diff
from .configs import IMPLS, MODES, Config, dtype_name, lstm_flops
from .memory import peak_step_memory
from .timing import summarize, time_interleaved


def run_config(cfg: Config, device, modes: Sequence[str] = MODES, reps: int = 10,
               warmup: int = 2, memory: bool = True) -> dict:
    """Time both implementations of `cfg` in each mode; return a JSON-able dict."""
    device = torch.device(device)
    case = build(cfg, device)
    result = {"config": cfg.name, "shape": cfg.describe(), "params": cfg.as_dict(),
              "dtype": dtype_name(cfg.dtype), "max_rel_diff": max_rel_diff(case),
              "tolerance": agreement_tolerance(cfg.dtype, device), "modes": {}}
    if "training" in modes:
        result["max_grad_rel_diff"] = max_grad_rel_diff(case)
    for mode in modes:
        steps = [make_step(case, impl, mode) for impl in IMPLS]
        times = time_interleaved(steps, reps, warmup, device)
        flops = lstm_flops(cfg, mode)
        entry = {"flops": flops}
        for impl, ts in zip(IMPLS, times):
            stats = summarize(ts)
            stats["gflops"] = flops / stats["median_s"] / 1e9 if stats["median_s"] > 0 else None
            entry[impl] = stats
        entry["ratio"] = entry["nn.LSTM"]["median_s"] / entry["FusedLSTM"]["median_s"]
        result["modes"][mode] = entry
    if memory:
        peaks = {}
        for impl in IMPLS:
            step = make_step(case, impl, "training")
            case.module(impl).zero_grad(set_to_none=True)
            case.x.grad = None
            peaks[impl] = peak_step_memory(step, device)
        result["peak_memory_bytes"] = peaks
    case.module("nn.LSTM").zero_grad(set_to_none=True)
    case.fused.zero_grad(set_to_none=True)
    return result
