"""bfloat16 modules against float64 on the same (bfloat16) weights and inputs.

On CPUs with AVX512_BF16 the CPU kernels multiply bfloat16 GEMM operands into
float32 (as nn.LSTM's oneDNN kernels do), rounding h and d(gates) to bfloat16
between steps; elsewhere, and with a projection, bfloat16 runs in float32. Either
way FusedLSTM's error against float64 must stay within nn.LSTM's own bfloat16
error. The shapes cross every edge of the bfloat16 kernels: an odd K (the last
pair of a GEMM holds one value), column counts that are not a multiple of 16,
row counts that are not a multiple of the 6-row tile, the step-wise and the
whole-sequence input projection, threaded steps and GEMMs, several backward
blocks, packed sequences and both directions.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from fused_lstm import FusedLSTM
from helpers import at_least_two_threads, make_pair

CASES = {
    # name: (module config, T, B, packed)
    "odd-sizes-bidir": (dict(input_size=9, hidden_size=33, num_layers=2, bidirectional=True), 40, 7, False),
    "step-input-threaded": (dict(input_size=64, hidden_size=96), 45, 20, False),
    "whole-seq-gemm-parallel": (dict(input_size=129, hidden_size=64), 300, 4, False),
    "packed-bidir": (dict(input_size=8, hidden_size=40, bidirectional=True), 30, 5, True),
    "no-bias": (dict(input_size=16, hidden_size=48, bias=False), 20, 17, False),
    # gradients too large to keep per thread: the block's GEMMs split over the threads
    "block-gemms-threaded": (dict(input_size=64, hidden_size=160), 70, 8, False),
}


def errors(model, x, hx, g):
    """Relative errors of output, h_n, c_n and every gradient against float64."""
    y, (h, c) = model(x, hx)
    y = y.data if isinstance(y, nn.utils.rnn.PackedSequence) else y
    (y.double() * g.to(y.dtype).double()).sum().backward()
    return [t.detach().double() for t in (y, h, c)], [p.grad.double() for p in model.parameters()]


@pytest.mark.parametrize("case", list(CASES))
def test_bfloat16_within_nn_lstm_error(case):
    cfg, T, B, packed = CASES[case]
    with at_least_two_threads():
        ref, fused = make_pair(torch.float32, seed=11, **cfg)
        with torch.no_grad():
            for p in ref.parameters():
                p.mul_(0.3)
        fused.load_state_dict(ref.state_dict())
        ref.to(torch.bfloat16)
        fused.to(torch.bfloat16)
        ref64 = nn.LSTM(dtype=torch.float64, **cfg)
        ref64.load_state_dict(ref.state_dict())  # the bfloat16 weights, exactly

        torch.manual_seed(12)
        x = torch.randn(T, B, cfg["input_size"]).to(torch.bfloat16)
        dirs = 2 if cfg.get("bidirectional") else 1
        layers = cfg.get("num_layers", 1)
        h0 = (0.5 * torch.randn(layers * dirs, B, cfg["hidden_size"])).to(torch.bfloat16)
        c0 = (0.5 * torch.randn(layers * dirs, B, cfg["hidden_size"])).to(torch.bfloat16)
        if packed:
            lengths = torch.randint(1, T + 1, (B,))
            lengths[1] = T
            x = pack_padded_sequence(x, lengths, enforce_sorted=False)
        g = torch.randn(x.data.shape[0] if packed else T, *(() if packed else (B,)),
                        dirs * cfg["hidden_size"], dtype=torch.float64)

        def run(model, dtype):
            xx = x._replace(data=x.data.to(dtype)) if packed else x.to(dtype)
            return errors(model, xx, (h0.to(dtype), c0.to(dtype)), g)

        want, g_want = run(ref64, torch.float64)
        got, g_got = run(fused, torch.bfloat16)
        ref_out, g_ref = run(ref, torch.bfloat16)

        def rel(a, b):
            return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()

        for name, a, r, w in zip(("output", "h_n", "c_n"), got, ref_out, want):
            assert rel(a, w) <= 1.5 * rel(r, w) + 1e-3, (name, rel(a, w), rel(r, w))
        for (name, _), a, r, w in zip(fused.named_parameters(), g_got, g_ref, g_want):
            assert rel(a, w) <= 1.5 * rel(r, w) + 1e-3, (name, rel(a, w), rel(r, w))


def test_bfloat16_with_onednn_disabled():
    """With torch.backends.mkldnn disabled ATen will not run the AMX microkernel: bfloat16
    layers fall back to our own kernels (same results within bfloat16's rounding)."""
    torch.manual_seed(13)
    m = FusedLSTM(64, 64, num_layers=2, bidirectional=True).to(torch.bfloat16)
    x = torch.randn(12, 6, 64).to(torch.bfloat16).requires_grad_()

    def run():
        y, (h, c) = m(x)
        g = torch.autograd.grad(y.float().sum() + h.float().sum(), [x, m.weight_hh_l0])
        return [y, h, c, *g]

    want = run()
    with torch.backends.mkldnn.flags(enabled=False):
        got = run()
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        scale = b.float().abs().max()
        assert ((a.float() - b.float()).abs().max() / scale).item() <= 3e-2
