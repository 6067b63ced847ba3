"""Python side of the fused_lstm ops: fake (shape) kernels and autograd.

The ops themselves are declared in csrc/ops.cpp and implemented per device in
C++. `lstm_layer` is the one entry point FusedLSTM calls per layer (one direction or
both).
"""

import os
import warnings
from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd import forward_ad

from . import _extension
from .reference import lstm_layers_reference, lstm_variant_reference, split_layer_weights

REDUCED = (torch.float16, torch.bfloat16)


def _saved_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the gates/cells saved for backward: float32 for 16-bit inputs."""
    return torch.float32 if dtype in REDUCED else dtype


def _per_direction(has_bias: bool, has_proj: bool) -> int:
    """Weights per direction in the layer op's list."""
    return 2 + (2 if has_bias else 0) + (1 if has_proj else 0)


if _extension.extension_loaded():

    @torch.library.register_fake("fused_lstm::lstm_layer_forward")
    def _forward_fake(x, batch_sizes, h0, c0, weights, has_bias, has_proj, bidirectional,
                      reverse, need_backward):
        directions = 2 if bidirectional else 1
        w_ih = weights[0]
        H = w_ih.shape[0] // 4
        Hout = weights[_per_direction(has_bias, has_proj) - 1].shape[0] if has_proj else H
        torch._check(x.shape[-1] == w_ih.shape[1],
                     lambda: f"expected input with {w_ih.shape[1]} features, got {x.shape[-1]}")
        N = x.shape[0] if batch_sizes is not None else x.shape[0] * x.shape[1]
        dtype = _saved_dtype(x.dtype)
        rows = N if need_backward else 0
        saved = []
        for _ in range(directions):  # gates, cells
            saved += [x.new_empty((rows, 4 * H), dtype=dtype), x.new_empty((rows, H), dtype=dtype)]
        return (x.new_empty((*x.shape[:-1], directions * Hout)), h0.new_empty(h0.shape),
                c0.new_empty(c0.shape), saved)

    @torch.library.register_fake("fused_lstm::lstm_layer_backward")
    def _backward_fake(grad_y, grad_h_n, grad_c_n, x, batch_sizes, h0, c0, weights, has_bias,
                       has_proj, bidirectional, reverse, y, saved):
        return (x.new_empty(x.shape), h0.new_empty(h0.shape), c0.new_empty(c0.shape),
                [w.new_empty(w.shape) for w in weights])

    class _LayerFunction(torch.autograd.Function):
        """The layer op's autograd, with its tensors flat (see _autograd_kernel)."""

        @staticmethod
        def forward(ctx, keyset, x, batch_sizes, h0, c0, has_bias, has_proj, bidirectional,
                    reverse, need_backward, *weights):
            with torch._C._AutoDispatchBelowAutograd():
                y, h_n, c_n, saved = _FORWARD.redispatch(
                    keyset & torch._C._after_autograd_keyset, x, batch_sizes, h0, c0,
                    list(weights), has_bias, has_proj, bidirectional, reverse, need_backward)
            # Outputs without a gradient (the buffers saved for backward) reach backward
            # as None instead of as zeros of their size (T x B x 4H for gates: the
            # largest tensor of a training step).
            ctx.set_materialize_grads(False)
            ctx.mark_non_differentiable(*saved)
            ctx.flags = (has_bias, has_proj, bidirectional, reverse)
            ctx.need_backward = need_backward
            ctx.save_for_backward(x, batch_sizes, h0, c0, y, *saved, *weights)
            ctx.saved_count = len(saved)
            return (y, h_n, c_n, *saved)

        @staticmethod
        def backward(ctx, grad_y, grad_h_n, grad_c_n, *_grad_saved):
            x, batch_sizes, h0, c0, y, *rest = ctx.saved_tensors
            saved, weights = list(rest[:ctx.saved_count]), list(rest[ctx.saved_count:])
            grad_y = torch.zeros_like(y) if grad_y is None else grad_y
            grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
            grad_c_n = torch.zeros_like(c0) if grad_c_n is None else grad_c_n
            args = (x, batch_sizes, h0, c0, weights, *ctx.flags)
            if torch.is_grad_enabled():
                # create_graph=True: differentiate the reference, whose graph is itself
                # differentiable, so second-order gradients exist and are exact.
                g_x, g_h0, g_c0, g_w = _differentiable_backward((grad_y, grad_h_n, grad_c_n),
                                                                args)
            else:
                if not ctx.need_backward:
                    # Called with need_backward=False yet differentiated: recompute what
                    # backward needs rather than fail.
                    y, _, _, saved = torch.ops.fused_lstm.lstm_layer_forward(*args, True)
                g_x, g_h0, g_c0, g_w = torch.ops.fused_lstm.lstm_layer_backward(
                    grad_y, grad_h_n, grad_c_n, *args, y, saved)
            return (None, g_x, None, g_h0, g_c0, None, None, None, None, None, *g_w)

    _FORWARD = torch.ops.fused_lstm.lstm_layer_forward.default

    def _autograd_kernel(keyset, x, batch_sizes, h0, c0, weights, has_bias, has_proj,
                         bidirectional, reverse, need_backward):
        """The layer op's Autograd kernel, as torch.library.register_autograd would make it,
        without the pytree round trip its generated function gives a tensor-list argument
        on every call (about 100 us per training step at small sizes, benchmarks/NOTES.md)."""
        if torch.is_grad_enabled() and (
                x.requires_grad or h0.requires_grad or c0.requires_grad
                or any(w.requires_grad for w in weights)):
            y, h_n, c_n, *saved = _LayerFunction.apply(
                keyset, x, batch_sizes, h0, c0, has_bias, has_proj, bidirectional, reverse,
                need_backward, *weights)
            return y, h_n, c_n, saved
        with torch._C._AutoDispatchBelowAutograd():
            return _FORWARD.redispatch(keyset & torch._C._after_autograd_keyset, x, batch_sizes,
                                       h0, c0, weights, has_bias, has_proj, bidirectional,
                                       reverse, need_backward)

    _LIBRARY = torch.library.Library("fused_lstm", "IMPL")
    _LIBRARY.impl("lstm_layer_forward", _autograd_kernel, "Autograd", with_keyset=True)

    def _vmap_by_loop(op):
        """A vmap rule running `op` once per sample: the ops take and return tensor lists,
        for which torch generates no vmap fallback."""
        def rule(info, in_dims, *args):
            def sample(arg, dim, v):
                if isinstance(arg, (list, tuple)):
                    return [sample(a, d, v) for a, d in zip(arg, dim or [None] * len(arg))]
                return arg if dim is None else arg.select(dim, v)

            outs = [op(*(sample(a, d, v) for a, d in zip(args, in_dims)))
                    for v in range(info.batch_size)]
            stacked = tuple(torch.stack(list(o)) if isinstance(o[0], Tensor)
                            else [torch.stack(list(t)) for t in zip(*o)] for o in zip(*outs))
            out_dims = tuple(0 if isinstance(o, Tensor) else [0] * len(o) for o in stacked)
            return stacked, out_dims
        return rule

    for _name in ("lstm_layer_forward", "lstm_layer_backward"):
        torch.library.register_vmap(f"fused_lstm::{_name}",
                                    _vmap_by_loop(getattr(torch.ops.fused_lstm, _name).default))


