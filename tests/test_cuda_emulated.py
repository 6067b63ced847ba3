"""The layer op's CUDA code run on the CPU, for machines without a GPU (opt-in:
FUSED_LSTM_CUDA_EMULATION=1; it compiles a small extension, a minute or two the first time).

csrc/cuda/lstm_cuda_forward.cpp and lstm_cuda_backward.cpp (the buffers and the
whole-sequence GEMMs), lstm_cuda_forward_loop.cpp and lstm_cuda_backward_loop.cpp (the
torch-free time loops of both routes) and lstm_cuda_kernels.cu (the kernels, each launch run
block by block with a real thread per CUDA thread: tests/cuda_emulation/cuda_runtime.h) are
compiled for the CPU and registered as fused_lstm_emulated::lstm_layer_forward/backward
(tests/cuda_emulation/emulated_layer_op.cpp; built by tests/cuda_emulation/build.py), with
cuBLAS's calls emulated. Each route, forced with FUSED_LSTM_CUDA_STEP as on a GPU, is checked
against the CPU op on the same arguments: outputs, saved cells and every gradient. Not
covered: the CUDA binding's device checks, cuBLAS itself, the persistent route (clusters are
not emulated), the GPU (its memory model, launch limits, math library); tests/test_cuda.py
does that on a GPU.
"""

import os

import pytest
import torch

import fused_lstm
from cuda_emulation.build import emulated_ops
from helpers import layer_args

pytestmark = [
    pytest.mark.skipif(os.environ.get("FUSED_LSTM_CUDA_EMULATION") != "1",
                       reason="opt-in: FUSED_LSTM_CUDA_EMULATION=1 (compiles an extension)"),
    pytest.mark.skipif(not fused_lstm.extension_loaded(), reason="compiled extension not built"),
    pytest.mark.usefixtures("one_intra_op_thread"),
]

TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-2}


@pytest.fixture(scope="module")
def emulated():
    return emulated_ops()


@pytest.fixture(params=["fused", "gemm"])
def route(request, monkeypatch):
    """The step route both CUDA loops take (cuda_plan.cpp reads it at every call; layers with
    a projection take the gemm route whatever it says)."""
    monkeypatch.setenv("FUSED_LSTM_CUDA_STEP", request.param)
    return request.param


def assert_close(got, want, tol, what):
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    scale = max(want.double().abs().max().item(), 1.0) if want.numel() else 1.0
    err = (got.double() - want.double()).abs().max().item() if want.numel() else 0.0
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:.1g} x {scale:.3g}"


def run(op, args, seed=7):
    """Forward (saving) and backward of op on args: y, h_n, c_n, the cells of each direction,
    and the gradients of x, h0, c0 and every weight from random output gradients."""
    detached = [a.detach() if isinstance(a, torch.Tensor) else
                [t.detach() for t in a] if isinstance(a, list) else a for a in args]
    y, h_n, c_n, saved = op.lstm_layer_forward(*detached, True)
    gen = torch.Generator().manual_seed(seed)
    gy, gh, gc = (torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
                  for t in (y, h_n, c_n))
    gx, gh0, gc0, gw = op.lstm_layer_backward(gy, gh, gc, *detached, y, saved)
    cells = saved[1::2]
    return [y, h_n, c_n, *cells], [gx, gh0, gc0, *gw]


def check_against_cpu_op(emulated, args, tol):
    (outs, grads), (cpu_outs, cpu_grads) = run(emulated, args), run(torch.ops.fused_lstm, args)
    names = ["y", "h_n", "c_n"] + [f"cells[{d}]" for d in range(len(outs) - 3)]
    for name, g, c in zip(names, outs, cpu_outs, strict=True):
        assert_close(g, c, tol, name)
    names = ["x", "h0", "c0"] + [f"weights[{i}]" for i in range(len(args[4]))]
    for name, g, c in zip(names, grads, cpu_grads, strict=True):
        assert_close(g, c, tol, f"grad of {name}")


