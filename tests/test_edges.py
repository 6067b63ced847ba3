"""Edge cases of FusedLSTM against nn.LSTM on shared weights.

* sizes of one: T=1, B=1, H=1, I=1, each alone and all at once;
* empty tensors: batch 0 gives nn.LSTM's shapes (and gradients), length 0 raises
  nn.LSTM's exception type;
* PackedSequence with all lengths equal, and with a single sequence;
* second-order gradients: a gradient penalty differentiated again to the
  parameters, and gradgradcheck;
* backward in eval mode;
* NaN and inf in one input element or one weight propagate exactly where
  nn.LSTM's do, and saturating (large finite) inputs give nn.LSTM's values.

nn.LSTM always runs on the CPU; on the CUDA parametrization FusedLSTM runs on the
GPU with the same weights and inputs (cuDNN has neither double backward nor
backward in eval mode, so the CPU nn.LSTM is the reference there too).
"""

import math
import zlib

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pack_sequence

from fused_lstm import FusedLSTM
from helpers import make_pair, rel_err

TOL = {torch.float64: 1e-9, torch.float32: 1e-5}
pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # conftest.py


def pair(cfg, dtype=torch.float64, device="cpu", seed=0):
    """nn.LSTM (CPU) and FusedLSTM (on device) with the same fresh random weights."""
    return make_pair(dtype, seed=seed, fused_device=device, **cfg)


def leaf(shape, dtype=torch.float64, device="cpu"):
    return torch.randn(shape, dtype=dtype).to(device).requires_grad_(True)


def on(device, *ts):
    """Leaf copies of ts on device (None stays None)."""
    return [None if t is None else t.detach().to(device).requires_grad_(t.requires_grad)
            for t in ts]


def flat(out):
    y, (h, c) = out
    return [y.data if isinstance(y, PackedSequence) else y, h, c]


def run(module, x, hx, pack=None):
    """module on x (packed by pack(x) when given), and a random linear loss of all outputs."""
    inp = pack(x) if pack else x
    out = flat(module(inp) if hx is None else module(inp, hx))
    g = torch.Generator().manual_seed(123)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device)).sum()
               for o in out)
    return out, loss


def check_close(names, got, want, tol):
    for name, a, b in zip(names, got, want):
        assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} vs nn.LSTM {tuple(b.shape)}"
        assert a.dtype == b.dtype, f"{name}: dtype {a.dtype} vs nn.LSTM {b.dtype}"
        if b.numel():
            err = rel_err(a.cpu(), b.cpu())
            assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g}"


def check_against_nn_lstm(ref, fused, x, hx=None, device="cpu", pack=None, tol=None):
    """Outputs and gradients (input, h0, c0, parameters) of fused on device vs ref on CPU."""
    tol = TOL[x.dtype] if tol is None else tol
    xd, *hxd = on(device, x, *(hx or ()))
    hxd = tuple(hxd) if hx is not None else None
    out_r, loss_r = run(ref, x, hx, pack)
    out_f, loss_f = run(fused, xd, hxd, pack)
    check_close(["output", "h_n", "c_n"], out_f, out_r, tol)
    wrt_r = [x, *(hx or ())] + list(ref.parameters())
    wrt_f = [xd, *(hxd or ())] + list(fused.parameters())
    names = ["input"] + (["h0", "c0"] if hx else []) + [n for n, _ in fused.named_parameters()]
    check_close([f"grad of {n}" for n in names], torch.autograd.grad(loss_f, wrt_f),
                torch.autograd.grad(loss_r, wrt_r), tol)


def state(cfg, B, dtype=torch.float64):
    L = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    H = cfg["hidden_size"]
    return (leaf((L, B, cfg.get("proj_size", 0) or H), dtype),
            leaf((L, B, H), dtype))


# ---------------------------------------------------------------------------
# sizes of one
# ---------------------------------------------------------------------------

