"""FusedLSTM against nn.LSTM on shared weights: outputs and every gradient.

The grid, unbatched and packed tests run on every device (conftest.py's routed_device:
the CPU, and each route of CUDA's time loop) against nn.LSTM on the same device; on
CUDA in float32 that is cuDNN, judged against float64 as well (helpers.assert_matches_cudnn).
The threaded CPU routes are tested in test_threaded_routes.py.
"""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from helpers import (GRID, assert_matches_nn_lstm, assert_same_run, at_least_two_threads,
                     make_pair, rel_err)

DTYPES = [torch.float32, torch.float64]
DTYPE_IDS = ["f32", "f64"]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layers,bidir,batch_first,bias,proj,with_hx", GRID)
def test_grid(routed_device, dtype, layers, bidir, batch_first, bias, proj, with_hx):
    T, B, I, H = 7, 4, 5, 6
    g = dict(dtype=dtype, device=routed_device, requires_grad=True)
    ref, fused = make_pair(dtype, device=routed_device, input_size=I, hidden_size=H,
                           num_layers=layers, bias=bias, batch_first=batch_first,
                           bidirectional=bidir, proj_size=proj)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), **g)
    hx = None
    if with_hx:
        D = 2 if bidir else 1
        hx = (torch.randn(layers * D, B, proj or H, **g), torch.randn(layers * D, B, H, **g))
    assert_matches_nn_lstm(ref, fused, x, hx)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("proj", [0, 2])
def test_unbatched(routed_device, dtype, with_hx, proj):
    g = dict(dtype=dtype, device=routed_device, requires_grad=True)
    ref, fused = make_pair(dtype, device=routed_device, input_size=3, hidden_size=5,
                           num_layers=2, bidirectional=True, proj_size=proj)
    x = torch.randn(6, 3, **g)
    hx = None
    if with_hx:
        hx = (torch.randn(4, proj or 5, **g), torch.randn(4, 5, **g))
    assert_matches_nn_lstm(ref, fused, x, hx)


@pytest.mark.parametrize("batch_first", [False, True])
def test_non_contiguous_input_and_state(batch_first):
    ref, fused = make_pair(torch.float64, input_size=4, hidden_size=6, num_layers=2,
                           batch_first=batch_first)
    base = torch.randn(5, 9, 8, dtype=torch.float64)
    x = base[:, ::2, ::2].detach().requires_grad_(True)  # strided in two dims
    assert not x.is_contiguous()
    h = torch.randn(7, 2, 6, dtype=torch.float64).transpose(0, 1)[:, :5].detach()
    c = torch.randn(5, 2, 6, dtype=torch.float64).transpose(0, 1).detach()
    h.requires_grad_(True)
    c.requires_grad_(True)
    assert not h.is_contiguous() and not c.is_contiguous()
    assert_same_run(ref, fused, x, (h, c))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("bidir", [False, True])
@pytest.mark.parametrize("proj", [0, 3])
@pytest.mark.parametrize("with_hx", [False, True])
def test_packed_unsorted_lengths(routed_device, dtype, bidir, proj, with_hx):
    lengths = torch.tensor([3, 7, 1, 5, 7, 2])  # unsorted, with ties; stays on the CPU
    B, I, H, layers = len(lengths), 4, 5, 2
    g = dict(dtype=dtype, device=routed_device, requires_grad=True)
    ref, fused = make_pair(dtype, device=routed_device, input_size=I, hidden_size=H,
                           num_layers=layers, bidirectional=bidir, proj_size=proj,
                           batch_first=True)
    padded = torch.randn(B, int(lengths.max()), I, dtype=dtype, device=routed_device)
    x = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
    x.data.requires_grad_(True)
    hx = None
    if with_hx:
        D = 2 if bidir else 1
        hx = (torch.randn(layers * D, B, proj or H, **g), torch.randn(layers * D, B, H, **g))
    assert_matches_nn_lstm(ref, fused, x, hx)


def test_packed_output_is_packed_in_caller_order():
    ref, fused = make_pair(torch.float64, input_size=3, hidden_size=4, batch_first=True)
    lengths = torch.tensor([2, 5, 3])
    x = pack_padded_sequence(torch.randn(3, 5, 3, dtype=torch.float64), lengths,
                             batch_first=True, enforce_sorted=False)
    (out_r, (h_r, _)), (out_f, (h_f, _)) = ref(x), fused(x)
    assert type(out_f) is type(out_r)
    assert torch.equal(out_f.batch_sizes, out_r.batch_sizes)
    assert torch.equal(out_f.unsorted_indices, out_r.unsorted_indices)
    pad_f, len_f = pad_packed_sequence(out_f, batch_first=True)
    assert torch.equal(len_f, lengths)
    # h_n of each sequence is the output at its own last step, in the caller's order.
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(h_f[0, b], pad_f[b, n - 1], atol=1e-12)
    assert torch.allclose(h_f, h_r, atol=1e-10)


