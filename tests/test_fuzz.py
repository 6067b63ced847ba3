"""Differential fuzzing of FusedLSTM against nn.LSTM with hypothesis.

Two strategies:

* valid calls over the whole configuration space (layers, directions,
  batch_first, bias, projection, sizes down to 1, initial state or not,
  packed input with random lengths): output, h_n, c_n and every gradient
  (input, h0, c0, each parameter) agree with nn.LSTM in float64 to 1e-9,
  relative to the largest magnitude;
* malformed calls (wrong feature size, wrong ndim, bad hx shapes, ndims,
  tuple lengths and dtypes, bad input dtypes, empty tensors, unbatched input
  with batched hx): FusedLSTM raises the exception type nn.LSTM raises, or
  succeeds with nn.LSTM's result where nn.LSTM succeeds. The few calls nn.LSTM
  accepts by accident FusedLSTM rejects (see check_same_outcome), and malformed
  packed calls are compared with nn.LSTM on the padded batch.

Runs are derandomized and use no example database, so CI sees the same examples
every time. nn.LSTM always runs on the CPU; on the CUDA parametrization FusedLSTM
runs on the GPU with the same weights and inputs.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from helpers import make_pair, rel_err

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # conftest.py

TOL64 = 1e-9
TOL = {torch.float64: TOL64, torch.float32: 1e-5}

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_BAD = settings(FUZZ, max_examples=30)  # per mutation


def pair(cfg, dtype, seed, device="cpu"):
    """nn.LSTM (CPU) and FusedLSTM (on device) with the same fresh random weights."""
    return make_pair(dtype, seed=seed, fused_device=device, **cfg)


def to_dev(t, device):
    """A leaf copy of t on device, keeping requires_grad."""
    if t is None or not isinstance(t, torch.Tensor):
        return t
    return t.detach().to(device).requires_grad_(t.requires_grad)


def flat(out):
    y, (h, c) = out
    return [y.data if isinstance(y, PackedSequence) else y, h, c]


# ---------------------------------------------------------------------------
# valid calls: outputs and all gradients within 1e-9 of nn.LSTM (float64)
# ---------------------------------------------------------------------------

@st.composite
def valid_calls(draw):
    H = draw(st.integers(1, 6))
    cfg = dict(
        input_size=draw(st.integers(1, 5)),
        hidden_size=H,
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
        proj_size=draw(st.integers(1, H - 1)) if H > 1 and draw(st.booleans()) else 0,
    )
    T, B = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    packed = draw(st.booleans())
    call = dict(T=T, B=B, packed=packed, with_hx=draw(st.booleans()),
                unbatched=False if packed else draw(st.booleans()),
                lengths=None, enforce_sorted=False,
                seed=draw(st.integers(0, 2 ** 31 - 1)))
    if packed:
        lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
        call["enforce_sorted"] = draw(st.booleans())
        if call["enforce_sorted"]:
            lengths.sort(reverse=True)
        call["lengths"] = lengths
    return cfg, call


def build_inputs(cfg, call, dtype=torch.float64):
    """Leaf tensors x (padded), h0, c0 with fresh random values."""
    g = torch.Generator().manual_seed(call["seed"])
    T, B, I, H = call["T"], call["B"], cfg["input_size"], cfg["hidden_size"]
    L = cfg["num_layers"] * (2 if cfg["bidirectional"] else 1)
    Hout = cfg["proj_size"] or H
    if call["unbatched"]:
        x_shape, h_shape, c_shape = (T, I), (L, Hout), (L, H)
    else:
        x_shape = (B, T, I) if cfg["batch_first"] else (T, B, I)
        h_shape, c_shape = (L, B, Hout), (L, B, H)
    x = torch.randn(x_shape, generator=g, dtype=dtype).requires_grad_(True)
    hx = None
    if call["with_hx"]:
        hx = (torch.randn(h_shape, generator=g, dtype=dtype).requires_grad_(True),
              torch.randn(c_shape, generator=g, dtype=dtype).requires_grad_(True))
    return x, hx


def run_and_grads(module, x, hx, call, cfg, grad_outs=None, seed=0):
    """Forward on (x, hx), then grads of a random linear loss w.r.t. x, hx, parameters."""
    inp = x
    if call["packed"]:
        inp = pack_padded_sequence(x, torch.tensor(call["lengths"]), cfg["batch_first"],
                                   enforce_sorted=call["enforce_sorted"])
    out = flat(module(inp) if hx is None else module(inp, hx))
    if grad_outs is None:
        g = torch.Generator().manual_seed(seed)
        grad_outs = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in out]
    loss = sum((o * go.to(o.device)).sum() for o, go in zip(out, grad_outs))
    wrt = [x] + (list(hx) if hx is not None else []) + list(module.parameters())
    return out, torch.autograd.grad(loss, wrt), grad_outs


def assert_close_all(names, got, want, tol):
    for name, a, b in zip(names, got, want):
        assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} vs nn.LSTM {tuple(b.shape)}"
        assert a.dtype == b.dtype, f"{name}: dtype {a.dtype} vs nn.LSTM {b.dtype}"
        if b.numel() == 0:
            continue
        err = rel_err(a.cpu(), b.cpu())
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g}"


@FUZZ
@given(case=valid_calls())
def test_valid_calls_match_nn_lstm(device, case):
    cfg, call = case
    ref, fused = pair(cfg, torch.float64, call["seed"], device)
    x, hx = build_inputs(cfg, call)
    out_r, grads_r, grad_outs = run_and_grads(ref, x, hx, call, cfg, seed=call["seed"] + 1)
    xd = to_dev(x, device)
    hxd = None if hx is None else tuple(to_dev(t, device) for t in hx)
    out_f, grads_f, _ = run_and_grads(fused, xd, hxd, call, cfg, grad_outs)
    assert_close_all(["output", "h_n", "c_n"], out_f, out_r, TOL64)
    names = (["input"] + (["h0", "c0"] if hx is not None else [])
             + [f"grad of {n}" for n, _ in fused.named_parameters()])
    assert_close_all(names, grads_f, grads_r, TOL64)


# ---------------------------------------------------------------------------
# malformed calls: the same exception type as nn.LSTM, or the same result
# ---------------------------------------------------------------------------

MUTATIONS = ["feature", "ndim", "h_shape", "c_shape", "hx_ndim", "hx_len", "hx_tensor",
             "hx_dtype", "x_dtype", "empty_T", "empty_B", "unbatched_batched_hx"]
OTHER_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64,
                torch.int32, torch.uint8, torch.bool, torch.complex64]


def random_tensor(shape, dtype, g):
    if dtype == torch.bool:
        return torch.randn(shape, generator=g) > 0
    if dtype.is_complex:
        return torch.randn(shape, generator=g, dtype=dtype)
    if not dtype.is_floating_point:
        return torch.randint(0, 7, shape, generator=g, dtype=dtype)
    return torch.randn(shape, generator=g).to(dtype)


@st.composite
def malformed_calls(draw, mutation, packed=False):
    H = draw(st.integers(1, 4))
    cfg = dict(input_size=draw(st.integers(1, 4)), hidden_size=H,
               num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
               batch_first=draw(st.booleans()), bias=draw(st.booleans()),
               proj_size=draw(st.integers(1, H - 1)) if H > 1 and draw(st.booleans()) else 0)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    T, B = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    unbatched = False if packed else draw(st.booleans())
    with_hx = draw(st.booleans())
    if mutation in ("h_shape", "c_shape", "hx_ndim", "hx_len", "hx_tensor", "hx_dtype",
                    "unbatched_batched_hx"):
        with_hx = True
    if mutation == "unbatched_batched_hx":
        unbatched = True
    seed = draw(st.integers(0, 2 ** 31 - 1))
    g = torch.Generator().manual_seed(seed)
    I = cfg["input_size"]
    L = cfg["num_layers"] * (2 if cfg["bidirectional"] else 1)
    Hout = cfg["proj_size"] or H
    x_dtype = dtype
    if mutation == "feature":  # (packing needs at least one feature)
        I = draw(st.sampled_from([f for f in range(int(packed), I + 4) if f != I]))
    if mutation == "empty_T":
        T = 0
    if mutation == "empty_B":
        B = 0
    if mutation == "x_dtype":
        x_dtype = draw(st.sampled_from([d for d in OTHER_DTYPES if d != dtype]))
    if mutation == "ndim":
        ndim = draw(st.sampled_from([0, 1, 4, 5]))
        x_shape = tuple(draw(st.integers(1, 3)) for _ in range(ndim - 1)) + ((I,) if ndim else ())
    elif unbatched:
        x_shape = (T, I)
    else:
        x_shape = (B, T, I) if cfg["batch_first"] else (T, B, I)
    x = random_tensor(x_shape, x_dtype, g)
    lengths = None
    if packed:
        lengths = sorted(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)),
                         reverse=True)
    hx = None
    stricter = None  # exception FusedLSTM raises where nn.LSTM silently accepts the call
    if with_hx:
        state_batch = () if unbatched else (B,)
        h_shape, c_shape = [L, *state_batch, Hout], [L, *state_batch, H]
        if mutation in ("h_shape", "c_shape"):
            shape = h_shape if mutation == "h_shape" else c_shape
            k = draw(st.integers(0, len(shape) - 1))
            shape[k] = draw(st.sampled_from([s for s in range(0, shape[k] + 3) if s != shape[k]]))
        if mutation == "unbatched_batched_hx":
            h_shape, c_shape = [L, 1, Hout], [L, 1, H]
        if mutation == "hx_ndim":
            which = draw(st.sampled_from(["h", "c", "both"]))
            ndim = draw(st.sampled_from([d for d in (1, 2, 3, 4) if d != len(h_shape)]))
            reshape = (lambda s: (s + [1, 1])[:ndim]) if ndim > len(h_shape) else \
                (lambda s: s[len(s) - ndim:])
            if which in ("h", "both"):
                h_shape = reshape(h_shape)
            if which in ("c", "both"):
                c_shape = reshape(c_shape)
        h_dtype = c_dtype = dtype
        if mutation == "hx_dtype":
            bad = draw(st.sampled_from([d for d in OTHER_DTYPES if d != dtype]))
            which = draw(st.sampled_from(["h", "c", "both"]))
            h_dtype = bad if which in ("h", "both") else dtype
            c_dtype = bad if which in ("c", "both") else dtype
            if which == "c":
                stricter = RuntimeError
        h = random_tensor(tuple(h_shape), h_dtype, g)
        c = random_tensor(tuple(c_shape), c_dtype, g)
        hx = (h, c)
        if mutation == "hx_len":
            n = draw(st.sampled_from([0, 1, 3]))
            hx = (h, c, h.clone())[:n]
            if draw(st.booleans()):
                hx = list(hx)
            if unbatched and n == 3:
                stricter = RuntimeError
        if mutation == "hx_tensor":
            hx = draw(st.sampled_from(["stack", "h", "stack3"]))
            hx = {"stack": torch.stack([h, c]) if Hout == H else h.unsqueeze(0).expand(2, *h.shape),
                  "h": h, "stack3": torch.stack([h, h, h])}[hx]
            if unbatched:
                stricter = TypeError
    return dict(cfg=cfg, dtype=dtype, mutation=mutation, x=x, hx=hx, lengths=lengths,
                seed=seed, stricter=stricter)


PACKED_MUTATIONS = ["feature", "h_shape", "c_shape", "hx_len", "hx_dtype", "x_dtype"]


def outcome(module, x, hx):
    try:
        return module(x) if hx is None else module(x, hx)
    except Exception as e:  # noqa: BLE001 - the exception is what is compared
        return e


def describe(case):
    hx = case["hx"]
    if isinstance(hx, (tuple, list)):
        hx = type(hx).__name__ + str([(tuple(t.shape), t.dtype) for t in hx])
    elif hx is not None:
        hx = f"Tensor{tuple(hx.shape)}"
    return (f"mutation={case['mutation']} cfg={case['cfg']} dtype={case['dtype']} "
            f"x={tuple(case['x'].shape)}:{case['x'].dtype} hx={hx}")


def hx_to(hx, device):
    if hx is None:
        return None
    if isinstance(hx, torch.Tensor):
        return hx.to(device)
    return type(hx)(t.to(device) for t in hx)


# Calls nn.LSTM silently accepts but FusedLSTM rejects, as nn.LSTM itself does in
# the neighbouring cases:
# * unbatched input with an hx of three states, or a stacked Tensor: nn.LSTM keeps
#   hx[0] and hx[1] of whatever it is given; FusedLSTM insists on a pair, as nn.LSTM
#   does for batched input (RuntimeError for another length, TypeError for a Tensor);
# * a c0 of another dtype than the input (float16, float32, int64, bool): nn.LSTM's
#   plain CPU path (float64, or any proj_size) promotes it; FusedLSTM raises
#   RuntimeError, as nn.LSTM's oneDNN path (float32 without projection) does, and as
#   nn.LSTM does for a mismatched h0.
def check_same_outcome(case, device, want, got):
    if not isinstance(want, Exception) and isinstance(got, Exception) and case["stricter"]:
        assert type(got) is case["stricter"], f"FusedLSTM raised {got!r}; {describe(case)}"
        return
    if isinstance(want, Exception):
        assert isinstance(got, Exception), \
            f"nn.LSTM raised {type(want).__name__}({want}), FusedLSTM succeeded; {describe(case)}"
        assert type(got) is type(want), (
            f"nn.LSTM raised {type(want).__name__}({want}), FusedLSTM raised "
            f"{type(got).__name__}({got}); {describe(case)}")
        return
    assert not isinstance(got, Exception), \
        f"nn.LSTM succeeded, FusedLSTM raised {type(got).__name__}({got}); {describe(case)}"
    tol = TOL[want[0].dtype] if want[0].dtype in TOL else 1e-5
    assert_close_all(["output", "h_n", "c_n"], flat(got), flat(want), tol)


@pytest.mark.parametrize("mutation", MUTATIONS)
@FUZZ_BAD
@given(data=st.data())
def test_malformed_calls_fail_like_nn_lstm(device, mutation, data):
    case = data.draw(malformed_calls(mutation), label="case")
    ref, fused = pair(case["cfg"], case["dtype"], case["seed"], device)
    want = outcome(ref, case["x"], case["hx"])
    got = outcome(fused, case["x"].to(device), hx_to(case["hx"], device))
    check_same_outcome(case, device, want, got)


# nn.LSTM checks nothing about a packed call on the CPU (torch 2.13): it silently
# accepts some malformed ones (a wrong feature size, an h0/c0 with extra rows or
# layers), fails inside its kernels with whatever error on others, and crashes the
# process on some (a sorted packed call whose c0 has too few layers segfaults). So a
# malformed packed call is never handed to it: FusedLSTM must raise the exception
# type nn.LSTM raises for the same call on the padded batch.
@pytest.mark.parametrize("mutation", PACKED_MUTATIONS)
@FUZZ_BAD
@given(data=st.data(), enforce_sorted=st.booleans())
def test_malformed_packed_calls_fail_like_padded_nn_lstm(device, mutation, data, enforce_sorted):
    case = data.draw(malformed_calls(mutation, packed=True), label="case")
    x = pack_padded_sequence(case["x"], torch.tensor(case["lengths"]), case["cfg"]["batch_first"],
                             enforce_sorted=enforce_sorted)
    ref, fused = pair(case["cfg"], case["dtype"], case["seed"], device)
    want = outcome(ref, case["x"], case["hx"])
    got = outcome(fused, x.to(device), hx_to(case["hx"], device))
    if not isinstance(want, Exception):  # only where nn.LSTM is known to be lax
        assert case["stricter"] and type(got) is case["stricter"], \
            f"FusedLSTM gave {got!r}; {describe(case)}"
        return
    check_same_outcome(case, device, want, got)
