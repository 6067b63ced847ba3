"""Shared test helpers: paired modules, random inputs, error measures."""

import contextlib
import copy
import itertools

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from fused_lstm import FusedLSTM

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
# cuDNN's float32 results are off by up to 2.6e-5 against float64 (benchmarks/NOTES.md,
# "CUDA: accuracy"): FusedLSTM on CUDA is held to 1e-5 or twice cuDNN's own error.
CUDA_F32_TOL = 1e-5

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


def norm_rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| (2-norms over all elements)."""
    got, want = got.detach().double(), want.detach().double()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def _to_cpu64(t):
    return t.detach().to("cpu", torch.float64).requires_grad_(t.requires_grad)


def assert_matches_cudnn(ref, fused, x, hx=None):
    """FusedLSTM on CUDA against cuDNN's nn.LSTM (ref) and against a float64 CPU copy of it.

    Outputs and every gradient (input, h0, c0, each parameter):
    - against float64, FusedLSTM's largest error is at most twice cuDNN's own, or
      CUDA_F32_TOL: where the two float32 results differ, FusedLSTM is not the less exact;
    - against cuDNN, the relative error (2-norm) is at most CUDA_F32_TOL, or twice cuDNN's
      own relative error against float64 where that is larger: two results can differ by
      the sum of their errors.
    """
    ref64 = copy.deepcopy(ref).to("cpu", torch.float64)
    if isinstance(x, PackedSequence):
        order = [None if t is None else t.cpu() for t in (x.sorted_indices, x.unsorted_indices)]
        x64 = PackedSequence(_to_cpu64(x.data), x.batch_sizes, *order)
    else:
        x64 = _to_cpu64(x)
    hx64 = None if hx is None else tuple(_to_cpu64(t) for t in hx)
    runs = []
    grad_outs = None
    for m, xi, hi in ((ref, x, hx), (fused, x, hx), (ref64, x64, hx64)):
        out = m(xi) if hi is None else m(xi, hi)
        flat = flat_outputs(out)
        if grad_outs is None:
            grad_outs = [torch.randn_like(t) for t in flat]
        xin = xi.data if isinstance(xi, PackedSequence) else xi
        inputs = [xin] + (list(hi) if hi is not None else [])
        grads = grads_of(m, out, inputs, [g.to(t) for g, t in zip(grad_outs, flat)])
        runs.append([t.detach() for t in flat] + list(grads))
    names = (["output", "h_n", "c_n", "grad of input"]
             + (["grad of h0", "grad of c0"] if hx is not None else [])
             + [f"grad of {n}" for n, _ in fused.named_parameters()])
    for name, c, f, want in zip(names, *runs):
        assert f.shape == c.shape and f.dtype == c.dtype, name
        err_f, err_c = rel_err(f.cpu().double(), want), rel_err(c.cpu().double(), want)
        assert err_f <= max(2 * err_c, CUDA_F32_TOL), (
            f"{name}: max error {err_f:.3g} against float64, cuDNN's is {err_c:.3g}")
        err, cudnn_err = norm_rel_err(f, c), norm_rel_err(c.cpu(), want)
        assert err <= max(2 * cudnn_err, CUDA_F32_TOL), (
            f"{name}: relative error {err:.3g} against cuDNN > {CUDA_F32_TOL:g}, and cuDNN's "
            f"own against float64 is {cudnn_err:.3g}")


def assert_matches_nn_lstm(ref, fused, x, hx=None):
    """The parity check for the device both modules are on: float32 on CUDA against
    cuDNN by assert_matches_cudnn, everything else by assert_same_run (TOL)."""
    on_cuda = next(fused.parameters()).is_cuda
    if on_cuda and next(fused.parameters()).dtype == torch.float32:
        assert_matches_cudnn(ref, fused, x, hx)
    else:
        assert_same_run(ref, fused, x, hx)
