"""FusedLSTM against nn.LSTM: time, throughput and peak memory on the same weights.

    python -m fused_lstm.bench                     # every config for the device, both modes
    python -m fused_lstm.bench --quick             # cheaper subset, a minute or so on a laptop CPU
    python -m fused_lstm.bench --device cpu --configs fastrnns,sentiment --modes training \\
        --reps 20 --warmup 3 --threads 4 --out bench_results

Both implementations run in one process, on the same weights (``FusedLSTM.from_lstm``)
and the same inputs. After ``--warmup`` untimed rounds, ``--reps`` timed repetitions
alternate between the two (A B, then B A, ...) so that drift in clock speed or in the
load of other processes hits both alike. Reported per config and mode:

* time: median, with the interquartile range (q1-q3) and min/max as spread in the JSON.
  CPU: ``time.perf_counter``. CUDA: CUDA events recorded around the call, after a
  device synchronize, so the time includes any host-side launch gaps.
* ratio = nn.LSTM median time / FusedLSTM median time (above 1: FusedLSTM is faster).
  The summary is the geometric mean of the ratios per mode.
* GFLOP/s = FLOPs / median time, with the FLOPs of :func:`lstm_flops`.
* peak memory of one training step (see :func:`peak_step_memory`).
* agreement: the largest difference from nn.LSTM's output, h_n and c_n, and (when
  training is timed) from its gradients of one training step, relative to the largest
  value. Beyond :func:`agreement_tolerance` a config is reported as differing, and
  the command exits with status 1 after writing its report.

Modes: ``inference`` is a forward under ``torch.no_grad()``; ``training`` is a forward
and a backward of a fixed random-weighted sum of output, h_n and c_n (run as
``torch.autograd.backward((y, h_n, c_n), (g_y, g_h, g_c))`` with fixed random ``g``,
which is that sum's gradient without timing the extra multiplies), with gradients into
every parameter and into the input; gradients are reset to None before each step.

On CUDA the default configs add a bfloat16 twin of every float32 shape (``<name>-bf16``),
and ``--tf32`` sets whether float32 GEMMs may use TF32 tensor cores, for both
implementations alike (default ``off``: full float32 on both sides; PyTorch's own
defaults differ, cuDNN allowing TF32 and matmul not).

``--out DIR`` writes ``results-<device name>-<date>.json`` (all numbers, every
repetition, machine info and the exact command line), ``.md`` (the table) and, when
matplotlib can be imported, ``.png`` (a bar chart of the ratios). The device name is
the GPU name on CUDA, and on CPU the CPU model with the vector ISA the kernels ran
(``AVX512+AVX512_BF16``, ``AVX2``, ...; ``(capped)`` when ``ATEN_CPU_CAPABILITY`` or
``ONEDNN_MAX_CPU_ISA`` lowered it); runs with ``--tf32 on`` add ``-tf32``.
"""

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from . import FusedLSTM, __version__, extension_loaded

IMPLS = ("nn.LSTM", "FusedLSTM")
MODES = ("inference", "training")


@dataclasses.dataclass(frozen=True)
class Config:
    """One benchmark shape. Input is [T, B, I] (sequence first)."""

    name: str
    T: int
    B: int
    I: int  # noqa: E741
    H: int
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    dtype: torch.dtype = torch.float32
    cuda_only: bool = False  # left out of the default list on CPU
    hidden: bool = False  # never in a default list; only run when named (tests)

    def describe(self) -> str:
        s = f"T={self.T} B={self.B} I={self.I} H={self.H}"
        if self.num_layers != 1:
            s += f" L={self.num_layers}"
        if self.bidirectional:
            s += " bidir"
        if self.proj_size:
            s += f" proj={self.proj_size}"
        if self.dtype != torch.float32:
            s += f" {dtype_name(self.dtype)}"
        return s

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["dtype"] = dtype_name(self.dtype)
        return d


