"""The fused_lstm ops themselves: opcheck, gradcheck, and the compiled path in use."""

import pytest
import torch

import fused_lstm
from fused_lstm.reference import lstm_layer_reference
from helpers import gradcheck_layer_op

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
    assert gradcheck_layer_op(args, reverse)


@pytest.mark.parametrize("need_backward", [False, True])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", CASES[:4], ids=IDS[:4])
def test_opcheck_forward(case, reverse, need_backward):
    args = layer_args(dtype=torch.float32, **case)
    torch.library.opcheck(OPS.lstm_layer_forward, (*args, reverse, need_backward))


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", CASES[:4], ids=IDS[:4])
def test_opcheck_backward(case, reverse):
    args = layer_args(dtype=torch.float32, requires_grad=False, **case)
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
    calls = []
    real = torch.ops.fused_lstm.lstm_layer_forward

    class Spy:
        def __call__(self, *a):
            calls.append(a[9])
            return real(*a)

    import fused_lstm.ops as ops_mod
    monkeypatch.setattr(ops_mod.torch.ops.fused_lstm, "lstm_layer_forward", Spy())
    monkeypatch.setattr(ops_mod, "lstm_layer_reference",
                        lambda *a: pytest.fail("reference fallback used"))
    m = fused_lstm.FusedLSTM(3, 4, num_layers=2, bidirectional=True)
    m(torch.randn(5, 2, 3))
    assert calls == [False, True, False, True]
    assert fused_lstm.extension_loaded()
    # and the C++ kernels are registered for the CPU
    assert torch._C._dispatch_has_kernel_for_dispatch_key("fused_lstm::lstm_layer_forward", "CPU")


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