SIZES = {"T": dict(T=1), "B": dict(B=1), "H": dict(H=1), "I": dict(I=1),
         "all": dict(T=1, B=1, H=1, I=1)}


@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("which", list(SIZES))
def test_sizes_of_one(which, with_hx, device):
    size = dict(T=5, B=3, I=4, H=6)
    size.update(SIZES[which])
    cfg = dict(input_size=size["I"], hidden_size=size["H"], num_layers=2, bidirectional=True,
               batch_first=True, proj_size=2 if size["H"] > 2 else 0)
    ref, fused = pair(cfg, device=device)
    x = leaf((size["B"], size["T"], size["I"]))
    hx = state(cfg, size["B"]) if with_hx else None
    check_against_nn_lstm(ref, fused, x, hx, device)


def test_sizes_of_one_unbatched_single_layer():
    ref, fused = pair(dict(input_size=1, hidden_size=1))
    check_against_nn_lstm(ref, fused, leaf((1, 1)), (leaf((1, 1)), leaf((1, 1))))


# ---------------------------------------------------------------------------
# empty tensors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_batch_of_zero_like_nn_lstm(batch_first, with_hx, device):
    cfg = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, proj_size=2,
               batch_first=batch_first)
    ref, fused = pair(cfg, device=device)
    x = leaf((0, 5, 3) if batch_first else (5, 0, 3))
    hx = state(cfg, 0) if with_hx else None
    # check_against_nn_lstm compares shapes, dtypes and the (empty or all-zero) gradients
    check_against_nn_lstm(ref, fused, x, hx, device)
    grads = torch.autograd.grad(sum(o.sum() for o in flat(fused(x.to(device)))),
                                list(fused.parameters()))
    assert all(g.shape == p.shape and not g.any() for g, p in zip(grads, fused.parameters()))


ZERO_LENGTH = {
    "batched": ((0, 2, 3), None),
    "batch_first": ((2, 0, 3), None),
    "unbatched": ((0, 3), None),
    "zero-batch-too": ((0, 0, 3), None),
    "with-hx": ((0, 2, 3), ((1, 2, 4), (1, 2, 4))),
    "unbatched-with-hx": ((0, 3), ((1, 4), (1, 4))),
}


@pytest.mark.parametrize("case", list(ZERO_LENGTH))
def test_sequence_of_length_zero_raises_like_nn_lstm(case, device):
    x_shape, hx_shapes = ZERO_LENGTH[case]
    cfg = dict(input_size=3, hidden_size=4, batch_first=case == "batch_first")
    ref, fused = pair(cfg, device=device)
    x = torch.randn(x_shape, dtype=torch.float64)
    hx = tuple(torch.randn(s, dtype=torch.float64) for s in hx_shapes) if hx_shapes else None
    with pytest.raises(Exception) as want:
        ref(x, hx)
    with pytest.raises(Exception) as got:
        fused(x.to(device), None if hx is None else tuple(t.to(device) for t in hx))
    assert type(got.value) is type(want.value), f"{got.value!r} vs nn.LSTM {want.value!r}"


# ---------------------------------------------------------------------------
# packed corner cases
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
def test_packed_all_lengths_equal(enforce_sorted, with_hx, device):
    cfg = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2)
    T, B = 6, 4
    ref, fused = pair(cfg, device=device)
    x = leaf((T, B, 3))
    hx = state(cfg, B) if with_hx else None

    def pack(t):
        return pack_padded_sequence(t, torch.full((B,), T), enforce_sorted=enforce_sorted)

    check_against_nn_lstm(ref, fused, x, hx, device, pack)
    # and the packed run is the padded run
    hxd = None if hx is None else tuple(t.to(device) for t in hx)
    y_p, (h_p, c_p) = fused(pack(x.to(device)), hxd)
    y_d, (h_d, c_d) = fused(x.to(device), hxd)
    for a, b in ((y_p.data, pack(y_d).data), (h_p, h_d), (c_p, c_d)):
        assert rel_err(a.cpu(), b.cpu()) <= 1e-12


