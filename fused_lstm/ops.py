"""Python side of the fused_lstm ops: fake (shape) kernels and autograd.

The ops themselves are declared in csrc/ops.cpp and implemented per device in
C++. `lstm_layer` is the one entry point FusedLSTM calls per layer direction.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _extension
from .reference import lstm_layer_reference

REDUCED = (torch.float16, torch.bfloat16)


def _saved_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the gates/cells saved for backward: float32 for 16-bit inputs."""
    return torch.float32 if dtype in REDUCED else dtype


if _extension.extension_loaded():

    @torch.library.register_fake("fused_lstm::lstm_layer_forward")
    def _forward_fake(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                      need_backward):
        H = w_ih.shape[0] // 4
        Hout = w_hr.shape[0] if w_hr is not None else H
        torch._check(x.shape[-1] == w_ih.shape[1],
                     lambda: f"expected input with {w_ih.shape[1]} features, got {x.shape[-1]}")
        N = x.shape[0] if batch_sizes is not None else x.shape[0] * x.shape[1]
        saved = _saved_dtype(x.dtype)
        rows = N if need_backward else 0
        return (
            x.new_empty((*x.shape[:-1], Hout)),
            h0.new_empty(h0.shape),
            c0.new_empty(c0.shape),
            x.new_empty((rows, 4 * H), dtype=saved),
            x.new_empty((rows, H), dtype=saved),
        )

    @torch.library.register_fake("fused_lstm::lstm_layer_backward")
    def _backward_fake(grad_y, grad_h_n, grad_c_n, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih,
                       b_hh, w_hr, y, gates, cells, reverse):
        empty = w_ih.new_empty((0,))
        return (
            x.new_empty(x.shape),
            h0.new_empty(h0.shape),
            c0.new_empty(c0.shape),
            w_ih.new_empty(w_ih.shape),
            w_hh.new_empty(w_hh.shape),
            b_ih.new_empty(b_ih.shape) if b_ih is not None else empty,
            b_hh.new_empty(b_hh.shape) if b_hh is not None else empty.clone(),
            w_hr.new_empty(w_hr.shape) if w_hr is not None else empty.clone(),
        )

    def _setup_context(ctx, inputs, output):
        x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, need_backward = inputs
        y, _, _, gates, cells = output
        ctx.reverse = reverse
        ctx.need_backward = need_backward
        ctx.has_bias = b_ih is not None
        ctx.has_proj = w_hr is not None
        ctx.save_for_backward(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, y, gates,
                              cells)

    def _backward(ctx, grad_y, grad_h_n, grad_c_n, _grad_gates, _grad_cells):
        (x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, y, gates,
         cells) = ctx.saved_tensors
        if not ctx.need_backward and not torch.is_grad_enabled():
            # Called with need_backward=False yet differentiated: recompute what
            # backward needs rather than fail.
            y, _, _, gates, cells = torch.ops.fused_lstm.lstm_layer_forward(
                x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, ctx.reverse, True)
        grad_y = torch.zeros_like(y) if grad_y is None else grad_y
        grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
        grad_c_n = torch.zeros_like(c0) if grad_c_n is None else grad_c_n
        if torch.is_grad_enabled():
            # create_graph=True: differentiate the reference, whose graph is itself
            # differentiable, so second-order gradients exist and are exact.
            grads = _differentiable_backward(
                (grad_y, grad_h_n, grad_c_n),
                (x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, ctx.reverse))
        else:
            grads = torch.ops.fused_lstm.lstm_layer_backward(
                grad_y, grad_h_n, grad_c_n, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh,
                w_hr, y, gates, cells, ctx.reverse)
        g_x, g_h0, g_c0, g_w_ih, g_w_hh, g_b_ih, g_b_hh, g_w_hr = grads
        return (g_x, None, g_h0, g_c0, g_w_ih, g_w_hh,
                g_b_ih if ctx.has_bias else None, g_b_hh if ctx.has_bias else None,
                g_w_hr if ctx.has_proj else None, None, None)

    torch.library.register_autograd(
        "fused_lstm::lstm_layer_forward", _backward, setup_context=_setup_context)


def _differentiable_backward(grad_outputs, args):
    """Gradients of lstm_layer w.r.t. its tensor inputs, as a differentiable graph."""
    x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse = args
    inputs = [x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr]
    # The saved inputs are the caller's tensors, still attached to their graph, so
    # recomputing on them and differentiating with create_graph=True gives
    # gradients that are themselves differentiable.
    outs = lstm_layer_reference(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse)
    wrt = [t for t in inputs if t is not None and t.requires_grad]
    got = torch.autograd.grad(outs, wrt, grad_outputs, create_graph=True, allow_unused=True)
    by_id = {id(t): g for t, g in zip(wrt, got)}
    result = []
    for t in inputs:
        g = by_id.get(id(t)) if t is not None else None
        if g is None:
            g = torch.zeros_like(t) if t is not None else x.new_empty((0,))
        result.append(g)
    return tuple(result)


def lstm_layer(
    x: Tensor,
    batch_sizes: Optional[Tensor],
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Optional[Tensor],
    b_hh: Optional[Tensor],
    w_hr: Optional[Tensor],
    reverse: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """One direction of one layer: y, h_n, c_n (see csrc/ops.cpp for shapes)."""
    if not _extension.extension_loaded():
        return lstm_layer_reference(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse)
    need_backward = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr))
    y, h_n, c_n, _, _ = torch.ops.fused_lstm.lstm_layer_forward(
        x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, need_backward)
    return y, h_n, c_n
