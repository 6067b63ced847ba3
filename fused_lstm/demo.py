"""FusedLSTM beside nn.LSTM on the same weights: agreement and time.

    python -m fused_lstm.demo
"""

import argparse
import functools

import torch
from torch import nn

from . import FusedLSTM, extension_loaded
from .bench.timing import summarize, time_interleaved


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=50)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--reps", type=int, default=10)
    a = p.parse_args(argv)

    torch.manual_seed(0)
    ref = nn.LSTM(a.input, a.hidden, num_layers=a.layers)
    fused = FusedLSTM.from_lstm(ref)
    x = torch.randn(a.seq, a.batch, a.input, requires_grad=True)
    print(f"FusedLSTM vs nn.LSTM  T={a.seq} B={a.batch} I={a.input} H={a.hidden} "
          f"layers={a.layers}  torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"compiled kernels: {'yes' if extension_loaded() else 'NO (reference fallback)'}")

    y_ref, _ = ref(x)
    y_fused, _ = fused(x)
    g = torch.randn_like(y_ref)
    gx_ref, = torch.autograd.grad(y_ref, x, g)
    gx_fused, = torch.autograd.grad(y_fused, x, g)
    err_y = ((y_fused - y_ref).abs().max() / y_ref.abs().max()).item()
    err_g = ((gx_fused - gx_ref).abs().max() / gx_ref.abs().max()).item()
    print(f"agreement: output relative error {err_y:.2e}, input-gradient relative error "
          f"{err_g:.2e}")

    def infer(m):
        with torch.no_grad():
            m(x)

    def train(m):
        y, _ = m(x)
        y.backward(g)

    for name, fn in (("inference", infer), ("training (fwd+bwd)", train)):
        # The benchmark's timing: one warm-up round, then rounds alternating the order
        # (A B, B A, ...), so drift and first-in-round effects hit both alike.
        steps = [functools.partial(fn, ref), functools.partial(fn, fused)]
        t_ref, t_fused = time_interleaved(steps, reps=a.reps, warmup=1, device="cpu")
        mr, mf = summarize(t_ref)["median_s"], summarize(t_fused)["median_s"]
        print(f"{name:>20}: nn.LSTM {mr * 1e3:8.2f} ms   FusedLSTM {mf * 1e3:8.2f} ms   "
              f"speed-up {mr / mf:5.2f}x")


if __name__ == "__main__":
    main()