def test_dropout_matches_nn_lstm_under_same_seed():
    ref, fused = make_pair(torch.float64, input_size=4, hidden_size=5, num_layers=3,
                           dropout=0.4, bidirectional=True)
    ref.train()
    fused.train()
    x = torch.randn(6, 3, 4, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(123)
    y_r, _ = ref(x)
    torch.manual_seed(123)
    y_f, _ = fused(x)
    assert torch.allclose(y_f, y_r, rtol=0, atol=1e-10)
    # ... and dropout really is active: another seed gives another answer.
    torch.manual_seed(124)
    y_other, _ = fused(x)
    assert not torch.allclose(y_other, y_f)


def test_eval_mode_has_no_dropout():
    ref, fused = make_pair(torch.float64, input_size=4, hidden_size=5, num_layers=2, dropout=0.5)
    ref.eval()
    fused.eval()
    assert_same_run(ref, fused, torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True))


@pytest.mark.parametrize("case", ["dense", "packed", "wide-batch"])
def test_long_inputs_span_several_backward_blocks(case):
    """Backward turns d(gates) into gradients in blocks of about 512 rows; cross them."""
    ref, fused = make_pair(torch.float64, seed=3, input_size=3, hidden_size=4, num_layers=2,
                           bidirectional=True, proj_size=2 if case == "packed" else 0)
    if case == "packed":
        lengths = torch.tensor([120, 300, 7, 250])  # 677 rows, unsorted
        padded = torch.randn(4, 300, 3, dtype=torch.float64)
        x = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
        x.data.requires_grad_(True)
    elif case == "dense":
        x = torch.randn(300, 3, 3, dtype=torch.float64, requires_grad=True)  # 900 rows
    else:
        x = torch.randn(3, 600, 3, dtype=torch.float64, requires_grad=True)  # one step > 512 rows
    assert_same_run(ref, fused, x)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("B, H", [(1, 5), (8, 70), (16, 70), (24, 130), (64, 260)],
                         ids=["B1-H5", "B8-H70", "B16-H70", "B24-H130", "B64-H260"])
@pytest.mark.parametrize("bidir", [False, True], ids=["", "bidir"])
def test_one_step_calls(dtype, B, H, bidir):
    """T = 1 (streaming) runs its GEMMs on the weights as they are (the plan's
    natural_weights): ATen's GEMMs at few rows, the threads splitting the hidden units in
    tasks of at most 64 (whole vectors of 16; the last one short here) from 12 rows on
    (the plan's step_unit_chunk; tests/test_cpu_routes.py forces either way); two threads
    or more, so the larger sizes split the step."""
    with at_least_two_threads():
        ref, fused = make_pair(dtype, seed=15, input_size=9, hidden_size=H, num_layers=2,
                               bidirectional=bidir)
        with torch.no_grad():
            for p in ref.parameters():
                p.mul_((5 / H) ** 0.5)
        fused.load_state_dict(ref.state_dict())
        D = 2 if bidir else 1
        g = dict(dtype=dtype, requires_grad=True)
        x = torch.randn(1, B, 9, **g)
        hx = (torch.randn(2 * D, B, H, **g), torch.randn(2 * D, B, H, **g))
        assert_same_run(ref, fused, x, hx)


def test_streaming_one_step_at_a_time_equals_one_call():
    """T calls of one step, carrying (h, c), give the one T-step call's outputs and
    gradients (an independent check of the one-step route against the sequence route)."""
    torch.manual_seed(16)
    from fused_lstm import FusedLSTM
    m = FusedLSTM(6, 40, num_layers=2, dtype=torch.float64)
    x = torch.randn(7, 3, 6, dtype=torch.float64, requires_grad=True)
    y_all, (h_all, c_all) = m(x)
    ys, state = [], None
    for t in range(7):
        y, state = m(x[t:t + 1], state)
        ys.append(y)
    y_steps = torch.cat(ys)
    torch.testing.assert_close(y_steps, y_all, rtol=0, atol=1e-12)
    torch.testing.assert_close(state[0], h_all, rtol=0, atol=1e-12)
    torch.testing.assert_close(state[1], c_all, rtol=0, atol=1e-12)
    g = torch.randn_like(y_all)
    grads_all = torch.autograd.grad((y_all * g).sum(), [x, *m.parameters()])
    grads_steps = torch.autograd.grad((y_steps * g).sum(), [x, *m.parameters()])
    for a, b in zip(grads_steps, grads_all):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)],
                         ids=["f16", "bf16"])
@pytest.mark.parametrize("B", [8, 16])
def test_one_step_calls_in_16_bits(dtype, tol, B):
    """16-bit one-step calls computed in float32 (float16 always; bfloat16 where its GEMM
    operands are not bfloat16, or on its own route) against float64 nn.LSTM on the same
    (rounded) weights and inputs."""
    ref, fused = make_pair(torch.float64, seed=21, input_size=9, hidden_size=70, num_layers=2)
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(0.3)
    fused.load_state_dict(ref.state_dict())
    fused.to(dtype)
    ref.load_state_dict({k: v.double() for k, v in fused.state_dict().items()})
    x = torch.randn(1, B, 9).to(dtype)
    hx = tuple(torch.randn(2, B, 70).to(dtype) for _ in range(2))
    got = fused(x, hx)
    want = ref(x.double(), tuple(t.double() for t in hx))
    for a, b in ((got[0], want[0]), (got[1][0], want[1][0]), (got[1][1], want[1][1])):
        assert a.dtype == dtype
        assert rel_err(a.double(), b) <= tol
