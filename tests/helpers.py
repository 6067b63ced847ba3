"""Shared test helpers: paired modules, random inputs, error measures."""

import contextlib
import itertools

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from fused_lstm import FusedLSTM

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}

# The configuration grid the parity tests run over, on every device.
GRID = list(itertools.product(
    [1, 2, 3],          # num_layers
    [False, True],      # bidirectional
    [False, True],      # batch_first
    [True, False],      # bias
    [0, 3],             # proj_size
    [False, True],      # hx given
))


@contextlib.contextmanager
def at_least_two_threads():
    """Runs the block with torch's intra-op threads raised to two or more (the CPU
    kernels only split their loops between threads then), restoring them after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Max absolute difference, relative to the largest magnitude of `want`."""
    scale = want.detach().abs().max().clamp_min(1e-30)
    return ((got.detach() - want.detach()).abs().max() / scale).item()


def make_pair(dtype=torch.float32, seed=None, device="cpu", fused_device=None, **cfg):
    """An nn.LSTM with fresh random weights and a FusedLSTM holding the same ones.

    Both on `device`, or the FusedLSTM on `fused_device` when given (to compare a
    device's kernels with nn.LSTM on the CPU).
    """
    if seed is not None:
        torch.manual_seed(seed)
    ref = nn.LSTM(dtype=dtype, device=device, **cfg)
    with torch.no_grad():  # wider than the default init, so every gate saturates somewhere
        for p in ref.parameters():
            p.uniform_(-0.6, 0.6)
    fused = FusedLSTM(dtype=dtype, device=device, **cfg)
    fused.load_state_dict(ref.state_dict(), strict=True)
    return ref, fused.to(fused_device or device)


def layer_args(dtype=torch.float64, T=5, B=3, I=4, H=5, proj=0, bias=True, packed=False,
               bidirectional=False, reverse=False, requires_grad=True, device="cpu"):
    """Random arguments of the layer op lstm_layer_forward, all but need_backward:
    [x, batch_sizes, h0, c0, weights, has_bias, has_proj, bidirectional, reverse]."""
    g = dict(dtype=dtype, device=device, requires_grad=requires_grad)
    D = 2 if bidirectional else 1
    Hout = proj or H
    if packed:
        batch_sizes = torch.tensor(sorted(torch.randint(1, B + 1, (T,)).tolist(), reverse=True))
        batch_sizes[0] = B
        x = torch.randn(int(batch_sizes.sum()), I, **g)
    else:
        batch_sizes = None
        x = torch.randn(T, B, I, **g)
    weights = []
    for _ in range(D):
        weights += [(torch.rand(4 * H, I, **g) - 0.5).detach().requires_grad_(requires_grad),
                    (torch.rand(4 * H, Hout, **g) - 0.5).detach().requires_grad_(requires_grad)]
        if bias:
            weights += [torch.randn(4 * H, **g), torch.randn(4 * H, **g)]
        if proj:
            weights.append(torch.randn(Hout, H, **g))
    return [x, batch_sizes, torch.randn(D, B, Hout, **g), torch.randn(D, B, H, **g), weights,
            bias, bool(proj), bidirectional, reverse]


def layer_tensors(args):
    """The differentiable tensors of layer_args' list: x, h0, c0 and each weight."""
    return [args[0], args[2], args[3], *args[4]]


def gradcheck_op(op, args, need_backward=True):
    """gradcheck of op(*args, need_backward)[:3] (y, h_n, c_n) w.r.t. x, h0, c0 and every
    weight; args as layer_args makes them (batch_sizes and the flags stay fixed)."""
    def f(x, h0, c0, *weights):
        return op(x, args[1], h0, c0, list(weights), *args[5:], need_backward)[:3]

    return torch.autograd.gradcheck(f, layer_tensors(args))


def flat_outputs(out):
    """Flatten (output, (h_n, c_n)) to a list of tensors (PackedSequence -> its data)."""
    y, (h, c) = out
    if isinstance(y, PackedSequence):
        y = y.data
    return [y, h, c]


def grads_of(module, out, inputs, grad_outs):
    """Gradients of sum(out_k * grad_out_k) w.r.t. inputs + every parameter of module."""
    outs = flat_outputs(out)
    wrt = [t for t in inputs if t is not None] + list(module.parameters())
    loss = sum((o * g).sum() for o, g in zip(outs, grad_outs))
    return torch.autograd.grad(loss, wrt)


def assert_same_run(ref, fused, x, hx=None, tol=None, check_grads=True):
    """Run both modules on the same inputs and compare outputs and all gradients."""
    def call(m):
        return m(x) if hx is None else m(x, hx)

    out_r, out_f = call(ref), call(fused)
    flat_r, flat_f = flat_outputs(out_r), flat_outputs(out_f)
    dtype = flat_r[0].dtype
    tol = TOL[dtype] if tol is None else tol
    for name, a, b in zip(("output", "h_n", "c_n"), flat_f, flat_r):
        assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} vs nn.LSTM {tuple(b.shape)}"
        assert a.dtype == b.dtype, f"{name}: dtype {a.dtype} vs nn.LSTM {b.dtype}"
        err = rel_err(a, b)
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g}"
    if not check_grads:
        return
    grad_outs = [torch.randn_like(t) for t in flat_r]
    xin = x.data if isinstance(x, PackedSequence) else x
    inputs = [xin] + (list(hx) if hx is not None else [])
    g_r = grads_of(ref, out_r, inputs, grad_outs)
    g_f = grads_of(fused, out_f, inputs, grad_outs)
    names = ["input", "h0", "c0"][: len(inputs)] + [n for n, _ in fused.named_parameters()]
    for name, a, b in zip(names, g_f, g_r):
        err = rel_err(a, b)
        assert err <= tol, f"grad of {name}: relative error {err:.3g} > {tol:g}"
