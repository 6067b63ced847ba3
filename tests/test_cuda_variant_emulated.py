"""The variant op's CUDA code run on the CPU, for machines without a GPU (opt-in:
FUSED_LSTM_CUDA_EMULATION=1; it compiles a small extension, a minute or two the first time).

csrc/cuda/variant_cuda_impl.cpp (the buffers, the saved list, the whole-sequence GEMMs),
variant_cuda_loops.cpp (the time loops) and variant_cuda_kernels.cu (the kernels, each
launch run block by block with a real thread per CUDA thread: tests/cuda_emulation/
cuda_runtime.h) are compiled for the CPU and registered as fused_lstm_emulated::
lstm_variant_forward/backward (tests/cuda_emulation/emulated_variant_op.cpp; built by
tests/cuda_emulation/build.py). They are checked here as the CPU op is in test_variants.py:
against lstm_variant_reference over the same grid, gradients included, and against the CPU
op itself (outputs, saved list, every gradient). Not covered: the CUDA binding's device
checks, cuBLAS, the GPU itself (its memory model, launch limits, math library);
tests/test_variants.py's CUDA tests do that on a GPU.
"""

import os

import pytest
import torch

import fused_lstm
from cuda_emulation.build import emulated_ops
from test_variants import (OP_GRID, TOL, assert_close, cast_args, differentiable, grid_id,
                           op_weights_loss, reference_of, variant_args)

pytestmark = [
    pytest.mark.skipif(os.environ.get("FUSED_LSTM_CUDA_EMULATION") != "1",
                       reason="opt-in: FUSED_LSTM_CUDA_EMULATION=1 (compiles an extension)"),
    pytest.mark.skipif(not fused_lstm.extension_loaded(), reason="compiled extension not built"),
    pytest.mark.usefixtures("one_intra_op_thread"),
]


@pytest.fixture(scope="module")
def emulated():
    return emulated_ops()


