"""Python side of the fused_lstm ops: fake (shape) kernels and autograd.

The ops themselves are declared in csrc/ops.cpp and implemented per device in
C++. `lstm_layer` is the one entry point FusedLSTM calls per layer direction.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd import forward_ad

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
        # Outputs without a gradient (always gates and cells, the buffers saved
        # for backward) reach _backward as None instead of as zeros of their
        # size (T x B x 4H for gates: the largest tensor of a training step).
        ctx.set_materialize_grads(False)
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

    # ---- both directions of a bidirectional layer in one op (CPU) ----

    @torch.library.register_fake("fused_lstm::lstm_bidirectional_layer_forward")
    def _bidirectional_forward_fake(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                    w_ih_r, w_hh_r, b_ih_r, b_hh_r, w_hr_r, need_backward):
        y, _, _, gates, cells = _forward_fake(x, batch_sizes, h0[0], c0[0], w_ih, w_hh, b_ih,
                                              b_hh, w_hr, False, need_backward)
        return (x.new_empty((*x.shape[:-1], 2 * y.shape[-1])), h0.new_empty(h0.shape),
                c0.new_empty(c0.shape), gates, cells, gates.new_empty(gates.shape),
                cells.new_empty(cells.shape))

    @torch.library.register_fake("fused_lstm::lstm_bidirectional_layer_backward")
    def _bidirectional_backward_fake(grad_y, grad_h_n, grad_c_n, x, batch_sizes, h0, c0, w_ih,
                                     w_hh, b_ih, b_hh, w_hr, w_ih_r, w_hh_r, b_ih_r, b_hh_r,
                                     w_hr_r, y, gates, cells, gates_r, cells_r):
        fwd = _backward_fake(None, None, None, x, batch_sizes, h0[0], c0[0], w_ih, w_hh, b_ih,
                             b_hh, w_hr, None, None, None, False)
        rev = _backward_fake(None, None, None, x, batch_sizes, h0[1], c0[1], w_ih_r, w_hh_r,
                             b_ih_r, b_hh_r, w_hr_r, None, None, None, True)
        return (fwd[0], h0.new_empty(h0.shape), c0.new_empty(c0.shape), *fwd[3:], *rev[3:])

    def _bidirectional_setup_context(ctx, inputs, output):
        ctx.need_backward = inputs[-1]
        ctx.set_materialize_grads(False)  # as in _setup_context
        ctx.optional = [t is not None for t in inputs[4:14]]
        _, _, _, gates, cells, gates_r, cells_r = output
        ctx.save_for_backward(*inputs[:14], output[0], gates, cells, gates_r, cells_r)

    def _bidirectional_backward(ctx, grad_y, grad_h_n, grad_c_n, *_unused):
        saved = ctx.saved_tensors
        args, (y, gates, cells, gates_r, cells_r) = list(saved[:14]), saved[14:]
        x, batch_sizes, h0, c0 = args[:4]
        grad_y = torch.zeros_like(y) if grad_y is None else grad_y
        grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
        grad_c_n = torch.zeros_like(c0) if grad_c_n is None else grad_c_n
        if torch.is_grad_enabled():
            # create_graph=True: each direction through the differentiable reference.
            hout = h0.shape[-1]
            grads = []
            for d, ws in enumerate((args[4:9], args[9:14])):
                grads.append(_differentiable_backward(
                    (grad_y[..., d * hout:(d + 1) * hout], grad_h_n[d], grad_c_n[d]),
                    (x, batch_sizes, h0[d], c0[d], *ws, d == 1)))
            g_x = grads[0][0] + grads[1][0]
            g_h0 = torch.stack([grads[0][1], grads[1][1]])
            g_c0 = torch.stack([grads[0][2], grads[1][2]])
            g_w = list(grads[0][3:]) + list(grads[1][3:])
        else:
            if not ctx.need_backward:
                _, _, _, gates, cells, gates_r, cells_r = \
                    torch.ops.fused_lstm.lstm_bidirectional_layer_forward(*args, True)
            g_x, g_h0, g_c0, *g_w = torch.ops.fused_lstm.lstm_bidirectional_layer_backward(
                grad_y, grad_h_n, grad_c_n, *args, y, gates, cells, gates_r, cells_r)
        g_w = [g if present else None for g, present in zip(g_w, ctx.optional)]
        return (g_x, None, g_h0, g_c0, *g_w, None)

    torch.library.register_autograd(
        "fused_lstm::lstm_bidirectional_layer_forward", _bidirectional_backward,
        setup_context=_bidirectional_setup_context)


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


def _transform_needs_reference(tensors) -> bool:
    """Whether a differentiating torch.func transform (grad, vjp, jacrev, jvp, jacfwd) or
    forward-mode AD (torch.autograd.forward_ad) is at work on this call.

    The ops' autograd (torch.library.register_autograd) gives neither: functorch refuses
    it, and forward-mode AD would silently see tangents of zero. The reference
    implementation is made of ATen ops with every rule, so those calls run it: exact, and
    slower. vmap alone keeps the fused ops.
    """
    if torch.compiler.is_compiling():
        return False
    if torch._C._functorch.maybe_current_level() is not None:
        from torch._C._functorch import TransformType
        from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

        return any(i.key() in (TransformType.Grad, TransformType.Jvp)
                   for i in retrieve_all_functorch_interpreters())
    if forward_ad._current_level >= 0:  # inside forward_ad.dual_level()
        return any(t is not None and forward_ad.unpack_dual(t).tangent is not None
                   for t in tensors)
    return False


def _need_backward(tensors) -> bool:
    """Whether the forward op should save what its backward needs."""
    if torch.jit.is_tracing():
        # A trace bakes this flag into its graph, which must not depend on the grad mode
        # of the call being traced (torch.jit.trace's own check reruns it without grad).
        # False keeps a traced model's inference lean; a backward through it recomputes
        # what it needs (see _backward).
        return False
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


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
    tensors = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    if not _extension.extension_loaded() or _transform_needs_reference(tensors):
        return lstm_layer_reference(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse)
    need_backward = _need_backward(tensors)
    y, h_n, c_n, _, _ = torch.ops.fused_lstm.lstm_layer_forward(
        x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, need_backward)
    return y, h_n, c_n


def bidirectional_op_available(x: Tensor, hx, weights) -> bool:
    """Whether both directions of a layer can run in one op for this call: a build with
    the op on x's device (CPU), and no transform that needs the reference (see
    _transform_needs_reference; lstm_layer then runs each direction on it)."""
    return (_extension.extension_loaded() and x.device.type == "cpu"
            and not _transform_needs_reference(
                (x, *(hx or ()), *(w for ws in weights for w in ws))))


def lstm_bidirectional_layer(x, batch_sizes, h0, c0, forward_weights, reverse_weights):
    """Both directions of one layer: y ([..., 2 * Hout]), h_n [2, B, Hout], c_n [2, B, H].

    forward_weights / reverse_weights: (w_ih, w_hh, b_ih, b_hh, w_hr) of each direction.
    Call only where bidirectional_op_available says so.
    """
    tensors = (x, h0, c0, *forward_weights, *reverse_weights)
    need_backward = _need_backward(tensors)
    y, h_n, c_n, *_ = torch.ops.fused_lstm.lstm_bidirectional_layer_forward(
        x, batch_sizes, h0, c0, *forward_weights, *reverse_weights, need_backward)
    return y, h_n, c_n