@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("T", [1, 7])
def test_packed_single_sequence(T, with_hx, device):
    cfg = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    ref, fused = pair(cfg, device=device)
    seq = leaf((T, 3))
    hx = state(cfg, 1) if with_hx else None
    check_against_nn_lstm(ref, fused, seq, hx, device, pack=lambda s: pack_sequence([s]))


# ---------------------------------------------------------------------------
# second-order gradients
# ---------------------------------------------------------------------------

DOUBLE_BACKWARD = {
    "one-layer": dict(input_size=3, hidden_size=4),
    "stacked-bidir-proj": dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True,
                               proj_size=2, batch_first=True),
    "no-bias": dict(input_size=2, hidden_size=3, num_layers=2, bias=False),
    "packed": dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True),
}


def gradient_penalty_grads(module, x, hx, pack):
    """Gradients w.r.t. x, h0, c0 and parameters of ||d loss/d x||^2 + ||d loss/d h0||^2."""
    _, loss = run(module, x, hx, pack)
    gx, gh0 = torch.autograd.grad(loss, [x, hx[0]], create_graph=True)
    penalty = (gx ** 2).sum() + (gh0 ** 2).sum()
    return torch.autograd.grad(penalty, [x, *hx] + list(module.parameters()))


@pytest.mark.parametrize("case", list(DOUBLE_BACKWARD))
def test_double_backward_matches_nn_lstm(case, device):
    cfg = DOUBLE_BACKWARD[case]
    ref, fused = pair(cfg, device=device)
    T, B = 5, 3
    x = leaf((B, T, cfg["input_size"]) if cfg.get("batch_first") else (T, B, cfg["input_size"]))
    hx = state(cfg, B)
    pack = None
    if case == "packed":
        def pack(t):
            return pack_padded_sequence(t, torch.tensor([2, 5, 3]), enforce_sorted=False)
    want = gradient_penalty_grads(ref, x, hx, pack)
    xd, h0, c0 = on(device, x, *hx)
    got = gradient_penalty_grads(fused, xd, (h0, c0), pack)
    names = ["input", "h0", "c0"] + [n for n, _ in fused.named_parameters()]
    check_close([f"second-order grad of {n}" for n in names], got, want, 1e-9)
    assert all(g.abs().max() > 0 for g in want[3:]), "penalty must reach every parameter"


def test_gradgradcheck_tiny_module(device):
    fused = FusedLSTM(2, 2, bidirectional=True, proj_size=1, dtype=torch.float64).to(device)
    names = [n for n, _ in fused.named_parameters()]
    x = leaf((2, 1, 2), device=device)
    h0, c0 = leaf((2, 1, 1), device=device), leaf((2, 1, 2), device=device)

    def f(x, h0, c0, *params):
        y, (h, c) = torch.func.functional_call(fused, dict(zip(names, params)), (x, (h0, c0)))
        return y, h, c

    params = [p.detach().clone().requires_grad_(True) for p in fused.parameters()]
    assert torch.autograd.gradgradcheck(f, (x, h0, c0, *params))


# ---------------------------------------------------------------------------
# backward in eval mode
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_backward_in_eval_mode(packed, device):
    cfg = dict(input_size=3, hidden_size=5, num_layers=3, bidirectional=True, dropout=0.5)
    ref, fused = pair(cfg, device=device)
    ref.eval()
    fused.eval()
    x = leaf((6, 4, 3))
    pack = None
    if packed:
        def pack(t):
            return pack_padded_sequence(t, torch.tensor([6, 2, 4, 1]), enforce_sorted=False)
    check_against_nn_lstm(ref, fused, x, state(cfg, 4), device, pack)


# ---------------------------------------------------------------------------
# NaN and inf propagate like nn.LSTM's; saturated gates give nn.LSTM's values
# ---------------------------------------------------------------------------

