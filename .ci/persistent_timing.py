"""Forward (inference) time per step of the persistent route against the default route
and nn.LSTM (cuDNN), float32 with TF32 off, at one shape, on a GPU.

    python .ci/persistent_timing.py T B H OUT_JSONL [--reps N]

One layer, one direction, input size H. Times are CUDA events around each whole call
(the input GEMM included), medians of --reps calls interleaved by
fused_lstm.bench.timing.time_interleaved; the kernel time of the persistent kernel alone
comes from torch.profiler. It also checks that the persistent route agrees with the
default one and says whether the persistent kernel ran at all (the forced route falls
back silently where it cannot). Appends one JSON line to OUT_JSONL and prints a summary
line. .ci/cuda_check.sh runs it once per shape under `timeout`, so a hung kernel costs one
process.
"""

import argparse
import json
import os
import sys

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from fused_lstm import FusedLSTM
from fused_lstm.bench.timing import summarize, time_interleaved

ROUTE_VAR = "FUSED_LSTM_CUDA_STEP"


def set_route(route):
    if route is None:
        os.environ.pop(ROUTE_VAR, None)
    else:
        os.environ[ROUTE_VAR] = route


def main():
    p = argparse.ArgumentParser()
    p.add_argument("T", type=int)
    p.add_argument("B", type=int)
    p.add_argument("H", type=int)
    p.add_argument("out")
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args()
    T, B, H = args.T, args.B, args.H
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    ref = nn.LSTM(H, H, device="cuda")
    fused = FusedLSTM(H, H, device="cuda")
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, H, device="cuda")

    def forward(route):
        def fn():
            set_route(route)
            with torch.no_grad():
                return fused(x)
        return fn

    def cudnn():
        with torch.no_grad():
            return ref(x)

    # Which kernels the forced route launches, and the persistent kernel's own time.
    forward("persistent")()  # warm up (cluster attributes, allocator)
    pad = torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        # Throwaway kernels first: CUPTI before CUDA 13.1 (torch 2.11+cu130 has 13.0) can
        # give a session's first kernel records invalid timestamps, which kineto drops
        # (pytorch/pytorch#192021); the persistent kernel must not be among them.
        for _ in range(32):
            pad.add_(1)
        torch.cuda.synchronize()
        y_p, (h_p, c_p) = forward("persistent")()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events()
               if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    persistent = [e for e in kernels if "persistent_forward_kernel" in e.name]
    y_d, (h_d, c_d) = forward(None)()
    y_c, _ = cudnn()
    scale = y_d.abs().max().item()
    row = dict(T=T, B=B, H=H, gpu=torch.cuda.get_device_name(),
               persistent_ran=bool(persistent),
               persistent_kernel=persistent[0].name if persistent else None,
               kernels=sorted({e.name[:80] for e in kernels}),
               persistent_kernel_us=(persistent[0].time_range.elapsed_us() if persistent
                                     else None),
               diff_vs_default=max((y_p - y_d).abs().max().item(),
                                   (h_p - h_d).abs().max().item(),
                                   (c_p - c_d).abs().max().item()) / scale,
               diff_default_vs_cudnn=(y_d - y_c).abs().max().item() / scale)

    names = ["persistent", "default", "cudnn"]
    times = time_interleaved([forward("persistent"), forward(None), cudnn], reps=args.reps,
                             warmup=3, device="cuda")
    for name, ts in zip(names, times):
        s = summarize(ts)
        row[f"{name}_ms"] = s["median_s"] * 1e3
        row[f"{name}_us_per_step"] = s["median_s"] * 1e6 / T
        row[f"{name}_us_per_step_q1_q3"] = [s["q1_s"] * 1e6 / T, s["q3_s"] * 1e6 / T]
    if row["persistent_kernel_us"] is not None:
        row["persistent_kernel_us_per_step"] = row["persistent_kernel_us"] / T
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    kern = row.get("persistent_kernel_us_per_step")
    print(f"persistent_timing T={T} B={B} H={H}: per step (us) persistent "
          f"{row['persistent_us_per_step']:.2f} (kernel alone "
          f"{'n/a' if kern is None else f'{kern:.2f}'}), default "
          f"{row['default_us_per_step']:.2f}, cuDNN {row['cudnn_us_per_step']:.2f}; "
          f"persistent ran: {row['persistent_ran']}; max diff vs default "
          f"{row['diff_vs_default']:.2g}")
    ok = True
    if row["diff_vs_default"] > 1e-4:
        print("persistent_timing: the persistent route disagrees with the default one",
              file=sys.stderr)
        ok = False
    if torch.cuda.get_device_capability()[0] >= 9 and not persistent:
        print("persistent_timing: the persistent kernel did not run on an sm_90+ GPU",
              file=sys.stderr)
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
