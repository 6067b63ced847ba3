"""Peak tensor memory of one step: CUDA allocator statistics, or on CPU the running sum of
torch.profiler's memory events (with the profiler's own log lines silenced)."""

import contextlib
import gc
import os
import sys
from typing import Callable

import torch


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