def assert_same_nonfinite(name, got, want, tol):
    got = got.detach().cpu()
    want = want.detach().cpu()
    assert torch.equal(torch.isnan(got), torch.isnan(want)), \
        f"{name}: NaN at {torch.isnan(got).sum()} places, nn.LSTM at {torch.isnan(want).sum()}"
    assert torch.equal(torch.isinf(got), torch.isinf(want)), \
        f"{name}: inf at {torch.isinf(got).sum()} places, nn.LSTM at {torch.isinf(want).sum()}"
    inf = torch.isinf(want)
    assert torch.equal(got[inf], want[inf]), f"{name}: infinities of another sign"
    finite = torch.isfinite(want)
    if finite.any():
        err = rel_err(got[finite], want[finite])
        assert err <= tol, f"{name}: finite values differ, relative error {err:.3g}"


NONFINITE_CFGS = {
    "bidir": dict(input_size=4, hidden_size=5, num_layers=2, bidirectional=True),
    "proj": dict(input_size=4, hidden_size=5, num_layers=2, proj_size=3, batch_first=True),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("cfg_name,where", [
    (name, where) for name, cfg in NONFINITE_CFGS.items()
    for where in ["input", "weight_ih_l0", "weight_hh_l0", "bias_hh_l1", "weight_hr_l0", "h0", "c0"]
    if where != "weight_hr_l0" or cfg.get("proj_size")])
def test_nan_and_inf_propagate_like_nn_lstm(cfg_name, where, value, dtype, device):
    cfg = NONFINITE_CFGS[cfg_name]
    ref, fused = pair(cfg, dtype, device, seed=7)
    T, B = 6, 3
    g = torch.Generator().manual_seed(zlib.crc32(f"{cfg_name}{where}{value}".encode()))
    x = torch.randn((B, T, 4) if cfg.get("batch_first") else (T, B, 4), generator=g, dtype=dtype)
    hx = None
    pick = torch.randint(0, 1 << 30, (4,), generator=g).tolist()
    if where == "input":
        t, b, i = pick[0] % T, pick[1] % B, pick[2] % 4
        x[(b, t, i) if cfg.get("batch_first") else (t, b, i)] = value
    elif where in ("h0", "c0"):  # (inf in c0 stays inf in c_n: f * inf)
        hx = tuple(t.detach() for t in state(cfg, B, dtype))
        s = hx[where == "c0"]
        s[pick[0] % s.shape[0], pick[1] % B, pick[2] % s.shape[2]] = value
    else:
        with torch.no_grad():
            for m in (ref, fused):
                w = getattr(m, where)
                w.view(-1)[pick[3] % w.numel()] = value
    with torch.no_grad():
        want = flat(ref(x, hx))
        got = flat(fused(x.to(device), None if hx is None else tuple(t.to(device) for t in hx)))
    for name, a, b in zip(("output", "h_n", "c_n"), got, want):
        assert_same_nonfinite(name, a, b, TOL[dtype])
    if value != value:  # NaN reaches the outputs: the check above is not vacuous
        assert torch.isnan(want[0]).any()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_saturating_inputs_match_nn_lstm(scale, dtype, device):
    cfg = dict(input_size=4, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2)
    ref, fused = pair(cfg, dtype, device, seed=3)
    x = (torch.randn(8, 3, 4, dtype=dtype) * scale).requires_grad_(True)
    hx = state(cfg, 3, dtype)
    check_against_nn_lstm(ref, fused, x, hx, device)
    with torch.no_grad():
        y, (h, c) = fused(x.to(device), tuple(t.to(device) for t in hx))
    assert torch.isfinite(y).all() and torch.isfinite(c).all()
    # saturated: the cell state of layer 0 has moved by whole units
    assert c[:2].abs().max() > 1.5


# relative error allowed per dtype in test_gate_nonlinearities_over_their_whole_range
SWEEP_RTOL = {torch.float32: 1e-6, torch.float64: 2e-15}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("H", [16, 21], ids=["full-vectors", "masked-tail"])
def test_gate_nonlinearities_over_their_whole_range(H, dtype, device):
    """One step whose gate pre-activations sweep -130..130 (past where exp
    overflows and underflows in float32), the small values where tanh switches
    formula (1/16 in float32, 0.625 in float64), the subnormals, +-inf and
    NaN: c and h stay within a few ulps of the same step computed by torch in
    float64."""
    g = torch.Generator().manual_seed(11)
    sweep = torch.cat([
        torch.linspace(-130, 130, 10001, dtype=torch.float64),
        torch.logspace(-10, 0.3, 1001, dtype=torch.float64),
        -torch.logspace(-10, 0.3, 1001, dtype=torch.float64),
        torch.tensor([88.72, 88.73, 88.8, 88.9, -87.3, -87.4, -103.9, -104.0, -104.5, -150.0,
                      1 / 16, -1 / 16, 0.0625001, 0.625, -0.625, 0.62499999, 710.0, -710.0,
                      800.0, -800.0, 1e-40, -1e-40, 0.0, math.inf, -math.inf, math.nan],
                     dtype=torch.float64),
    ]).to(dtype)
    B = sweep.numel()
    x = sweep.view(1, B, 1)
    # every gate of every unit gets exactly the swept value as pre-activation
    # (h0 = 0: a recurrent term would add rounding that depends on the GEMM's
    # summation order, which at |a| = 130 is larger than the error looked for)
    w_ih = torch.ones(4 * H, 1, dtype=dtype)
    w_hh = torch.randn(4 * H, H, generator=g, dtype=dtype)
    h0 = torch.zeros(B, H, dtype=dtype)
    c0 = torch.randn(B, H, generator=g, dtype=dtype) * 3
    eps = SWEEP_RTOL[dtype]
    for c_init in (torch.zeros_like(c0), c0):
        _, h, c, _ = torch.ops.fused_lstm.lstm_layer_forward(
            x.to(device), None, h0[None].to(device), c_init[None].to(device),
            [w_ih.to(device), w_hh.to(device)], False, False, False, False, False)
        h, c = h[0], c[0]
        gates = sweep.double().view(B, 1).expand(B, 4 * H)
        i, f, o = (gates[:, k * H:(k + 1) * H].sigmoid() for k in (0, 1, 3))
        c_want = f * c_init.double() + i * gates[:, 2 * H:3 * H].tanh()
        h_want = o * c_want.tanh()
        for name, got, want in (("c", c.cpu(), c_want), ("h", h.cpu(), h_want)):
            assert torch.equal(torch.isnan(got), torch.isnan(want)), name
            ok = torch.isfinite(want)
            assert torch.isfinite(got[ok]).all(), name
            # c = f c0 + i g cancels when c0 is nonzero: there the error is
            # relative to |c0|, not to c
            if c_init is c0:
                bound = 2 * eps * c0.abs().max().double()
            else:
                bound = torch.finfo(dtype).tiny + eps * want[ok].abs()
            err = (got[ok].double() - want[ok]).abs()
            assert (err <= bound).all(), (
                f"{name}: worst error {err.max().item():.3g} at pre-activation "
                f"{sweep[(err - bound).argmax() // H].item()}")


@pytest.mark.parametrize("steps", [1, 4])
def test_inference_mode_bidirectional(device, steps):
    """Under torch.inference_mode the two directions of a layer, run on worker threads on
    the CPU, see the caller's inference mode (results as under no_grad)."""
    torch.manual_seed(22)
    m = FusedLSTM(3, 5, num_layers=2, bidirectional=True, device=device)
    x = torch.randn(steps, 2, 3, device=device)
    with torch.no_grad():
        want = m(x)
    with torch.inference_mode():
        got = m(x)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1][0], want[1][0], rtol=0, atol=0)
