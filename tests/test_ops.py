"""The fused_lstm ops themselves: opcheck, gradcheck, and the compiled path in use."""

import pytest
import torch

import fused_lstm
from fused_lstm.reference import lstm_layer_reference
from helpers import gradcheck_op

pytestmark = pytest.mark.skipif(not fused_lstm.extension_loaded(),
                                reason="compiled extension not built")

OPS = torch.ops.fused_lstm


def layer_args(dtype=torch.float64, T=5, B=3, I=4, H=5, proj=0, bias=True, packed=False,
               requires_grad=True, device="cpu"):
    """Random arguments of lstm_layer_forward (without reverse/need_backward)."""
    g = dict(dtype=dtype, device=device, requires_grad=requires_grad)
    Hout = proj or H
    if packed:
        batch_sizes = torch.tensor(sorted(torch.randint(1, B + 1, (T,)).tolist(), reverse=True))
        batch_sizes[0] = B
        x = torch.randn(int(batch_sizes.sum()), I, **g)
    else:
        batch_sizes = None
        x = torch.randn(T, B, I, **g)
    return [
        x, batch_sizes,
        torch.randn(B, Hout, **g), torch.randn(B, H, **g),
        (torch.rand(4 * H, I, **g) - 0.5).detach().requires_grad_(requires_grad),
        (torch.rand(4 * H, Hout, **g) - 0.5).detach().requires_grad_(requires_grad),
        torch.randn(4 * H, **g) if bias else None,
        torch.randn(4 * H, **g) if bias else None,
        torch.randn(Hout, H, **g) if proj else None,
    ]


CASES = [dict(), dict(proj=2), dict(bias=False), dict(packed=True), dict(packed=True, proj=3),
         dict(B=1, T=1, I=1, H=1)]
IDS = ["dense", "proj", "nobias", "packed", "packed-proj", "ones"]


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_reference(case, reverse):
    args = layer_args(requires_grad=False, **case)
    got = OPS.lstm_layer_forward(*args, reverse, False)[:3]
    want = lstm_layer_reference(*args, reverse)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck_op(case, reverse):
    args = layer_args(**case)
    assert gradcheck_op(OPS.lstm_layer_forward, args, reverse, True)


# bfloat16 takes its own CPU route (bfloat16 GEMM operands) where the CPU has
# AVX512_BF16; its saved buffers must still match the fake kernels.
DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
@pytest.mark.parametrize("need_backward", [False, True])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", CASES[:4], ids=IDS[:4])
def test_opcheck_forward(case, reverse, need_backward, dtype):
    args = layer_args(dtype=dtype, **case)
    torch.library.opcheck(OPS.lstm_layer_forward, (*args, reverse, need_backward))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", CASES[:4], ids=IDS[:4])
def test_opcheck_backward(case, reverse, dtype):
    args = layer_args(dtype=dtype, requires_grad=False, **case)
    y, h_n, c_n, gates, cells = OPS.lstm_layer_forward(*args, reverse, True)
    grads = [torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n)]
    torch.library.opcheck(OPS.lstm_layer_backward, (*grads, *args, y, gates, cells, reverse))


def test_inference_saves_nothing():
    args = layer_args(dtype=torch.float32, requires_grad=False)
    _, _, _, gates, cells = OPS.lstm_layer_forward(*args, False, False)
    assert gates.numel() == 0 and cells.numel() == 0
    _, _, _, gates, cells = OPS.lstm_layer_forward(*args, False, True)
    assert gates.shape == (15, 20) and cells.shape == (15, 5)


def test_module_runs_on_the_compiled_op(monkeypatch):
    """FusedLSTM's forward reaches torch.ops.fused_lstm, not the Python reference."""
    import fused_lstm.ops as ops_mod
    calls = []

    def spy(name):
        real = getattr(torch.ops.fused_lstm, name)

        def call(*a):
            calls.append(name)
            return real(*a)
        return call

    for name in ("lstm_layer_forward", "lstm_bidirectional_layer_forward"):
        monkeypatch.setattr(ops_mod.torch.ops.fused_lstm, name, spy(name))
    monkeypatch.setattr(ops_mod, "lstm_layer_reference",
                        lambda *a: pytest.fail("reference fallback used"))
    fused_lstm.FusedLSTM(3, 4, num_layers=2)(torch.randn(5, 2, 3))
    assert calls == ["lstm_layer_forward"] * 2
    calls.clear()
    # on the CPU both directions of a bidirectional layer run in one op
    fused_lstm.FusedLSTM(3, 4, num_layers=2, bidirectional=True)(torch.randn(5, 2, 3))
    assert calls == ["lstm_bidirectional_layer_forward"] * 2
    assert fused_lstm.extension_loaded()
    for name in ("lstm_layer_forward", "lstm_layer_backward", "lstm_bidirectional_layer_forward",
                 "lstm_bidirectional_layer_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fused_lstm::{name}", "CPU")