def to_16bit(args, dtype):
    """layer_args' list with every floating-point tensor in dtype."""
    return [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else
            [t.to(dtype) for t in a] if isinstance(a, list) else a for a in args]


CASES = {"dense": dict(), "packed": dict(packed=True), "nobias": dict(bias=False),
         "proj": dict(proj=3), "packed-proj": dict(packed=True, proj=2),
         "one": dict(T=1, B=1, I=1, H=1)}
DIRECTIONS = {"fwd": dict(), "rev": dict(reverse=True), "bidir": dict(bidirectional=True)}


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_emulated_cuda_op_matches_cpu_op(emulated, route, dtype, case, direction):
    torch.manual_seed(len(str(case)) + 3 * len(str(direction)))
    args = layer_args(dtype, **case, **direction)
    check_against_cpu_op(emulated, args, TOL[dtype])


def test_emulated_cuda_op_wide(emulated, route):
    """More rows than a step kernel's block (8) and more units than a backward block (32),
    packed, both directions."""
    torch.manual_seed(4)
    args = layer_args(torch.float64, T=3, B=9, I=3, H=33, packed=True, bidirectional=True)
    check_against_cpu_op(emulated, args, TOL[torch.float64])


@pytest.mark.parametrize("case", [dict(), dict(packed=True, reverse=True), dict(proj=3)],
                         ids=["dense", "packed-rev", "proj"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_emulated_cuda_op_16_bit(emulated, route, dtype, case):
    """16-bit layers run in float32 and come back in their dtype; y is rounded by the step
    kernels, or (projection) after the loop from the float32 h of every step."""
    torch.manual_seed(5)
    args = to_16bit(layer_args(torch.float32, **case), dtype)
    check_against_cpu_op(emulated, args, TOL[dtype])


def test_emulated_cuda_op_with_no_steps(emulated, route):
    args = layer_args(torch.float64, packed=False, T=0, requires_grad=False)
    y, h_n, c_n, saved = emulated.lstm_layer_forward(*args, True)
    assert y.shape == (0, 3, 5)
    assert torch.equal(h_n, args[2]) and torch.equal(c_n, args[3])
    grads = emulated.lstm_layer_backward(torch.zeros_like(y), torch.randn_like(h_n),
                                         torch.randn_like(c_n), *args, y, saved)
    assert grads[0].shape == args[0].shape
    assert torch.count_nonzero(grads[3][1]) == 0  # no step: no gradient for w_hh


def test_emulated_cuda_op_without_saving_gives_the_same_outputs(emulated, route):
    torch.manual_seed(2)
    args = layer_args(torch.float64, packed=True, bidirectional=True, requires_grad=False)
    y, h_n, c_n, saved = emulated.lstm_layer_forward(*args, False)
    y2, h_n2, c_n2, _ = emulated.lstm_layer_forward(*args, True)
    assert all(s.numel() == 0 for s in saved)
    for a, b in zip((y, h_n, c_n), (y2, h_n2, c_n2)):
        assert torch.equal(a, b)


def reference_16bit(args, round_h):
    """The float64 LSTM of one direction without a projection on the 16-bit values of args
    (x, h0, c0, the weights), whose recurrent product multiplies h rounded to the layer's
    dtype when round_h (as FUSED_LSTM_CUDA_16BIT_GEMM's tensor-core product does), else h.
    Returns y, h_n, c_n and the cells of every step in float64: an independent formulation,
    step by step."""
    x, batch_sizes, h0, c0, (w_ih, w_hh, b_ih, b_hh), _, _, _, reverse = args
    dtype = x.dtype
    x, h, c, w_ih, w_hh = (t.double() for t in (x, h0[0], c0[0], w_ih, w_hh))
    bias = b_ih.double() + b_hh.double()
    if batch_sizes is None:
        rows, xs = [x.shape[1]] * x.shape[0], list(x)
    else:
        rows, xs = batch_sizes.tolist(), list(x.split(batch_sizes.tolist()))
    ys, cs = [None] * len(rows), [None] * len(rows)
    for t in (reversed(range(len(rows))) if reverse else range(len(rows))):
        r = rows[t]
        h_in = h[:r].to(dtype).double() if round_h else h[:r]
        i, f, g, o = (xs[t] @ w_ih.T + bias + h_in @ w_hh.T).chunk(4, 1)
        c_new = torch.sigmoid(f) * c[:r] + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        h, c = h.clone(), c.clone()
        h[:r], c[:r] = h_new, c_new
        ys[t], cs[t] = h_new, c_new
    y = torch.stack(ys) if batch_sizes is None else torch.cat(ys)
    return y, h.unsqueeze(0), c.unsqueeze(0), torch.cat(cs)


SIXTEEN_CASES = {"dense": dict(), "rev": dict(reverse=True), "packed": dict(packed=True),
                 "packed-rev": dict(packed=True, reverse=True)}


@pytest.mark.parametrize("case", SIXTEEN_CASES.values(), ids=SIXTEEN_CASES.keys())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_emulated_16bit_operands_on_tensor_cores(emulated, monkeypatch, route, dtype, case):
    """FUSED_LSTM_CUDA_16BIT_GEMM=1: the input projection multiplies the 16-bit x and w_ih
    (one 16-bit GEMM), and on the gemm route every step's recurrent product the 16-bit h of
    the step before (from y, or h0 where a row starts): against the float64 formulation
    that rounds h the same way. Backward (float32, unchanged) still agrees with the CPU op."""
    monkeypatch.setenv("FUSED_LSTM_CUDA_16BIT_GEMM", "1")
    torch.manual_seed(6)
    args = to_16bit(layer_args(torch.float32, T=6, B=5, I=4, H=7, **case,
                               requires_grad=False), dtype)
    before = emulated.count_16bit_gemms()
    y, h_n, c_n, (_, cells) = emulated.lstm_layer_forward(*args, True)
    calls = emulated.count_16bit_gemms() - before
    rows = [args[0].shape[1]] * args[0].shape[0] if args[1] is None else args[1].tolist()
    if case.get("reverse"):
        rows = rows[::-1]
    if route == "gemm":
        # the input projection, one per step, and one more on each step that adds rows
        # starting from h0 (a packed reverse layer's)
        grows = sum(r > p for p, r in zip(rows, rows[1:]))
        assert calls == 1 + len(rows) + grows
    else:
        assert calls == 1  # the input projection; the fused kernels' product stays float32
    want = reference_16bit(args, round_h=route == "gemm")
    for name, got, w in zip(("y", "h_n", "c_n"), (y, h_n, c_n), want):
        assert_close(got.double(), w, TOL[dtype] / 2, name)
    # The cells stay float32: there the rounding of h (or its absence) shows. The
    # formulation that does the other thing is more than three tolerances off.
    assert_close(cells.double(), want[3], 1e-5, "cells")
    other = reference_16bit(args, round_h=route != "gemm")[3]
    assert (other - want[3]).abs().max() > 3e-5 * max(want[3].abs().max().item(), 1.0)
    check_against_cpu_op(emulated, args, TOL[dtype])


def test_emulated_16bit_switch_leaves_projection_and_float32_alone(emulated, monkeypatch):
    """With a projection only the input projection takes 16-bit operands (the recurrent
    product reads the projected float32 state), and float32 layers none."""
    monkeypatch.setenv("FUSED_LSTM_CUDA_16BIT_GEMM", "1")
    torch.manual_seed(8)
    args = to_16bit(layer_args(torch.float32, proj=3, requires_grad=False), torch.bfloat16)
    before = emulated.count_16bit_gemms()
    check_against_cpu_op(emulated, args, TOL[torch.bfloat16])
    assert emulated.count_16bit_gemms() - before == 1
    args = layer_args(torch.float32, requires_grad=False)
    before = emulated.count_16bit_gemms()
    check_against_cpu_op(emulated, args, TOL[torch.float32])
    assert emulated.count_16bit_gemms() == before