CONFIGS: Dict[str, Config] = {c.name: c for c in [
    Config("fastrnns", T=100, B=64, I=512, H=512),  # PyTorch's fastrnns benchmark shape
    Config("digits-rows", T=28, B=64, I=28, H=64),  # 28x28 images read row by row
    Config("sentiment", T=50, B=30, I=100, H=256, num_layers=2, bidirectional=True),
    Config("latency-b1", T=50, B=1, I=128, H=128),
    Config("long-seq", T=500, B=16, I=64, H=128),
    Config("float64", T=50, B=32, I=128, H=128, dtype=torch.float64),
    Config("bfloat16", T=50, B=32, I=256, H=256, dtype=torch.bfloat16),
    Config("b1", T=100, B=1, I=512, H=512, cuda_only=True),
    Config("b8", T=100, B=8, I=512, H=512, cuda_only=True),
    Config("big", T=100, B=256, I=1024, H=1024, cuda_only=True),
    Config("tiny", T=5, B=2, I=8, H=8, hidden=True),
]}
# On CUDA every float32 shape runs in bfloat16 too: cuDNN and FusedLSTM both have
# 16-bit paths there (bfloat16 weights and inputs, float32 accumulation).
CONFIGS.update({f"{c.name}-bf16": dataclasses.replace(c, name=f"{c.name}-bf16",
                                                      dtype=torch.bfloat16, cuda_only=True)
                for c in list(CONFIGS.values()) if c.dtype == torch.float32 and not c.hidden})
QUICK = {"cpu": ["digits-rows", "latency-b1", "sentiment", "float64", "bfloat16"],
         "cuda": ["digits-rows", "latency-b1", "sentiment", "float64", "bfloat16", "fastrnns",
                  "b8"]}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def default_configs(device: str) -> List[str]:
    return [n for n, c in CONFIGS.items()
            if not c.hidden and (device == "cuda" or not c.cuda_only)]


# ---- FLOPs ----

def lstm_flops(cfg: Config, mode: str = "inference") -> int:
    """Matrix-multiply FLOPs of one call (a multiply-add counts as 2).

    Per layer and direction, forward::

        2 * T * B * 4H * (I_layer + Hout)      input and recurrent projections of the gates
      + 2 * T * B * H * Hout                   output projection (only when proj_size > 0)

    with Hout = proj_size or H, I_layer = I for layer 0 and Hout * directions above it.
    The pointwise gate math is left out: some 10-20 FLOPs per gate element (activations,
    cell update) against 2 * (I_layer + Hout) for the GEMMs, a few percent at the
    smallest shapes here and less than 1% at I = H = 512. Training (forward + backward) counts 3x the forward:
    backward holds two GEMMs per forward GEMM (gradient of the input/hidden state and
    gradient of the weights).
    """
    dirs = 2 if cfg.bidirectional else 1
    hout = cfg.proj_size or cfg.H
    total = 0
    for layer in range(cfg.num_layers):
        i_layer = cfg.I if layer == 0 else hout * dirs
        per_dir = 2 * cfg.T * cfg.B * 4 * cfg.H * (i_layer + hout)
        if cfg.proj_size:
            per_dir += 2 * cfg.T * cfg.B * cfg.H * hout
        total += dirs * per_dir
    return 3 * total if mode == "training" else total


# ---- building the two modules and their steps ----

@dataclasses.dataclass
class Case:
    """nn.LSTM and FusedLSTM with the same weights, one input, fixed output gradients."""

    cfg: Config
    device: torch.device
    ref: nn.LSTM
    fused: FusedLSTM
    x: torch.Tensor
    grads: tuple  # gradients for (output, h_n, c_n): the weights of the summed loss

    def module(self, impl: str) -> nn.Module:
        return self.ref if impl == "nn.LSTM" else self.fused