def _reference_grads(outs, grad_outputs, inputs) -> List[Tensor]:
    """The gradient of each of `inputs` (zeros where none reaches it) from the reference's
    outputs `outs` and their gradients (None: no gradient), as a differentiable graph.

    The saved inputs are the caller's tensors, still attached to their graph, so
    recomputing on them and differentiating with create_graph=True gives gradients that
    are themselves differentiable."""
    pairs = [(o, g) for o, g in zip(outs, grad_outputs) if g is not None]
    wrt = [t for t in inputs if t.requires_grad]
    got = torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs],
                              create_graph=True, allow_unused=True)
    by_id = {id(t): g for t, g in zip(wrt, got)}
    return [torch.zeros_like(t) if by_id.get(id(t)) is None else by_id[id(t)] for t in inputs]


def _differentiable_backward(grad_outputs, args):
    """Gradients of the layer op w.r.t. x, h0, c0 and each weight, as a differentiable
    graph: (grad_x, grad_h0, grad_c0, [grad of each weight])."""
    x, batch_sizes, h0, c0, weights = args[:5]
    grads = _reference_grads(lstm_layers_reference(*args), grad_outputs, [x, h0, c0, *weights])
    return grads[0], grads[1], grads[2], grads[3:]


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


def lstm_layer(x: Tensor, batch_sizes: Optional[Tensor], h0: Tensor, c0: Tensor,
               weights: List[Tensor], has_bias: bool, has_proj: bool, bidirectional: bool,
               reverse: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """One layer, one direction or both: y ([..., D * Hout]), h_n [D, B, Hout], c_n [D, B, H]
    (the layer op's arguments and shapes, csrc/ops.cpp)."""
    args = (x, batch_sizes, h0, c0, weights, has_bias, has_proj, bidirectional, reverse)
    tensors = (x, h0, c0, *weights)
    if not _extension.extension_loaded() or _transform_needs_reference(tensors):
        return lstm_layers_reference(*args)
    if _plain_inference():
        # What the Autograd kernel would do with grad mode off, without the call into it
        # (a Python function the dispatcher calls: about 5 us a call, benchmarks/NOTES.md row 57).
        with torch._C._AutoDispatchBelowAutograd():
            y, h_n, c_n, _ = _FORWARD(*args, False)
        return y, h_n, c_n
    y, h_n, c_n, _ = torch.ops.fused_lstm.lstm_layer_forward(*args, _need_backward(tensors))
    return y, h_n, c_n


def _plain_inference() -> bool:
    """Whether this call can go below the layer op's Autograd kernel: grad mode is off (so
    that kernel would only pass the call on), and nothing traces or transforms it
    (torch.compile and torch.export, torch.jit.trace, functorch's vmap) that should see
    the op's call as made."""
    return (not torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and torch._C._functorch.maybe_current_level() is None)


# ---- the variant op: one direction of one layer with the options beyond nn.LSTM ----

if _extension.extension_loaded():

    @torch.library.register_fake("fused_lstm::lstm_variant_forward")
    def _variant_forward_fake(x, batch_sizes, h0, c0, weights, has_bias, has_proj, reverse,
                              norm, norm_eps, norm_state, recurrent_mask, zoneout_h, zoneout_c,
                              need_backward):
        H = weights[0].shape[0] // 4
        Hout = h0.shape[-1]
        torch._check(x.shape[-1] == weights[0].shape[1],
                     lambda: f"expected input with {weights[0].shape[1]} features, "
                             f"got {x.shape[-1]}")
        N = x.shape[0] if batch_sizes is not None else x.shape[0] * x.shape[1]
        dtype = _saved_dtype(x.dtype)
        saved = []
        if need_backward:
            ln = len(norm) > 0

            def buf(*shape, present=True):
                return x.new_empty(shape if present else (0,), dtype=dtype)

            # gates, LN_ih's input normalised and its stats, LN_hh's the same, c^, LN_c's
            # stats, o * tanh(n) (csrc/cpu/lstm_variant_cpu.cpp, enum Saved)
            saved = [buf(N, 4 * H), buf(N, 4 * H, present=ln), buf(N, 2, present=ln),
                     buf(N, 4 * H, present=ln), buf(N, 2, present=ln), buf(N, H),
                     buf(N, 2, present=ln), buf(N, H, present=has_proj)]
        return (x.new_empty((*x.shape[:-1], Hout)), h0.new_empty(h0.shape),
                c0.new_empty(c0.shape), x.new_empty((*x.shape[:-1], H)), saved)

    @torch.library.register_fake("fused_lstm::lstm_variant_backward")
    def _variant_backward_fake(grad_y, grad_h_n, grad_c_n, grad_cells, x, batch_sizes, h0, c0,
                               weights, has_bias, has_proj, reverse, norm, norm_eps, norm_state,
                               recurrent_mask, zoneout_h, zoneout_c, y, cells, saved):
        return (x.new_empty(x.shape), h0.new_empty(h0.shape), c0.new_empty(c0.shape),
                [w.new_empty(w.shape) for w in weights], [p.new_empty(p.shape) for p in norm])

    def _variant_setup_context(ctx, inputs, output):
        (x, batch_sizes, h0, c0, weights, has_bias, has_proj, reverse, norm, norm_eps,
         norm_state, recurrent_mask, zoneout_h, zoneout_c, need_backward) = inputs
        y, _, _, cells, saved = output
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(*saved)
        ctx.args = (batch_sizes, has_bias, has_proj, reverse, norm_eps, norm_state,
                    need_backward)
        ctx.counts = (len(weights), len(norm))
        masks = [m if m is not None else x.new_empty(0) for m in
                 (recurrent_mask, zoneout_h, zoneout_c)]
        ctx.has_mask = [m is not None for m in (recurrent_mask, zoneout_h, zoneout_c)]
        ctx.save_for_backward(x, h0, c0, y, cells, *masks, *weights, *norm, *saved)

    def _variant_backward(ctx, grad_y, grad_h_n, grad_c_n, grad_cells, _grad_saved):
        batch_sizes, has_bias, has_proj, reverse, norm_eps, norm_state, need_backward = ctx.args
        n_w, n_norm = ctx.counts
        x, h0, c0, y, cells, *rest = ctx.saved_tensors
        masks = [m if has else None for m, has in zip(rest[:3], ctx.has_mask)]
        weights = list(rest[3:3 + n_w])
        norm = list(rest[3 + n_w:3 + n_w + n_norm])
        saved = list(rest[3 + n_w + n_norm:])
        grad_y = torch.zeros_like(y) if grad_y is None else grad_y
        grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
        grad_c_n = torch.zeros_like(c0) if grad_c_n is None else grad_c_n
        args = (x, batch_sizes, h0, c0, weights, has_bias, has_proj, reverse, norm, norm_eps,
                norm_state, *masks)
        if torch.is_grad_enabled():  # create_graph=True: through the reference
            g_x, g_h0, g_c0, g_w, g_norm = _differentiable_variant_backward(
                (grad_y, grad_h_n, grad_c_n, grad_cells), args)
        else:
            if not need_backward:
                y, _, _, cells, saved = torch.ops.fused_lstm.lstm_variant_forward(*args, True)
            g_x, g_h0, g_c0, g_w, g_norm = torch.ops.fused_lstm.lstm_variant_backward(
                grad_y, grad_h_n, grad_c_n, grad_cells, *args, y, cells, saved)
        return (g_x, None, g_h0, g_c0, g_w, None, None, None, g_norm, None, None, None, None,
                None, None)

    torch.library.register_autograd("fused_lstm::lstm_variant_forward", _variant_backward,
                                    setup_context=_variant_setup_context)
    for _name in ("lstm_variant_forward", "lstm_variant_backward"):
        torch.library.register_vmap(f"fused_lstm::{_name}",
                                    _vmap_by_loop(getattr(torch.ops.fused_lstm, _name).default))


def _differentiable_variant_backward(grad_outputs, args):
    """The variant op's gradients w.r.t. x, h0, c0, each weight and each norm parameter, as
    a differentiable graph (through the reference)."""
    x, batch_sizes, h0, c0, weights, has_bias, has_proj, reverse, norm = args[:9]
    w = split_layer_weights(weights, has_bias, has_proj, 1)[0]
    outs = lstm_variant_reference(x, batch_sizes, h0, c0, *w, reverse, norm, *args[9:])
    grads = _reference_grads(outs, grad_outputs, [x, h0, c0, *weights, *norm])
    n_w = len(weights)
    return grads[0], grads[1], grads[2], grads[3:3 + n_w], grads[3 + n_w:]


CUDA_VARIANT_ENV = "FUSED_LSTM_CUDA_VARIANT_OP"


def _read_cuda_variant_switch() -> bool:
    """FUSED_LSTM_CUDA_VARIANT_OP=1: the variant op's CUDA kernels run CUDA calls (else the
    reference does). Read once, at import, into _CUDA_VARIANT_OP; a test that sets the
    variable re-reads it through this function."""
    value = os.environ.get(CUDA_VARIANT_ENV, "")
    if value not in ("", "0", "1"):
        warnings.warn(f"fused_lstm: {CUDA_VARIANT_ENV} must be 0 or 1, got {value!r}; the "
                      "variant op's CUDA kernels stay off", RuntimeWarning, stacklevel=2)
    return value == "1"


_CUDA_VARIANT_OP = _read_cuda_variant_switch()
# Whether this build holds the variant op's CUDA kernels (a CPU-only build does not).
_CUDA_VARIANT_KERNELS = _extension.extension_loaded() and \
    torch._C._dispatch_has_kernel_for_dispatch_key("fused_lstm::lstm_variant_forward", "CUDA")


def _variant_op_on(device: torch.device) -> bool:
    """Whether the variant op runs a call on `device` (else the reference does): on the CPU
    always; on CUDA only under FUSED_LSTM_CUDA_VARIANT_OP=1 and with its CUDA kernels in the
    build, as no GPU has run them yet (off by default, README)."""
    if device.type == "cpu":
        return True
    return device.type == "cuda" and _CUDA_VARIANT_OP and _CUDA_VARIANT_KERNELS


def lstm_variant(x: Tensor, batch_sizes: Optional[Tensor], h0: Tensor, c0: Tensor,
                 weights: List[Tensor], has_bias: bool, has_proj: bool, reverse: bool,
                 norm: List[Tensor], norm_eps: float, norm_state: bool,
                 recurrent_mask: Optional[Tensor], zoneout_h: Optional[Tensor],
                 zoneout_c: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """One direction of one layer with the options beyond nn.LSTM: y, h_n [B, Hout], c_n
    [B, H], and the cells c_t of every step (the variant op's arguments, csrc/ops.cpp). The
    fused op on the CPU, and on CUDA under FUSED_LSTM_CUDA_VARIANT_OP=1; elsewhere, and under
    a differentiating torch.func transform, the reference."""
    tensors = (x, h0, c0, *weights, *norm)
    if (not _extension.extension_loaded() or not _variant_op_on(x.device)
            or _transform_needs_reference(tensors)):
        w = split_layer_weights(weights, has_bias, has_proj, 1)[0]
        return lstm_variant_reference(x, batch_sizes, h0, c0, *w, reverse, norm, norm_eps,
                                      norm_state, recurrent_mask, zoneout_h, zoneout_c)
    args = (x, batch_sizes, h0, c0, weights, has_bias, has_proj, reverse, norm, norm_eps,
            norm_state, recurrent_mask, zoneout_h, zoneout_c)
    if _plain_inference():  # as lstm_layer
        with torch._C._AutoDispatchBelowAutograd():
            y, h_n, c_n, cells, _ = torch.ops.fused_lstm.lstm_variant_forward.default(*args, False)
        return y, h_n, c_n, cells
    y, h_n, c_n, cells, _ = torch.ops.fused_lstm.lstm_variant_forward(*args,
                                                                       _need_backward(tensors))
    return y, h_n, c_n, cells
