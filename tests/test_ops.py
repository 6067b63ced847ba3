"""The fused_lstm layer ops themselves: opcheck, gradcheck, and the compiled path in use.

The reference, gradcheck and opcheck tests run on every device (conftest.py); the rest
on the CPU. batch_sizes of a packed call stays on the CPU on every device.
"""

import pytest
import torch

import fused_lstm
from fused_lstm.reference import lstm_layer_reference, split_layer_weights
from helpers import gradcheck_op, layer_args

pytestmark = pytest.mark.skipif(not fused_lstm.extension_loaded(),
                                reason="compiled extension not built")

OPS = torch.ops.fused_lstm

CASES = [dict(), dict(proj=2), dict(bias=False), dict(packed=True), dict(packed=True, proj=3),
         dict(B=1, T=1, I=1, H=1)]
IDS = ["dense", "proj", "nobias", "packed", "packed-proj", "ones"]
# one direction, run forward or back to front, and both directions of a bidirectional layer
DIRECTIONS = [dict(), dict(reverse=True), dict(bidirectional=True)]
DIRECTION_IDS = ["fwd", "rev", "bidir"]


def by_direction(args):
    """The reference of each direction of the layer op's call: (y, h_n, c_n) of each."""
    x, batch_sizes, h0, c0, weights, has_bias, has_proj, bidirectional, reverse = args
    D = 2 if bidirectional else 1
    return [lstm_layer_reference(x, batch_sizes, h0[d], c0[d], *w, d == 1 or reverse)
            for d, w in enumerate(split_layer_weights(weights, has_bias, has_proj, D))]


@pytest.mark.parametrize("direction", DIRECTIONS, ids=DIRECTION_IDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_reference(routed_device, case, direction):
    args = layer_args(requires_grad=False, device=routed_device, **case, **direction)
    y, h_n, c_n, saved = OPS.lstm_layer_forward(*args, False)
    want = by_direction(args)
    close = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, torch.cat([w[0] for w in want], -1), **close)
    torch.testing.assert_close(h_n, torch.stack([w[1] for w in want]), **close)
    torch.testing.assert_close(c_n, torch.stack([w[2] for w in want]), **close)
    assert len(saved) == 2 * len(want) and all(t.numel() == 0 for t in saved)


@pytest.mark.parametrize("direction", DIRECTIONS, ids=DIRECTION_IDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck_op(routed_device, case, direction):
    torch.manual_seed(7)
    args = layer_args(device=routed_device, **case, **direction)
    assert gradcheck_op(OPS.lstm_layer_forward, args)


# bfloat16 takes its own CPU route (bfloat16 GEMM operands) where the CPU has
# AVX512_BF16, and tensor-core GEMMs on CUDA; its saved buffers must still match the
# fake kernels.
DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
@pytest.mark.parametrize("need_backward", [False, True])
@pytest.mark.parametrize("direction", DIRECTIONS, ids=DIRECTION_IDS)
@pytest.mark.parametrize("case", CASES[:4], ids=IDS[:4])
def test_opcheck_forward(device, case, direction, need_backward, dtype):
    args = layer_args(dtype=dtype, device=device, **case, **direction)
    torch.library.opcheck(OPS.lstm_layer_forward, (*args, need_backward))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
@pytest.mark.parametrize("direction", DIRECTIONS, ids=DIRECTION_IDS)
@pytest.mark.parametrize("case", CASES[:4], ids=IDS[:4])
def test_opcheck_backward(device, case, direction, dtype):
    args = layer_args(dtype=dtype, device=device, requires_grad=False, **case, **direction)
    y, h_n, c_n, saved = OPS.lstm_layer_forward(*args, True)
    grads = [torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n)]
    torch.library.opcheck(OPS.lstm_layer_backward, (*grads, *args, y, saved))


def test_backward_gives_a_gradient_for_each_weight_in_order():
    args = layer_args(requires_grad=False, proj=2, bidirectional=True)
    y, h_n, c_n, saved = OPS.lstm_layer_forward(*args, True)
    g = OPS.lstm_layer_backward(torch.randn_like(y), torch.randn_like(h_n),
                                torch.randn_like(c_n), *args, y, saved)
    assert [t.shape for t in g[3]] == [w.shape for w in args[4]]