def output_grads(outs, seed=11):
    """The gradients op_weights_loss gives each output (its random weights)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype) for o in outs]


def run_both(emulated, args, grad_cells=True):
    """Forward and backward of the emulated op and of the CPU op on `args`: for each, the
    outputs (y, h_n, c_n, cells), the saved list and the gradients (x, h0, c0, weights...,
    norm...)."""
    results = []
    detached = [a.detach() if isinstance(a, torch.Tensor) else
                [t.detach() for t in a] if isinstance(a, list) else a for a in args]
    for op in (emulated, torch.ops.fused_lstm):
        y, h_n, c_n, cells, saved = op.lstm_variant_forward(*detached, True)
        gy, gh, gc, gcells = output_grads((y, h_n, c_n, cells))
        g_x, g_h0, g_c0, g_w, g_norm = op.lstm_variant_backward(
            gy, gh, gc, gcells if grad_cells else None, *detached, y, cells, saved)
        results.append(((y, h_n, c_n, cells), saved, [g_x, g_h0, g_c0, *g_w, *g_norm]))
    return results


def tolerance(dtype, norm):
    # as test_variants.test_op_matches_reference: layer norm over five units amplifies the
    # float32 rounding of the activations
    return 2e-5 if dtype == torch.float32 and norm else TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", OP_GRID, ids=[grid_id(c) for c in OP_GRID])
def test_emulated_cuda_op_matches_reference_and_cpu_op(emulated, case, dtype):
    packed, proj, norm, zoneout, rmask, reverse = case
    args64 = variant_args(torch.float64, packed, proj, norm, zoneout, rmask, reverse,
                          seed=len(grid_id(case)))
    args = args64 if dtype == torch.float64 else cast_args(args64, dtype)
    tol = tolerance(dtype, norm)
    (outs, saved, grads), (cpu_outs, cpu_saved, cpu_grads) = run_both(emulated, args)
    want = reference_of(args64)
    for name, g, c, w in zip(("y", "h_n", "c_n", "cells"), outs, cpu_outs, want):
        assert g.dtype == dtype and g.shape == c.shape == w.shape
        assert_close(g, w, tol, name)
        assert_close(g, c, tol, f"{name} against the CPU op")
    assert [s.shape for s in saved] == [s.shape for s in cpu_saved]
    # the reference's gradients of the same loss
    g_want = torch.autograd.grad(op_weights_loss(want), differentiable(args64))
    names = ["x", "h0", "c0"] + [f"weights[{i}]" for i in range(len(args[4]))] + [
        f"norm[{i}]" for i in range(len(args[8]))]
    assert len(grads) == len(cpu_grads) == len(g_want) == len(names)
    for name, g, c, w in zip(names, grads, cpu_grads, g_want):
        assert g.dtype == dtype and g.shape == w.shape
        assert_close(g, w, tol, f"grad of {name}")
        assert_close(g, c, tol, f"grad of {name} against the CPU op")


@pytest.mark.parametrize("H", [40, 300], ids=["H40", "H300"])
def test_emulated_cuda_op_wider_rows(emulated, H):
    """Rows wider than one warp (H = 40: two warps per block) and than one block (H = 300:
    256 threads, two units each; LN over 1200 gates), and more rows than the column sums'
    32 row lanes."""
    args = variant_args(torch.float64, packed=True, proj=7, norm="state", zoneout="rows",
                        rmask=True, reverse=True, T=6, B=9, I=5, H=H, seed=2)
    (outs, saved, grads), (cpu_outs, _, cpu_grads) = run_both(emulated, args)
    for k, (g, c) in enumerate(zip(outs, cpu_outs)):
        assert_close(g, c, 1e-10, f"output {k}")
    for k, (g, c) in enumerate(zip(grads, cpu_grads)):
        assert_close(g, c, 1e-10, f"gradient {k}")


@pytest.mark.parametrize("norm", [None, "state"], ids=["plain", "norm-state"])
def test_emulated_cuda_op_without_bias(emulated, norm):
    """bias=False (no bias in the row kernels, no bias column sums), against the CPU op and
    the reference."""
    args = variant_args(torch.float64, packed=True, proj=2, norm=norm, zoneout="rows",
                        rmask=True, reverse=True, bias=False, seed=4)
    assert args[5] is False  # has_bias
    (outs, _, grads), (cpu_outs, _, cpu_grads) = run_both(emulated, args)
    want = reference_of(args)
    for k, (g, c, w) in enumerate(zip(outs, cpu_outs, want)):
        assert_close(g, c, 1e-10, f"output {k}")
        assert_close(g, w, 1e-10, f"output {k} against the reference")
    for k, (g, c) in enumerate(zip(grads, cpu_grads)):
        assert_close(g, c, 1e-10, f"gradient {k}")


@pytest.mark.parametrize("norm", [None, "hidden"])
def test_emulated_cuda_op_without_cell_gradient_and_without_saving(emulated, norm):
    """grad_cells None (cells unused), and a forward without need_backward (same outputs,
    nothing saved)."""
    args = variant_args(torch.float64, norm=norm, zoneout="const", rmask=True, seed=4)
    (outs, _, grads), (cpu_outs, _, cpu_grads) = run_both(emulated, args, grad_cells=False)
    for k, (g, c) in enumerate(zip(grads, cpu_grads)):
        assert_close(g, c, 1e-10, f"gradient {k}")
    detached = [a.detach() if isinstance(a, torch.Tensor) else
                [t.detach() for t in a] if isinstance(a, list) else a for a in args]
    *lean, saved = emulated.lstm_variant_forward(*detached, False)
    assert saved == []
    for k, (g, c) in enumerate(zip(lean, outs)):
        assert torch.equal(g, c), f"output {k}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_emulated_cuda_op_16_bit(emulated, dtype):
    """16-bit inputs run in float32 and come back in their dtype, as on the CPU."""
    args = cast_args(variant_args(torch.float64, norm="hidden", zoneout="rows", rmask=True,
                                  proj=3, seed=6), dtype)
    (outs, saved, grads), (cpu_outs, cpu_saved, cpu_grads) = run_both(emulated, args)
    for k, (g, c) in enumerate(zip(outs, cpu_outs)):
        assert g.dtype == dtype
        assert_close(g.double(), c.double(), 2e-2, f"output {k}")
    assert all(s.dtype == torch.float32 for s in saved)
    for k, (g, c) in enumerate(zip(grads, cpu_grads)):
        assert g.dtype == dtype
        assert_close(g.double(), c.double(), 2e-2, f"gradient {k}")


def test_emulated_cuda_op_with_no_steps(emulated):
    args = variant_args(torch.float64, norm="hidden", T=0, requires_grad=False)
    y, h_n, c_n, cells, _ = emulated.lstm_variant_forward(*args, True)
    assert y.shape[0] == 0 and cells.shape[0] == 0
    assert torch.equal(h_n, args[2]) and torch.equal(c_n, args[3])


def test_emulated_cuda_op_outputs_do_not_alias(emulated):
    """The bias's gradient and LN's bias gradients are one column sum: each output its own
    tensor all the same."""
    args = variant_args(torch.float64, norm="hidden", seed=9)
    (_, _, grads), _ = run_both(emulated, args)
    n_w = len(args[4])
    storages = {g.untyped_storage().data_ptr() for g in grads}
    assert len(storages) == 3 + n_w + 6


def test_emulated_cuda_op_checks_like_the_cpu_op(emulated):
    """The shared argument checks: the same errors and messages."""
    args = variant_args(torch.float64, proj=3, requires_grad=False)
    y, h_n, c_n, cells, saved = emulated.lstm_variant_forward(*args, True)
    grads = (torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n), None)
    short = list(saved)
    short[7] = torch.empty(0, dtype=torch.float64)
    for op in (emulated, torch.ops.fused_lstm):
        with pytest.raises(RuntimeError, match="saved tensor 7"):
            op.lstm_variant_backward(*grads, *args, y, cells, short)
    bad = list(args)
    bad[11] = torch.ones(2, 2, dtype=torch.float64)
    for op in (emulated, torch.ops.fused_lstm):
        with pytest.raises(RuntimeError, match=r"expected recurrent_mask of size \[3, 3\]"):
            op.lstm_variant_forward(*bad, True)