def build(cfg: Config, device, seed: int = 0) -> Case:
    """Both modules on `device` in cfg.dtype, with the same weights and input."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = nn.LSTM(cfg.I, cfg.H, num_layers=cfg.num_layers,
                      bidirectional=cfg.bidirectional, proj_size=cfg.proj_size)
    ref = ref.to(device=device, dtype=cfg.dtype)
    fused = FusedLSTM.from_lstm(ref)
    dirs = 2 if cfg.bidirectional else 1
    hout = cfg.proj_size or cfg.H

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=cfg.dtype)

    x = randn(cfg.T, cfg.B, cfg.I).requires_grad_()
    grads = (randn(cfg.T, cfg.B, dirs * hout), randn(cfg.num_layers * dirs, cfg.B, hout),
             randn(cfg.num_layers * dirs, cfg.B, cfg.H))
    return Case(cfg, device, ref, fused, x, grads)


def make_step(case: Case, impl: str, mode: str) -> Callable[[], None]:
    """A no-argument callable running one inference or training step of `impl`."""
    module, x, grads = case.module(impl), case.x, case.grads
    params = list(module.parameters())

    if mode == "inference":
        def step():
            with torch.no_grad():
                module(x)
    elif mode == "training":
        def step():
            for p in params:
                p.grad = None
            x.grad = None
            y, (h_n, c_n) = module(x)
            torch.autograd.backward((y, h_n, c_n), grads)
    else:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    return step


def _largest_rel_diff(pairs) -> float:
    """Over (FusedLSTM's, nn.LSTM's) tensor pairs: the largest |a - b| relative to b's largest
    magnitude, in float64 (float32 would read float64 differences below its resolution as 0)."""
    err = 0.0
    for a, b in pairs:
        scale = b.abs().max().double().clamp_min(1e-300)
        err = max(err, ((a.double() - b.double()).abs().max() / scale).item())
    return err


def max_rel_diff(case: Case) -> float:
    """Largest |FusedLSTM - nn.LSTM| over output, h_n, c_n, relative to nn.LSTM's max."""
    with torch.no_grad():
        y_r, (h_r, c_r) = case.ref(case.x)
        y_f, (h_f, c_f) = case.fused(case.x)
    return _largest_rel_diff(((y_f, y_r), (h_f, h_r), (c_f, c_r)))


def max_grad_rel_diff(case: Case) -> float:
    """Largest |FusedLSTM - nn.LSTM| over the gradients of one training step (input and
    every parameter), each relative to nn.LSTM's largest value of that gradient."""
    grads = {}
    for impl in IMPLS:
        module = case.module(impl)
        params = list(module.parameters())
        x = case.x.detach().requires_grad_()
        y, (h_n, c_n) = module(x)
        grads[impl] = torch.autograd.grad((y, h_n, c_n), [x, *params], case.grads)
    return _largest_rel_diff(zip(grads["FusedLSTM"], grads["nn.LSTM"]))


def agreement_tolerance(dtype: torch.dtype, device) -> float:
    """How far FusedLSTM's outputs and gradients may sit from nn.LSTM's (relative to the
    largest value) before the benchmark reports the two as disagreeing: a few hundred
    roundings of the dtype, for the whole sequence (TF32 counts as 16-bit)."""
    if dtype == torch.float64:
        return 1e-8
    tf32 = torch.device(device).type == "cuda" and (torch.backends.cuda.matmul.allow_tf32
                                                    or torch.backends.cudnn.allow_tf32)
    if dtype == torch.float32 and not tf32:
        return 1e-3
    return 5e-2


def disagreement(result: dict) -> Optional[str]:
    """What of FusedLSTM's results is beyond the tolerance against nn.LSTM's, or None."""
    tol = result.get("tolerance")
    if tol is None:
        return None
    bad = [f"{what} {result[key]:.3g}" for what, key in
           (("outputs", "max_rel_diff"), ("gradients", "max_grad_rel_diff"))
           if key in result and not result[key] <= tol]  # NaN counts as beyond
    return (", ".join(bad) + f" > {tol:g}") if bad else None


# ---- timing ----

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


# ---- peak memory ----