def test_op_rejects_bad_shapes_cleanly():
    args = layer_args(dtype=torch.float32, requires_grad=False)
    bad = list(args)
    bad[2] = torch.randn(7, 5)  # h0 with the wrong batch
    with pytest.raises(RuntimeError, match=r"h0 of size \[3, 5\], got \[7, 5\]"):
        OPS.lstm_layer_forward(*bad, False, False)
    bad = list(args)
    bad[0] = args[0].double()
    with pytest.raises(RuntimeError, match="dtype"):
        OPS.lstm_layer_forward(*bad, False, False)


def test_backward_op_rejects_mismatched_gradients():
    args = layer_args(dtype=torch.float32, requires_grad=False)
    y, h_n, c_n, gates, cells = OPS.lstm_layer_forward(*args, False, True)
    grads = [torch.randn_like(y), torch.randn(7, 5), torch.randn_like(c_n)]
    with pytest.raises(RuntimeError, match=r"grad_h_n of size \[3, 5\]"):
        OPS.lstm_layer_backward(*grads, *args, y, gates, cells, False)
    grads = [torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n)]
    with pytest.raises(RuntimeError, match="need_backward=True"):
        OPS.lstm_layer_backward(*grads, *args, y, gates[:0], cells[:0], False)


def bidirectional_args(dtype=torch.float64, requires_grad=True, **case):
    """Random arguments of lstm_bidirectional_layer_forward (without need_backward)."""
    fwd = layer_args(dtype=dtype, requires_grad=requires_grad, **case)
    rev = layer_args(dtype=dtype, requires_grad=requires_grad, **case)

    def both(a, b):  # [2, B, ...]: one state per direction
        return torch.stack([a, b]).detach().requires_grad_(requires_grad)

    return [fwd[0], fwd[1], both(fwd[2], rev[2]), both(fwd[3], rev[3]), *fwd[4:], *rev[4:]]


BIDIR_CASES = [dict(), dict(proj=2), dict(bias=False), dict(packed=True)]
BIDIR_IDS = ["dense", "proj", "nobias", "packed"]


@pytest.mark.parametrize("case", BIDIR_CASES, ids=BIDIR_IDS)
def test_bidirectional_op_matches_two_directions(case):
    torch.manual_seed(6)
    args = bidirectional_args(requires_grad=False, **case)
    x, bs, h0, c0 = args[:4]
    y, h_n, c_n, *_ = OPS.lstm_bidirectional_layer_forward(*args, False)
    want_f = lstm_layer_reference(x, bs, h0[0], c0[0], *args[4:9], False)
    want_r = lstm_layer_reference(x, bs, h0[1], c0[1], *args[9:14], True)
    torch.testing.assert_close(y, torch.cat([want_f[0], want_r[0]], -1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, torch.stack([want_f[1], want_r[1]]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_n, torch.stack([want_f[2], want_r[2]]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", BIDIR_CASES, ids=BIDIR_IDS)
def test_gradcheck_bidirectional_op(case):
    torch.manual_seed(7)
    args = bidirectional_args(**case)
    assert gradcheck_op(OPS.lstm_bidirectional_layer_forward, args, True)


@pytest.mark.parametrize("need_backward", [False, True])
@pytest.mark.parametrize("case", BIDIR_CASES, ids=BIDIR_IDS)
def test_opcheck_bidirectional_ops(case, need_backward):
    torch.manual_seed(8)
    args = bidirectional_args(dtype=torch.float32, **case)
    torch.library.opcheck(OPS.lstm_bidirectional_layer_forward, (*args, need_backward))
    plain = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    y, h_n, c_n, g, s, g_r, s_r = OPS.lstm_bidirectional_layer_forward(*plain, True)
    grads = [torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n)]
    torch.library.opcheck(OPS.lstm_bidirectional_layer_backward,
                          (*grads, *plain, y, g, s, g_r, s_r))