@pytest.mark.parametrize("direction", DIRECTIONS, ids=DIRECTION_IDS)
def test_inference_saves_nothing(direction):
    args = layer_args(dtype=torch.float32, requires_grad=False, **direction)
    D = len(by_direction(args))
    _, _, _, saved = OPS.lstm_layer_forward(*args, False)
    assert len(saved) == 2 * D and all(t.numel() == 0 for t in saved)
    _, _, _, saved = OPS.lstm_layer_forward(*args, True)
    assert [tuple(t.shape) for t in saved] == [(15, 20), (15, 5)] * D


def test_module_runs_on_the_compiled_op(monkeypatch):
    """FusedLSTM's forward reaches torch.ops.fused_lstm, one call per layer (both
    directions in one), not the Python reference."""
    import fused_lstm.ops as ops_mod
    calls = []
    real = torch.ops.fused_lstm.lstm_layer_forward

    def spy(*a):
        calls.append(a[7])  # bidirectional
        return real(*a)

    monkeypatch.setattr(ops_mod.torch.ops.fused_lstm, "lstm_layer_forward", spy)
    monkeypatch.setattr(ops_mod, "lstm_layers_reference",
                        lambda *a: pytest.fail("reference fallback used"))
    fused_lstm.FusedLSTM(3, 4, num_layers=2)(torch.randn(5, 2, 3))
    assert calls == [False] * 2
    calls.clear()
    fused_lstm.FusedLSTM(3, 4, num_layers=2, bidirectional=True)(torch.randn(5, 2, 3))
    assert calls == [True] * 2
    assert fused_lstm.extension_loaded()
    for name in ("lstm_layer_forward", "lstm_layer_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fused_lstm::{name}", "CPU")


def test_op_rejects_bad_shapes_cleanly():
    args = layer_args(dtype=torch.float32, requires_grad=False)
    bad = list(args)
    bad[2] = torch.randn(1, 7, 5)  # h0 with the wrong batch
    with pytest.raises(RuntimeError, match=r"h0 of size \[3, 5\], got \[7, 5\]"):
        OPS.lstm_layer_forward(*bad, False)
    bad = list(args)
    bad[2] = torch.randn(3, 5)  # h0 without its directions
    with pytest.raises(RuntimeError, match=r"h0 and c0 of size \[1, B, \.\.\.\]"):
        OPS.lstm_layer_forward(*bad, False)
    bad = list(args)
    bad[0] = args[0].double()
    with pytest.raises(RuntimeError, match="dtype"):
        OPS.lstm_layer_forward(*bad, False)
    bad = list(args)
    bad[4] = args[4][:3]  # a bias without its partner
    with pytest.raises(RuntimeError, match=r"expected 4 weights \(4 per direction"):
        OPS.lstm_layer_forward(*bad, False)
    bad = list(args)
    bad[7], bad[8] = True, True  # bidirectional and reverse
    with pytest.raises(RuntimeError, match="expected reverse=False with bidirectional"):
        OPS.lstm_layer_forward(*bad, False)


def test_backward_op_rejects_mismatched_gradients():
    args = layer_args(dtype=torch.float32, requires_grad=False)
    y, h_n, c_n, saved = OPS.lstm_layer_forward(*args, True)
    grads = [torch.randn_like(y), torch.randn(1, 7, 5), torch.randn_like(c_n)]
    with pytest.raises(RuntimeError, match=r"grad_h_n of size \[1, 3, 5\]"):
        OPS.lstm_layer_backward(*grads, *args, y, saved)
    grads = [torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n)]
    with pytest.raises(RuntimeError, match="need_backward=True"):
        OPS.lstm_layer_backward(*grads, *args, y, [t[:0] for t in saved])
    with pytest.raises(RuntimeError, match="expected 2 saved buffers"):
        OPS.lstm_layer_backward(*grads, *args, y, saved[:1])