@contextlib.contextmanager
def _stderr_silenced():
    """Silence fd 2 (the profiler's C++ start/stop log lines); never raises itself."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(fn: Callable[[], None]) -> int:
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _stderr_silenced():
        prof.start()
    try:
        fn()
    finally:
        with _stderr_silenced():
            prof.stop()
    cpu = torch.autograd.DeviceType.CPU
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == cpu]
    events.sort(key=lambda e: e.start_ns())  # stable: ties keep record order
    live = peak = 0
    for e in events:
        live += e.nbytes()  # negative for a free
        peak = max(peak, live)
    return peak


def peak_step_memory(fn: Callable[[], None], device) -> int:
    """Peak bytes of tensor memory that one call of `fn` holds above what was live before.

    "Peak memory" is the high-water mark of bytes allocated through PyTorch's allocator
    while `fn` runs, minus the bytes allocated when it starts: activations saved for
    backward, outputs, temporaries and workspaces of the ops (the fused ops allocate
    theirs with at::empty, so they count), and the gradients. Parameters and the input
    exist before and are not counted; callers reset gradients to None first.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
    CPU: PyTorch keeps no allocation statistics for the CPU allocator, so the step runs
    once under ``torch.profiler`` with ``profile_memory=True``, which reports every
    allocation and free made by the CPU allocator; the peak is the maximum of their
    running sum. This is exact and deterministic for tensor memory, and it measures the
    same quantity as on CUDA, independent of thread count and of earlier steps. The
    alternative, process RSS, measures the allocator's and the libraries' behaviour more
    than the step's: tried on `fastrnns`, the RSS high water of a fresh process (one-time
    library buffers and code pages included) came out ~50 MiB above this measure for
    FusedLSTM, and the RSS rise of a step after warm-up (heap memory freed by earlier
    steps reused) ~50-130 MiB below it, and small configs drown in page granularity. Left out on both devices: memory that BLAS/oneDNN
    libraries allocate behind PyTorch's allocator, and the caching allocator's reserve.
    The profiler slows the step, so it runs apart from the timed repetitions.
    """
    device = torch.device(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - base)
    return _cpu_peak_bytes(fn)


MEMORY_NOTE = ("peak memory: high-water mark of tensor bytes allocated through PyTorch's "
               "allocator during one training step, above what was live before it "
               "(parameters and input excluded; saved activations, temporaries and gradients "
               "included). CPU: running sum of torch.profiler memory events; CUDA: "
               "torch.cuda.max_memory_allocated.")


# ---- one config ----

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


# ---- machine info and reports ----

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _loadavg() -> Optional[List[float]]:
    """1/5/15-minute load averages: other work on the machine makes times noisy."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cpu_isa() -> dict:
    """The CPU's vector instruction set as the kernels use it, and the caps that set it."""
    kernels = torch.ops.fused_lstm.cpu_kernels() if extension_loaded() else None
    return {
        "aten": torch.backends.cpu.get_cpu_capability(),  # AVX512, AVX2, DEFAULT...
        "kernels": kernels,  # the ISA and each dtype's GEMM kernel; AVX512_BF16 and AMX
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
        "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }


def cpu_isa_label(isa: dict) -> str:
    """Short name of the instruction sets a CPU run used: 'AVX512+AVX512_BF16', 'AVX2', and
    ' (capped)' when an environment variable lowered it below what the CPU has."""
    kernels = isa.get("kernels") or ""
    label = kernels.split(";")[0] if kernels else isa.get("aten", "?")
    if "bfloat16 GEMMs: own AVX512_BF16" in kernels:
        label += "+AVX512_BF16"
    if isa.get("ATEN_CPU_CAPABILITY") or isa.get("ONEDNN_MAX_CPU_ISA"):
        label += " (capped)"
    return label.replace("baseline (no vector ISA)", "no-vector-ISA")


def machine_info(device, argv: Sequence[str]) -> dict:
    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    now = datetime.datetime.now().astimezone()
    return {
        "device": device.type,
        "device_name": gpu or cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_isa": cpu_isa(),
        "gpu_name": gpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": (torch.backends.cudnn.version()
                          if device.type == "cuda" and torch.backends.cudnn.is_available()
                          else None),
        # float32 GEMMs on TF32 tensor cores (CUDA): cuBLAS for FusedLSTM, cuDNN for nn.LSTM
        "tf32": ({"matmul": torch.backends.cuda.matmul.allow_tf32,
                  "cudnn": torch.backends.cudnn.allow_tf32} if device.type == "cuda" else None),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "fused_lstm_version": __version__,
        "extension_loaded": extension_loaded(),
        "date": now.isoformat(timespec="seconds"),
        "loadavg_at_start": _loadavg(),
        "command": "python -m fused_lstm.bench" + ("" if not argv else " " + shlex.join(argv)),
    }


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else (
        f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}")


