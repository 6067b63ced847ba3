"""pytest-benchmark suite: nn.LSTM and FusedLSTM, per config and mode.

Run it explicitly (benchmarks/conftest.py skips it otherwise, and the test command
`python -m pytest tests` does not collect this folder):

    python -m pytest benchmarks --benchmark-only
    python -m pytest benchmarks --benchmark-only -k "fastrnns and training"
    python -m pytest benchmarks --benchmark-only --benchmark-json bench_results/suite.json

One benchmark per config x implementation x mode, over the configs, builders and
steps of `fused_lstm.bench` (same weights and inputs for both implementations; the
CUDA-only configs join on a CUDA machine). Each benchmark's group is "<config>-<mode>",
so pytest-benchmark's table puts the two implementations side by side.
`extra_info` records shapes, dtype, device, threads, FLOPs and GFLOP/s at the median.
For one-process interleaved timing with ratios and peak memory, use
`python -m fused_lstm.bench` instead.
"""

import functools

import pytest
import torch

from fused_lstm import bench

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Whole seconds per call on a small CPU: a fixed, small number of rounds.
EXPENSIVE = {"fastrnns", "sentiment", "long-seq", "bfloat16", "big"}
CASES = [(name, impl, mode) for name in bench.default_configs(DEVICE)
         for impl in bench.IMPLS for mode in bench.MODES]


@functools.lru_cache(maxsize=1)  # cases run config by config: keep only the current one
def _case(name):
    return bench.build(bench.CONFIGS[name], DEVICE)


@pytest.mark.parametrize("name,impl,mode", CASES, ids=["-".join(c) for c in CASES])
def test_lstm(benchmark, name, impl, mode):
    cfg = bench.CONFIGS[name]
    case = _case(name)
    step = bench.make_step(case, impl, mode)
    if DEVICE == "cuda":
        def fn():
            step()
            torch.cuda.synchronize()
    else:
        fn = step
    flops = bench.lstm_flops(cfg, mode)
    benchmark.group = f"{name}-{mode}"
    benchmark.extra_info.update({
        "config": name, "impl": impl, "mode": mode, "shape": cfg.describe(),
        "T": cfg.T, "B": cfg.B, "I": cfg.I, "H": cfg.H, "num_layers": cfg.num_layers,
        "bidirectional": cfg.bidirectional, "proj_size": cfg.proj_size,
        "dtype": bench.dtype_name(cfg.dtype), "device": DEVICE,
        "device_name": (torch.cuda.get_device_name() if DEVICE == "cuda" else bench.cpu_model()),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "flops": flops,
    })
    # Warm up outside the measurement: first calls pay one-time costs (oneDNN and cuDNN
    # set-up, allocator growth) that would also skew pytest-benchmark's calibration.
    for _ in range(2):
        fn()
    if name in EXPENSIVE:
        benchmark.pedantic(fn, rounds=5, iterations=1)
    else:
        benchmark(fn)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.median > 0:
        benchmark.extra_info["gflops_median"] = flops / stats.stats.median / 1e9
