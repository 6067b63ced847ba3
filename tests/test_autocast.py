"""Mixed precision: FusedLSTM under torch.autocast, and 16-bit modules without it."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence


from helpers import make_pair, rel_err

# nn.LSTM warns that it leaves oneDNN for projections; that is nn.LSTM's business here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:LSTM with projections is not supported with oneDNN")

CUDA = torch.cuda.is_available()
CFG = dict(input_size=8, hidden_size=16, num_layers=2, batch_first=True, bidirectional=True)


def outputs(out):
    y, (h, c) = out
    return [y.data if isinstance(y, PackedSequence) else y, h, c]


def run(module, x, hx=None, device_type=None, dtype=None, grad_seed=None):
    """Outputs of module(x) (under autocast when dtype is given), and, when grad_seed is
    given, the float32 gradients of a random projection of them w.r.t. x and the params."""
    xin = x.data if isinstance(x, PackedSequence) else x
    if grad_seed is not None:
        xin.requires_grad_(True)
    args = (x,) if hx is None else (x, hx)
    try:
        if dtype is None:
            outs = outputs(module(*args))
        else:
            with torch.autocast(device_type, dtype=dtype):
                outs = outputs(module(*args))
        if grad_seed is None:
            return outs, None
        gen = torch.Generator(device=xin.device).manual_seed(grad_seed)
        loss = sum((o.float() * torch.randn(o.shape, generator=gen, device=o.device)).sum()
                   for o in outs)
        grads = torch.autograd.grad(loss, [xin] + list(module.parameters()))
        return [o.detach() for o in outs], grads
    finally:
        xin.requires_grad_(False)


def errors(got, want):
    return [rel_err(a.double(), b.double()) for a, b in zip(got, want)]


def inputs(device="cpu", packed=False, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(4, 20, 8, device=device)
    if packed:
        x = pack_padded_sequence(x, torch.tensor([20, 11, 17, 3]), batch_first=True,
                                 enforce_sorted=False)
    return x


# ---- CPU autocast ----

# What oneDNN says where it has no kernel for a call on this CPU (bfloat16 LSTMs on CPUs
# without AVX-512, or under ONEDNN_MAX_CPU_ISA=AVX2).
ONEDNN_HAS_NO_KERNEL = "could not create a primitive descriptor"


def nn_lstm_or_none(call):
    """call() (nn.LSTM under autocast), or None where nn.LSTM itself cannot run it on this
    CPU. FusedLSTM is then judged against the bfloat16-rounded float64 yardstick below
    instead, never skipped."""
    try:
        return call()
    except RuntimeError as e:
        if ONEDNN_HAS_NO_KERNEL not in str(e):
            raise
        print(f"\nnn.LSTM cannot run this on this CPU ({str(e).splitlines()[0][:60]}...); "
              "judging FusedLSTM against float64 on bfloat16-rounded operands instead")
        return None


def bf16_rounded_float64(ref, x, hx=None, grad_seed=None):
    """The error any bfloat16 LSTM starts from: nn.LSTM in float64 on the weights, input and
    state rounded to bfloat16 (as autocast rounds them), exact otherwise. Returns run()'s
    (outputs, gradients); gradients w.r.t. the float64 copies."""
    ref64 = copy.deepcopy(ref).double()
    with torch.no_grad():
        for p in ref64.parameters():
            p.copy_(p.bfloat16().double())

    def rounded(t):
        return t.detach().bfloat16().double()

    x64 = x._replace(data=rounded(x.data)) if isinstance(x, PackedSequence) else rounded(x)
    hx64 = None if hx is None else tuple(rounded(t) for t in hx)
    return run(ref64, x64, hx64, grad_seed=grad_seed)


# nn.LSTM's dtypes under CPU bfloat16 autocast on its oneDNN path (dense input, no
# projection), where oneDNN has the kernel.
ONEDNN_AUTOCAST_DTYPES = [torch.bfloat16] * 3


@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
def test_cpu_autocast_bfloat16_forward(with_hx):
    ref, fused = make_pair(seed=0, **CFG)
    x = inputs()
    hx = None
    if with_hx:  # float32 state under autocast, as a caller would pass it
        hx = (torch.randn(4, 4, 16), torch.randn(4, 4, 16))
    want, _ = run(ref, x, hx)  # float32
    fused32, _ = run(fused, x, hx)
    ref_ac = nn_lstm_or_none(lambda: run(ref, x, hx, "cpu", torch.bfloat16)[0])
    fused_ac, _ = run(fused, x, hx, "cpu", torch.bfloat16)
    if ref_ac is None:
        ref_ac, _ = bf16_rounded_float64(ref, x, hx)
        ref_dtypes, yardstick = ONEDNN_AUTOCAST_DTYPES, "float64 on bfloat16 operands"
    else:
        ref_dtypes, yardstick = [t.dtype for t in ref_ac], "nn.LSTM"

    for name, a, b, dtype in zip(("output", "h_n", "c_n"), fused_ac, ref_ac, ref_dtypes):
        assert a.dtype == dtype, f"{name}: {a.dtype}, nn.LSTM gives {dtype} under autocast"
        assert a.shape == b.shape
    assert max(errors(fused32, want)) < 1e-5
    err_fused, err_ref = errors(fused_ac, want), errors(ref_ac, want)
    print(f"\nbfloat16 autocast, rel. error vs float32 (output, h_n, c_n): "
          f"FusedLSTM {['%.2e' % e for e in err_fused]}, "
          f"{yardstick} {['%.2e' % e for e in err_ref]}")
    for name, ef, er in zip(("output", "h_n", "c_n"), err_fused, err_ref):
        assert ef < 3e-2, f"{name}: error {ef:.3g} under bfloat16 autocast"
        assert ef <= 2 * er + 2e-3, f"{name}: error {ef:.3g} vs {yardstick}'s {er:.3g}"


@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_cpu_autocast_bfloat16_backward(packed):
    ref, fused = make_pair(seed=1, **CFG)
    x = inputs(packed=packed, seed=1)
    _, want = run(ref, x, grad_seed=7)  # float32 gradients
    _, got = run(fused, x, None, "cpu", torch.bfloat16, grad_seed=7)
    # gradients land in the parameters' (and input's) own dtype, as with nn.LSTM
    assert all(g.dtype == torch.float32 for g in got)
    err_fused = errors(got, want)
    msg = f"\nbfloat16 autocast backward, max rel. grad error: FusedLSTM {max(err_fused):.2e}"
    if not packed:
        got_ref = nn_lstm_or_none(
            lambda: run(ref, x, None, "cpu", torch.bfloat16, grad_seed=7)[1])
        yardstick = "nn.LSTM"
        if got_ref is None:
            _, got_ref = bf16_rounded_float64(ref, x, grad_seed=7)
            yardstick = "float64 on bfloat16 operands"
        err_ref = errors(got_ref, want)
        msg += f", {yardstick} {max(err_ref):.2e}"
        for ef, er in zip(err_fused, err_ref):
            assert ef <= 2 * er + 5e-3, f"grad error {ef:.3g} vs {yardstick}'s {er:.3g}"
    print(msg)
    assert max(err_fused) < 5e-2


@pytest.mark.parametrize("case", [dict(packed=True), dict(proj=5)], ids=["packed", "proj"])
def test_cpu_autocast_bfloat16_packed_and_proj_run(case):
    """Off nn.LSTM's oneDNN path FusedLSTM runs in float32 and returns nn.LSTM's dtypes."""
    ref, fused = make_pair(seed=2, proj_size=case.get("proj", 0), **CFG)
    x = inputs(packed=case.get("packed", False), seed=2)
    want, _ = run(ref, x)
    got, _ = run(fused, x, None, "cpu", torch.bfloat16)
    ref_got, _ = run(ref, x, None, "cpu", torch.bfloat16)
    assert [t.dtype for t in got] == [t.dtype for t in ref_got]
    err = errors(got, want)
    print(f"\nbfloat16 autocast, {list(case)[0]}, rel. error vs float32: {max(err):.2e}")
    assert max(err) < 1e-2  # at most the rounding of a bfloat16 output


# nn.LSTM's dtype under CPU autocast follows its implementation, not a rule: only its oneDNN
# path (dense input, no projection) is autocast; packed input stays float32, and with
# proj_size > 0 output and h_n are bfloat16 while c_n is float32. FusedLSTM returns the same.
@pytest.mark.parametrize("case", [dict(packed=True), dict(proj=5)], ids=["packed", "proj"])
def test_cpu_autocast_bfloat16_dtype_like_nn_lstm_off_onednn(case):
    ref, fused = make_pair(seed=2, proj_size=case.get("proj", 0), **CFG)
    x = inputs(packed=case.get("packed", False), seed=2)
    got, _ = run(fused, x, None, "cpu", torch.bfloat16)
    ref_out, _ = run(ref, x, None, "cpu", torch.bfloat16)
    assert [t.dtype for t in got] == [t.dtype for t in ref_out]


def test_cpu_autocast_float16():
    """float16 CPU autocast runs (nn.LSTM's oneDNN path may refuse it) and stays accurate."""
    ref, fused = make_pair(seed=3, **CFG)
    x = inputs(seed=3)
    want, _ = run(ref, x)
    got, grads = run(fused, x, None, "cpu", torch.float16, grad_seed=5)
    assert all(t.dtype == torch.float16 for t in got)
    _, want_grads = run(ref, x, grad_seed=5)
    err, gerr = max(errors(got, want)), max(errors(grads, want_grads))
    try:
        ref_ac, _ = run(ref, x, None, "cpu", torch.float16)
        note = f"nn.LSTM {max(errors(ref_ac, want)):.2e}"
    except RuntimeError as e:
        note = f"nn.LSTM fails ({str(e).splitlines()[0][:80]})"
    print(f"\nfloat16 CPU autocast, rel. error vs float32: FusedLSTM {err:.2e} "
          f"(grads {gerr:.2e}); {note}")
    assert err < 5e-3 and gerr < 2e-2


def test_autocast_disabled_region_is_float32():
    _, fused = make_pair(seed=4, **CFG)
    x = inputs(seed=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.autocast("cpu", enabled=False):
            y, (h, c) = fused(x)
    assert y.dtype == h.dtype == c.dtype == torch.float32


# ---- 16-bit modules and inputs, no autocast ----

@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_16bit_module_forward_backward(dtype, packed):
    ref, fused = make_pair(seed=5, proj_size=5, **CFG)
    ref64 = nn.LSTM(dtype=torch.float64, proj_size=5, **CFG)
    ref64.load_state_dict(ref.state_dict())
    ref.to(dtype)
    fused.to(dtype)
    x = inputs(packed=packed, seed=5)
    x16 = x._replace(data=x.data.to(dtype)) if packed else x.to(dtype)
    x64 = x._replace(data=x.data.double()) if packed else x.double()

    got, g_got = run(fused, x16, grad_seed=9)
    want, g_want = run(ref64, x64, grad_seed=9)
    assert all(t.dtype == dtype for t in got)
    assert all(g.dtype == dtype for g in g_got)
    err, gerr = errors(got, want), errors(g_got, g_want)
    ref_out, g_ref = run(ref, x16, grad_seed=9)
    err_ref, gerr_ref = errors(ref_out, want), errors(g_ref, g_want)
    print(f"\n{dtype} module: max rel. error vs float64: FusedLSTM {max(err):.2e} "
          f"(grads {max(gerr):.2e}), nn.LSTM {max(err_ref):.2e} (grads {max(gerr_ref):.2e})")
    for e, er in zip(err, err_ref):
        assert e <= 2 * er + 1e-2
    for e, er in zip(gerr, gerr_ref):
        assert e <= 2 * er + 2e-2


# ---- CUDA autocast ----

@pytest.mark.skipif(not CUDA, reason="CUDA not available")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_cuda_autocast(dtype):
    ref, fused = make_pair(seed=6, **CFG)
    ref.cuda()
    fused.cuda()
    x = inputs(device="cuda", seed=6)
    want, g_want = run(ref, x, grad_seed=3)
    ref_ac, _ = run(ref, x, None, "cuda", dtype)
    got, g_got = run(fused, x, None, "cuda", dtype, grad_seed=3)
    for name, a, b in zip(("output", "h_n", "c_n"), got, ref_ac):
        assert a.dtype == b.dtype, f"{name}: {a.dtype}, nn.LSTM gives {b.dtype} under autocast"
    err_fused, err_ref = errors(got, want), errors(ref_ac, want)
    print(f"\n{dtype} CUDA autocast: FusedLSTM {max(err_fused):.2e}, nn.LSTM {max(err_ref):.2e}")
    for ef, er in zip(err_fused, err_ref):
        assert ef <= 2 * er + 2e-3
    assert all(g.dtype == torch.float32 for g in g_got)
    assert max(errors(g_got, g_want)) < 5e-2