def _time_cell(stats: dict) -> str:
    return f"{_ms(stats['median_s'])} ({_ms(stats['q1_s'])}-{_ms(stats['q3_s'])})"


def _mib(nbytes: Optional[int]) -> str:
    if nbytes is None:
        return "-"
    mib = nbytes / 2**20
    return f"{mib:.0f}" if mib >= 100 else f"{mib:.1f}" if mib >= 1 else f"{mib:.3f}"


def _gflops(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.3g}" if v < 10 else f"{v:.0f}"


def geomean_ratios(results: Sequence[dict]) -> Dict[str, dict]:
    out = {}
    for mode in MODES:
        rs = [r["modes"][mode]["ratio"] for r in results
              if "modes" in r and mode in r["modes"]]
        if rs:
            out[mode] = {"geomean": math.exp(sum(math.log(x) for x in rs) / len(rs)),
                         "n": len(rs)}
    return out


def summary_line(results: Sequence[dict]) -> str:
    g = geomean_ratios(results)
    parts = [f"{mode} {v['geomean']:.2f}x over {v['n']} config{'s' if v['n'] != 1 else ''}"
             for mode, v in g.items()]
    return ("geometric mean of ratios (nn.LSTM time / FusedLSTM time): "
            + ("; ".join(parts) if parts else "no results"))


def disagreement_lines(results: Sequence[dict]) -> List[str]:
    """One warning line per config whose results disagree with nn.LSTM's."""
    return [f"WARNING: {r['config']}: FusedLSTM differs from nn.LSTM beyond tolerance "
            f"(relative to the largest value): {d}"
            for r in results if "error" not in r and (d := disagreement(r))]


def markdown_table(results: Sequence[dict]) -> str:
    head = ["config", "shape", "mode", "nn.LSTM ms (IQR)", "FusedLSTM ms (IQR)", "ratio",
            "nn.LSTM GFLOP/s", "FusedLSTM GFLOP/s", "nn.LSTM peak MiB", "FusedLSTM peak MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['config']} | {r.get('shape', '')} | error: "
                         f"{r['error'].splitlines()[0][:80]} |" + " |" * (len(head) - 3))
            continue
        peaks = r.get("peak_memory_bytes", {})
        for mode, e in r["modes"].items():
            train = mode == "training"
            row = [r["config"], r["shape"], mode, _time_cell(e["nn.LSTM"]),
                   _time_cell(e["FusedLSTM"]), f"{e['ratio']:.2f}",
                   _gflops(e["nn.LSTM"]["gflops"]), _gflops(e["FusedLSTM"]["gflops"]),
                   _mib(peaks.get("nn.LSTM")) if train else "-",
                   _mib(peaks.get("FusedLSTM")) if train else "-"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    m = report["machine"]
    isa = m.get("cpu_isa") or {}
    info = [f"- device: {m['device']} ({m['device_name']})", f"- CPU: {m['cpu_model']}",
            f"- CPU vector ISA: {cpu_isa_label(isa)}; kernels: {isa.get('kernels')}; "
            f"ATEN_CPU_CAPABILITY={isa.get('ATEN_CPU_CAPABILITY')}, "
            f"ONEDNN_MAX_CPU_ISA={isa.get('ONEDNN_MAX_CPU_ISA')}",
            f"- torch {m['torch_version']}, CUDA {m['cuda_version']}, "
            f"{m['threads']} threads, fused_lstm {m['fused_lstm_version']}, compiled "
            f"kernels: {'yes' if m['extension_loaded'] else 'NO (reference fallback)'}",
            f"- date: {m['date']}, load average at start {m.get('loadavg_at_start')}, "
            f"at end {report.get('loadavg_at_end')}", f"- command: `{m['command']}`",
            f"- reps {report['reps']}, warmup {report['warmup']}, interleaved"]
    if m.get("tf32") is not None:
        info.append(f"- float32 GEMMs on TF32 tensor cores: cuBLAS {m['tf32']['matmul']}, "
                    f"cuDNN {m['tf32']['cudnn']}")
    return "\n".join([
        f"# FusedLSTM vs nn.LSTM on {m['device_name']}", "", *info, "",
        markdown_table(report["results"]), "", summary_line(report["results"]), "",
        *[line + "\n" for line in disagreement_lines(report["results"])],
        "ratio = nn.LSTM median time / FusedLSTM median time (above 1: FusedLSTM faster). "
        "Times are medians over the repetitions, with the interquartile range. GFLOP/s = "
        "GEMM FLOPs / median time (training counts 3x forward). " + MEMORY_NOTE, ""])


def _slug(text: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9.\-]+", "_", text)).strip("_.") or "device"


def write_outputs(report: dict, out_dir: str) -> Dict[str, str]:
    """Write the .json, .md and (with matplotlib) .png reports; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    m = report["machine"]
    tf32 = "-tf32" if (m.get("tf32") or {}).get("matmul") else ""
    name = m["device_name"]
    if m["device"] == "cpu":  # the same CPU model comes with different vector ISAs
        name += "-" + cpu_isa_label(m.get("cpu_isa") or {})
    stem = os.path.join(out_dir, f"results-{_slug(name)}-{m['date'][:10]}{tf32}")
    paths = {"json": stem + ".json", "md": stem + ".md"}
    with open(paths["json"], "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    with open(paths["md"], "w") as f:
        f.write(markdown_report(report))
    png = _plot(report, stem + ".png")
    if png:
        paths["png"] = png
    return paths


def _plot(report: dict, path: str) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except Exception:  # optional dependency
        return None
    results = [r for r in report["results"] if "modes" in r]
    if not results:
        return None
    names = [r["config"] for r in results]
    modes = [mode for mode in MODES if any(mode in r["modes"] for r in results)]
    width = 0.8 / len(modes)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4))
    for k, mode in enumerate(modes):
        xs = [i + (k - (len(modes) - 1) / 2) * width for i in range(len(names))]
        ys = [r["modes"][mode]["ratio"] if mode in r["modes"] else 1.0 for r in results]
        # Log scale, bars grow from 1: up where FusedLSTM is faster, down where slower.
        bars = ax.bar(xs, [y - 1.0 for y in ys], width, bottom=1.0, label=mode)
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], fontsize=7)
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("nn.LSTM time / FusedLSTM time")
    m = report["machine"]
    ax.set_title(f"FusedLSTM speed-up, {m['device_name']}, {m['threads']} threads, "
                 f"torch {m['torch_version']}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- command line ----

def _progress(i: int, n: int, r: dict, seconds: float) -> str:
    if "error" in r:
        return f"[{i}/{n}] {r['config']}: FAILED: {r['error'].splitlines()[0]}"
    parts = [f"{mode} {_ms(e['nn.LSTM']['median_s'])} / {_ms(e['FusedLSTM']['median_s'])} ms "
             f"= {e['ratio']:.2f}x" for mode, e in r["modes"].items()]
    peaks = r.get("peak_memory_bytes")
    if peaks:
        parts.append(f"peak {_mib(peaks['nn.LSTM'])} / {_mib(peaks['FusedLSTM'])} MiB")
    d = disagreement(r)
    if d:
        parts.append(f"RESULTS DIFFER from nn.LSTM's: {d}")
    return f"[{i}/{n}] {r['config']} ({r['shape']}): " + "; ".join(parts) + \
        f"  [{seconds:.1f}s]"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m fused_lstm.bench",
        description="Time FusedLSTM against nn.LSTM on the same weights and inputs.")
    p.add_argument("--device", choices=["cpu", "cuda"],
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--configs", help="comma-separated names: " + ", ".join(CONFIGS)
                   + " (default: every config for the device; 'tiny' only when named)")
    p.add_argument("--modes", default=",".join(MODES), help="inference,training")
    p.add_argument("--reps", type=int, help="timed repetitions per implementation "
                   "(default 10 on CPU, 30 on CUDA; 5 with --quick)")
    p.add_argument("--warmup", type=int, help="untimed rounds first (default 2; 1 with --quick)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads(N)")
    p.add_argument("--tf32", choices=["off", "on"], default="off",
                   help="CUDA float32 GEMMs: 'off' (default) runs nn.LSTM (cuDNN) and FusedLSTM "
                   "(cuBLAS) in full float32, 'on' lets both use TF32 tensor cores. PyTorch's "
                   "own defaults differ between the two (cuDNN allows TF32, matmul does not), "
                   "so both flags are set alike here")
    p.add_argument("--quick", action="store_true",
                   help="cheaper configs and fewer repetitions (about a minute)")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="skip the peak-memory measurement")
    p.add_argument("--out", metavar="DIR", help="write results-<device>-<date>.json/.md/.png")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device available")
    if a.configs:
        a.configs = [c.strip() for c in a.configs.split(",") if c.strip()]
        unknown = [c for c in a.configs if c not in CONFIGS]
        if unknown:
            p.error(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    else:
        a.configs = QUICK[a.device] if a.quick else default_configs(a.device)
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not a.modes or any(m not in MODES for m in a.modes):
        p.error(f"--modes takes a comma-separated subset of {', '.join(MODES)}")
    if a.reps is None:
        a.reps = 5 if a.quick else (30 if a.device == "cuda" else 10)
    if a.warmup is None:
        a.warmup = 1 if a.quick else 2
    if a.reps < 1 or a.warmup < 0:
        p.error("--reps must be >= 1 and --warmup >= 0")
    if a.threads is not None and a.threads < 1:
        p.error("--threads must be >= 1")
    return a


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the benchmark; print progress, the table and the summary; return the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = a.tf32 == "on"
    machine = machine_info(device, argv)
    print(f"FusedLSTM vs nn.LSTM on {machine['device_name']} ({a.device}), "
          f"{machine['threads']} threads, torch {machine['torch_version']}; "
          f"{len(a.configs)} configs x {','.join(a.modes)}, reps {a.reps}, warmup {a.warmup}",
          flush=True)
    load = machine["loadavg_at_start"]
    if load and load[0] > (os.cpu_count() or 1) * 0.75:
        print(f"note: load average {load[0]:.1f} on {os.cpu_count()} CPUs; other processes "
              "will make the times noisy.", flush=True)
    if not machine["extension_loaded"]:
        print("WARNING: fused_lstm._C is not loaded; FusedLSTM runs the slow reference.",
              flush=True)
    results = []
    t_start = time.perf_counter()
    for i, name in enumerate(a.configs, 1):
        t0 = time.perf_counter()
        cfg = CONFIGS[name]
        try:
            r = run_config(cfg, device, a.modes, a.reps, a.warmup, memory=a.memory)
        except Exception as e:  # e.g. a dtype one implementation lacks on this device
            r = {"config": name, "shape": cfg.describe(), "params": cfg.as_dict(),
                 "error": f"{type(e).__name__}: {e}"}
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results.append(r)
        print(_progress(i, len(a.configs), r, time.perf_counter() - t0), flush=True)
    report = {"machine": machine, "reps": a.reps, "warmup": a.warmup, "modes": a.modes,
              "memory_note": MEMORY_NOTE if a.memory else None,
              "flops_note": lstm_flops.__doc__.strip().splitlines()[0],
              "results": results, "summary": geomean_ratios(results),
              "total_seconds": time.perf_counter() - t_start, "loadavg_at_end": _loadavg()}
    print()
    print(markdown_table(results))
    print()
    print(summary_line(results), flush=True)
    for line in disagreement_lines(results):
        print(line, flush=True)
    if a.out:
        report["files"] = write_outputs(report, a.out)
        print("wrote " + ", ".join(report["files"].values()), flush=True)
    return report


if __name__ == "__main__":
    # A timing of results that disagree with nn.LSTM's is no result: exit 1 after the report.
    sys.exit(1 if disagreement_lines(main()["results"]) else 0)
