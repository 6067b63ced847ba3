"""forward(input, hx, lengths=..., reset=...): padded batches cut into independent sequences.

lengths= is checked against two independent formulations on the same weights: nn.LSTM
run on each sequence alone (its first `length` steps; a sequence of length 0 keeps its
initial state), and nn.LSTM on the PackedSequence of the same batch. reset= is checked
against the loop users write today: nn.LSTM one step at a time, the state zeroed where
the mask is set (and, with a bidirectional layer, against nn.LSTM on each episode
alone). Outputs, h_n, c_n and every gradient, on every device (conftest.py's
routed_device).
"""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fused_lstm import FusedLSTM, segments
from fused_lstm._extension import extension_loaded
from helpers import make_pair, rel_err

TOL = {torch.float64: 1e-10, torch.float32: 2e-5}
CASES = [dict(), dict(num_layers=2, bidirectional=True), dict(proj_size=3, bidirectional=True),
         dict(num_layers=2, batch_first=True, bias=False)]
IDS = ["one-layer", "two-layers-bidir", "proj-bidir", "batch-first-nobias"]
LENGTHS = [7, 0, 3, 7, 1, 5]  # unsorted, ties, a zero, a one, the full length


def inputs(cfg, device, dtype, lengths, with_hx, T=7):
    B, I = len(lengths), cfg["input_size"]
    g = dict(device=device, dtype=dtype)
    x = torch.randn((B, T, I) if cfg.get("batch_first") else (T, B, I), **g).requires_grad_()
    hx = None
    if with_hx:
        D = 2 if cfg.get("bidirectional") else 1
        L = cfg.get("num_layers", 1) * D
        hx = (torch.randn(L, B, cfg.get("proj_size") or cfg["hidden_size"], **g).requires_grad_(),
              torch.randn(L, B, cfg["hidden_size"], **g).requires_grad_())
    return x, hx


def per_sequence(ref, x, hx, lengths, batch_first):
    """nn.LSTM on each sequence alone: (y [T, B, C] zero past each length, h_n, c_n)."""
    xt = x.transpose(0, 1) if batch_first else x
    T = xt.size(0)
    ys, hs, cs = [], [], []
    for b, n in enumerate(lengths):
        h0 = None if hx is None else (hx[0][:, b:b + 1], hx[1][:, b:b + 1])
        if n == 0:
            C = ref.hidden_size if not ref.proj_size else ref.proj_size
            C *= 2 if ref.bidirectional else 1
            ys.append(xt.new_zeros(T, 1, C))
            L = ref.num_layers * (2 if ref.bidirectional else 1)
            if h0 is None:
                h0 = (xt.new_zeros(L, 1, ref.proj_size or ref.hidden_size),
                      xt.new_zeros(L, 1, ref.hidden_size))
            hs.append(h0[0])
            cs.append(h0[1])
            continue
        seq = xt[:n, b:b + 1]
        if batch_first:
            seq = seq.transpose(0, 1)
        y, (h, c) = ref(seq) if h0 is None else ref(seq, h0)
        if batch_first:
            y = y.transpose(0, 1)
        ys.append(torch.cat([y, y.new_zeros(T - n, 1, y.size(-1))]))
        hs.append(h)
        cs.append(c)
    y = torch.cat(ys, 1)
    return (y.transpose(0, 1) if batch_first else y), torch.cat(hs, 1), torch.cat(cs, 1)


def assert_same_outputs_and_grads(got, want, x, hx, fused, ref, tol):
    """got, want: [y, h_n, c_n] of fused and of the reference formulation; their values and
    gradients (input, h0, c0, every parameter, under the same output gradients) agree."""
    grad_outs = [torch.randn_like(t) for t in want]
    wrt = [x] + (list(hx) if hx else [])
    got_all = outputs_and_grads(got, wrt + list(fused.parameters()), grad_outs)
    want_all = outputs_and_grads(want, wrt + list(ref.parameters()), grad_outs)
    names = ["output", "h_n", "c_n", "grad input"] + (["grad h0", "grad c0"] if hx else []) + [
        f"grad {n}" for n, _ in fused.named_parameters()]
    for name, a, b in zip(names, got_all, want_all):
        assert a.shape == b.shape, name
        err = rel_err(a, b)
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g}"


def outputs_and_grads(outs, wrt, grad_outs):
    grads = torch.autograd.grad(outs, wrt, grad_outs, allow_unused=True)
    return [o.detach() for o in outs] + [torch.zeros_like(w) if g is None else g
                                         for w, g in zip(wrt, grads)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("cfg", CASES, ids=IDS)
def test_matches_nn_lstm_on_each_sequence_alone(routed_device, cfg, with_hx, dtype):
    cfg = dict(cfg, input_size=4, hidden_size=5)
    ref, fused = make_pair(dtype, seed=1, device=routed_device, **cfg)
    x, hx = inputs(cfg, routed_device, dtype, LENGTHS, with_hx)
    lengths = torch.tensor(LENGTHS)
    got = fused(x, hx, lengths=lengths)
    got = [got[0], *got[1]]
    want = per_sequence(ref, x, hx, LENGTHS, cfg.get("batch_first", False))
    assert_same_outputs_and_grads(got, want, x, hx, fused, ref, TOL[dtype])
    # outputs past each sequence's end are exactly zero
    y = got[0].transpose(0, 1) if cfg.get("batch_first") else got[0]
    for b, n in enumerate(LENGTHS):
        assert torch.all(y[n:, b] == 0)


@pytest.mark.parametrize("cfg", CASES, ids=IDS)
def test_same_as_the_packed_sequence_of_the_batch(routed_device, cfg):
    cfg = dict(cfg, input_size=4, hidden_size=5)
    ref, fused = make_pair(torch.float64, seed=2, device=routed_device, **cfg)
    lengths = [4, 7, 2, 7, 6]  # no zero: pack_padded_sequence refuses it
    x, hx = inputs(cfg, routed_device, torch.float64, lengths, True)
    bf = cfg.get("batch_first", False)
    y, (h, c) = fused(x, hx, lengths=lengths)  # a list of ints works too
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
    yp, (hp, cp) = ref(packed, hx)
    yp, _ = pad_packed_sequence(yp, batch_first=bf, total_length=7)
    for a, b in ((y, yp), (h, hp), (c, cp)):
        assert rel_err(a, b) <= 1e-10


def test_full_lengths_equal_the_plain_call():
    torch.manual_seed(3)
    m = FusedLSTM(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    y, (h, c) = m(x)
    yl, (hl, cl) = m(x, lengths=torch.full((3,), 5))
    torch.testing.assert_close(yl, y, rtol=0, atol=1e-13)
    torch.testing.assert_close(hl, h, rtol=0, atol=1e-13)
    torch.testing.assert_close(cl, c, rtol=0, atol=1e-13)


@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
def test_every_sequence_empty(device, with_hx):
    torch.manual_seed(4)
    m = FusedLSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, device=device)
    x = torch.randn(5, 3, 3, device=device, requires_grad=True)
    hx = None
    if with_hx:
        hx = (torch.randn(4, 3, 2, device=device, requires_grad=True),
              torch.randn(4, 3, 4, device=device, requires_grad=True))
    y, (h, c) = m(x, hx, lengths=[0, 0, 0])
    assert y.shape == (5, 3, 4) and torch.all(y == 0)
    if with_hx:
        assert torch.equal(h, hx[0]) and torch.equal(c, hx[1])
        assert h is not hx[0] and c is not hx[1]  # new tensors, as nn.LSTM returns
        g = torch.autograd.grad((h * 2).sum() + c.sum(), hx)
        assert torch.all(g[0] == 2) and torch.all(g[1] == 1)
    else:
        assert h.shape == (4, 3, 2) and c.shape == (4, 3, 4)
        assert torch.all(h == 0) and torch.all(c == 0)


def test_gradcheck_float64(routed_device):
    torch.manual_seed(5)
    m = FusedLSTM(2, 3, bidirectional=True, dtype=torch.float64, device=routed_device)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    g = dict(dtype=torch.float64, device=routed_device, requires_grad=True)
    x = torch.randn(4, 3, 2, **g)
    h0, c0 = torch.randn(2, 3, 3, **g), torch.randn(2, 3, 3, **g)

    def f(x, h0, c0, *ps):
        y, (h, c) = torch.func.functional_call(m, dict(zip(names, ps)), (x, (h0, c0)),
                                               {"lengths": [2, 4, 0]})
        return y, h, c

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params))


COMPILE_CASES = [dict(bidirectional=True), dict(num_layers=2, proj_size=3),
                 dict(layer_norm=True, return_cell_sequence=True)]


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("cfg", COMPILE_CASES, ids=["bidir", "two-layers-proj", "layer-norm-cells"])
def test_compile_fullgraph_equals_eager(cfg, backend):
    """The segment maps come from an op (fused_lstm::segment_layout) whose output sizes
    depend on the values of lengths and reset: the compiled graph holds the whole call, and
    one graph serves other lengths and masks, every sequence empty included."""
    torch._dynamo.reset()
    torch.manual_seed(6)
    m = FusedLSTM(3, 4, **cfg)
    x = torch.randn(6, 4, 3, requires_grad=True)
    compiled = torch.compile(m, backend=backend, fullgraph=True)
    reset = torch.rand(6, 4) < 0.3
    for lengths, mask in [(torch.tensor([6, 2, 0, 5]), None), (None, reset),
                          (torch.tensor([3, 6, 1, 4]), reset), (torch.zeros(4, dtype=torch.long), None)]:
        want = m(x, lengths=lengths, reset=mask)
        got = compiled(x, lengths=lengths, reset=mask)
        flat_want = [want[0], *want[1], *want[2:]]
        flat_got = [got[0], *got[1], *got[2:]]
        for a, b in zip(flat_got, flat_want):
            torch.testing.assert_close(a, b)
        ga = torch.autograd.grad(sum(t.sum() for t in flat_got), x)
        gb = torch.autograd.grad(sum(t.sum() for t in flat_want), x)
        torch.testing.assert_close(ga, gb)


def test_bad_length_values_raise_in_a_compiled_graph():
    torch._dynamo.reset()
    m = torch.compile(FusedLSTM(3, 4), backend="aot_eager", fullgraph=True)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match="at most the input's sequence length 5, got 6"):
        m(x, lengths=torch.tensor([6, 2]))
    with pytest.raises(ValueError, match="hold only 0 and 1, got values \\[2\\]"):
        m(x, reset=torch.tensor([[0, 2]] * 5))


def test_export_with_lengths_and_reset():
    """torch.export holds the layout op; the program runs other lengths and masks."""
    torch.manual_seed(7)
    m = FusedLSTM(3, 4, bidirectional=True)

    class Caller(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = m

        def forward(self, x, lengths, reset):
            return self.lstm(x, lengths=lengths, reset=reset)

    x = torch.randn(6, 4, 3)
    reset = torch.rand(6, 4) < 0.3
    program = torch.export.export(Caller(), (x, torch.tensor([6, 2, 0, 5]), reset))
    other_lengths, other_reset = torch.tensor([3, 6, 1, 4]), torch.rand(6, 4) < 0.5
    got = program.module()(x, other_lengths, other_reset)
    want = m(x, lengths=other_lengths, reset=other_reset)
    for a, b in zip((got[0], *got[1]), (want[0], *want[1])):
        torch.testing.assert_close(a, b)


def test_segment_layout_opcheck():
    lengths = torch.tensor([6, 2, 0, 5])
    reset = torch.rand(6, 4, generator=torch.Generator().manual_seed(3)) < 0.3
    for args in [(lengths, None), (None, reset), (lengths, reset)]:
        torch.library.opcheck(torch.ops.fused_lstm.segment_layout, (*args, 6, 4, torch.device("cpu")))


@pytest.mark.skipif(not extension_loaded(), reason="the compiled extension is missing")
def test_segment_layout_kernel_equals_the_reference():
    """The C++ layout (csrc/segment_maps.cpp) against segments.py's PyTorch formulation, on
    random lengths and masks: resets at step 0, past a row's end, rows without steps,
    every row reset at every step."""
    g = torch.Generator().manual_seed(11)
    cases = [(torch.tensor([0, 0, 0]), None, 4), (None, torch.ones(4, 3, dtype=torch.bool), 4)]
    for _ in range(40):
        T, B = int(torch.randint(1, 12, (1,), generator=g)), int(torch.randint(1, 9, (1,), generator=g))
        lengths = torch.randint(0, T + 1, (B,), generator=g)
        reset = torch.rand(T, B, generator=g) < float(torch.rand(1, generator=g))
        cases += [(lengths, None, T), (None, reset, T), (lengths, reset, T)]
    for lengths, reset, T in cases:
        B = (lengths if lengths is not None else reset).shape[-1]
        args = (lengths, reset, T, B, torch.device("cpu"))
        got = torch.ops.fused_lstm.segment_layout(*args)
        want = segments.segment_layout_reference(*args)
        for a, b in zip(got, want):
            assert a.dtype == torch.int64
            assert torch.equal(a, b), (lengths, reset)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_segment_pad_equals_the_reference(dtype):
    """segment_pad (the CPU kernel writes each padded row once) against zeros with the rows
    copied in, on a layout with empty rows, resets and unsorted lengths; opcheck and
    gradcheck of the op."""
    g = torch.Generator().manual_seed(12)
    lay = segments.layout(9, 5, torch.tensor([9, 0, 4, 7, 1]), torch.rand(9, 5, generator=g) < 0.3,
                          torch.device("cpu"))
    packed = torch.randn(lay.rows.numel(), 6, generator=g).to(dtype)
    got = torch.ops.fused_lstm.segment_pad(packed, lay.rows, 9, 5)
    want = segments.segment_pad_reference(packed, lay.rows, 9, 5)
    assert got.shape == (9, 5, 6) and torch.equal(got, want)
    torch.library.opcheck(torch.ops.fused_lstm.segment_pad, (packed.double(), lay.rows, 9, 5))
    p64 = packed.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: segments.segment_pad(p, lay.rows, 9, 5), (p64,))
    with pytest.raises(IndexError, match="outside the padded rows"):
        torch.ops.fused_lstm.segment_pad(packed[:1], torch.tensor([45]), 9, 5)


@pytest.mark.parametrize("layout", ["kernel", "reference"])
def test_segment_layout_op_checks_dtypes(layout):
    """Called directly (FusedLSTM checks these first), the layout op refuses float lengths
    rather than truncating them, and a complex mask."""
    op = (torch.ops.fused_lstm.segment_layout if layout == "kernel"
          else segments.segment_layout_reference)
    cpu = torch.device("cpu")
    with pytest.raises(TypeError, match="integer tensor, got dtype torch.float32"):
        op(torch.tensor([1.5]), None, 3, 1, cpu)
    if layout == "kernel":
        with pytest.raises(TypeError, match="got dtype torch.complex64"):
            op(None, torch.zeros(3, 1, dtype=torch.complex64), 3, 1, cpu)


def test_reset_float_values_are_named():
    m = FusedLSTM(3, 4)
    with pytest.raises(ValueError, match=r"hold only 0 and 1, got values \[0.5, 2.0\]"):
        m(torch.randn(2, 2, 3), reset=torch.tensor([[0.0, 2.0], [0.5, 1.0]]))


@pytest.mark.parametrize("lengths, exc, match", [
    (torch.tensor([3.0, 2.0]), TypeError, "integer tensor, got dtype torch.float32"),
    (torch.tensor([True, False]), TypeError, "integer tensor"),
    ([3, 2.5], TypeError, "integers"),
    ([3, True], TypeError, "integers"),
    ("3,2", TypeError, "got str"),
    (torch.tensor([3, 2, 1]), ValueError, r"expected shape \(2,\), got \(3,\)"),
    (torch.tensor([[3, 2]]), ValueError, r"expected shape \(2,\), got \(1, 2\)"),
    ([3], ValueError, "expected 2, got 1"),
    ([3, -1], ValueError, "got -1 for sequence 1"),
    ([6, 2], ValueError, "at most the input's sequence length 5, got 6 for sequence 0"),
])
def test_bad_lengths_raise(lengths, exc, match):
    m = FusedLSTM(3, 4)
    x = torch.randn(5, 2, 3)
    with pytest.raises(exc, match=match):
        m(x, lengths=lengths)


def test_lengths_and_reset_on_another_device_raise():
    """lengths and reset may live on the CPU or on the input's device; elsewhere (here the
    meta device, which holds no values) they raise, naming both devices."""
    m = FusedLSTM(3, 4)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"lengths must be on the CPU or on the input's device "
                                         r"\(cpu\), got lengths on meta"):
        m(x, lengths=torch.tensor([5, 3], device="meta"))
    with pytest.raises(ValueError, match=r"reset must be on the CPU or on the input's device "
                                         r"\(cpu\), got reset on meta"):
        m(x, reset=torch.zeros(5, 2, dtype=torch.bool, device="meta"))


def test_lengths_with_packed_or_unbatched_input_raise():
    m = FusedLSTM(3, 4)
    packed = pack_padded_sequence(torch.randn(5, 2, 3), torch.tensor([5, 3]))
    with pytest.raises(ValueError, match="PackedSequence holds its own lengths"):
        m(packed, lengths=[5, 3])
    with pytest.raises(ValueError, match="PackedSequence holds its own lengths"):
        m(packed, reset=torch.zeros(5, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="needs batched input"):
        m(torch.randn(5, 3), lengths=[5])


def test_input_errors_come_first_as_in_nn_lstm():
    m = FusedLSTM(3, 4)
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size"):
        m(torch.randn(5, 2, 7), lengths=[5, 3])
    with pytest.raises(RuntimeError, match="Expected hidden\\[0\\] size"):
        m(torch.randn(5, 2, 3), (torch.randn(1, 3, 4), torch.randn(1, 3, 4)), lengths=[5, 3])


# ---------------------------------------------------------------------------
# reset=
# ---------------------------------------------------------------------------

def step_loop(ref, x, hx, reset, lengths=None):
    """nn.LSTM one step at a time over x: [T, B, I], (h, c) of every layer zeroed before
    each step where reset[t, b] is set; with lengths, a row past its end keeps its state
    and outputs zeros (a reset past the end has no step to come before, so none happens).
    Returns (y [T, B, C], h_n, c_n)."""
    T, B = x.size(0), x.size(1)
    L = ref.num_layers
    h = x.new_zeros(L, B, ref.proj_size or ref.hidden_size) if hx is None else hx[0]
    c = x.new_zeros(L, B, ref.hidden_size) if hx is None else hx[1]
    ys = []
    for t in range(T):
        resets = reset[t]
        if lengths is not None:
            resets = resets & (torch.tensor(lengths, device=x.device) > t)
        keep = (~resets).to(x.dtype).view(1, B, 1)
        h, c = h * keep, c * keep
        y, (h_new, c_new) = ref(x[t:t + 1], (h, c))
        if lengths is not None:
            alive = (torch.tensor(lengths, device=x.device) > t).to(x.dtype).view(1, B, 1)
            y = y * alive
            h_new = alive * h_new + (1 - alive) * h
            c_new = alive * c_new + (1 - alive) * c
        ys.append(y)
        h, c = h_new, c_new
    return torch.cat(ys), h, c


def random_reset(T, B, p, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, generator=gen) < p


RESET_CASES = [dict(), dict(num_layers=2), dict(proj_size=3, num_layers=2, bias=False)]
RESET_IDS = ["one-layer", "two-layers", "proj-two-layers-nobias"]


@pytest.mark.parametrize("with_lengths", [False, True], ids=["", "lengths"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("cfg", RESET_CASES, ids=RESET_IDS)
def test_reset_matches_the_step_loop(routed_device, cfg, with_hx, with_lengths):
    cfg = dict(cfg, input_size=4, hidden_size=5)
    dtype = torch.float64
    ref, fused = make_pair(dtype, seed=7, device=routed_device, **cfg)
    T, B = 9, 6
    reset = random_reset(T, B, 0.3, seed=8)
    reset[0, 1] = True  # a reset before the first step: the initial state is not used
    reset[:, 2] = False  # a row never reset
    reset[:, 3] = True  # a row reset at every step
    lengths = [9, 4, 9, 0, 6, 1] if with_lengths else None
    x, hx = inputs(cfg, routed_device, dtype, [T] * B, with_hx, T=T)
    got = fused(x, hx, reset=reset.to(routed_device), lengths=lengths)
    got = [got[0], *got[1]]
    want = step_loop(ref, x, hx, reset.to(routed_device), lengths)
    assert_same_outputs_and_grads(got, want, x, hx, fused, ref, 1e-10)


def episodes(reset_column, T):
    """(start, end) of each episode of one row."""
    starts = [0] + [t for t in range(1, T) if reset_column[t]]
    return list(zip(starts, starts[1:] + [T]))


@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
def test_reset_bidirectional_runs_each_episode_alone(routed_device, with_hx):
    cfg = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True)
    ref, fused = make_pair(torch.float64, seed=9, device=routed_device, **cfg)
    B, T = 4, 8
    reset_bt = random_reset(B, T, 0.25, seed=10)  # batch_first: [B, T]
    reset_bt[2, 0] = True
    x, hx = inputs(cfg, routed_device, torch.float64, [T] * B, with_hx, T=T)
    y, (h, c) = fused(x, hx, reset=reset_bt.to(routed_device))
    for b in range(B):
        eps = episodes(reset_bt[b].tolist(), T)
        for k, (s, e) in enumerate(eps):
            h0 = None
            if k == 0 and hx is not None and not reset_bt[b, 0]:
                h0 = (hx[0][:, b:b + 1], hx[1][:, b:b + 1])
            ye, (he, ce) = ref(x[b:b + 1, s:e]) if h0 is None else ref(x[b:b + 1, s:e], h0)
            assert rel_err(y[b:b + 1, s:e], ye) <= 1e-10
        # h_n: each direction's final state of the row's last episode
        assert rel_err(h[:, b:b + 1], he) <= 1e-10 and rel_err(c[:, b:b + 1], ce) <= 1e-10


def test_reset_accepts_0_1_numbers_and_unbatched_input():
    torch.manual_seed(11)
    m = FusedLSTM(3, 4, dtype=torch.float64)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    mask = random_reset(6, 2, 0.4, seed=12)
    want = m(x, reset=mask)
    for as_numbers in (mask.float(), mask.long()):
        got = m(x, reset=as_numbers)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    # unbatched: mask [T]
    y1, (h1, _) = m(x[:, 0], reset=mask[:, 0])
    torch.testing.assert_close(y1, want[0][:, 0], rtol=0, atol=1e-14)
    torch.testing.assert_close(h1, want[1][0][:, 0], rtol=0, atol=1e-14)


def test_no_reset_set_equals_the_plain_call():
    torch.manual_seed(13)
    m = FusedLSTM(3, 4, num_layers=2, dtype=torch.float64)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    y, (h, c) = m(x)
    yr, (hr, cr) = m(x, reset=torch.zeros(5, 3, dtype=torch.bool))
    for a, b in ((yr, y), (hr, h), (cr, c)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_gradcheck_reset_float64(routed_device):
    torch.manual_seed(14)
    m = FusedLSTM(2, 3, num_layers=2, dtype=torch.float64, device=routed_device)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    g = dict(dtype=torch.float64, device=routed_device, requires_grad=True)
    x = torch.randn(5, 3, 2, **g)
    h0, c0 = torch.randn(2, 3, 3, **g), torch.randn(2, 3, 3, **g)
    reset = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 1], [0, 0, 0]],
                         dtype=torch.bool, device=routed_device)

    def f(x, h0, c0, *ps):
        y, (h, c) = torch.func.functional_call(m, dict(zip(names, ps)), (x, (h0, c0)),
                                               {"reset": reset})
        return y, h, c

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params))


@pytest.mark.parametrize("reset, exc, match", [
    (torch.zeros(5, 3, dtype=torch.bool), ValueError, r"expected shape \(5, 2\), got \(5, 3\)"),
    (torch.zeros(2, 5, dtype=torch.bool), ValueError, r"expected shape \(5, 2\), got \(2, 5\)"),
    (torch.full((5, 2), 0.5), ValueError, r"only 0 and 1, got values \[0.5\]"),
    ([[0, 1]] * 5, TypeError, "reset must be a tensor"),
])
def test_bad_reset_raises(reset, exc, match):
    m = FusedLSTM(3, 4)
    with pytest.raises(exc, match=match):
        m(torch.randn(5, 2, 3), reset=reset)


def test_reset_batch_first_takes_b_by_t():
    m = FusedLSTM(3, 4, batch_first=True)
    with pytest.raises(ValueError, match=r"\(B, T\) with batch_first: expected shape \(2, 5\)"):
        m(torch.randn(2, 5, 3), reset=torch.zeros(5, 2, dtype=torch.bool))


def test_options_are_keyword_only_and_checked():
    m = FusedLSTM(3, 4)
    x = torch.randn(5, 2, 3)
    with pytest.raises(TypeError, match="takes from 2 to 3 positional arguments"):
        m(x, None, [5, 3])
    with pytest.raises(TypeError, match="unexpected keyword argument 'length'"):
        m(x, length=[5, 3])


# ---------------------------------------------------------------------------
# step(): one time step at a time
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cfg", [dict(), dict(num_layers=2, bidirectional=True), dict(proj_size=2)],
                         ids=["one-layer", "two-layers-bidir", "proj"])
def test_step_equals_forward_of_one_step(device, cfg, batch_first):
    torch.manual_seed(17)
    m = FusedLSTM(3, 5, batch_first=batch_first, dtype=torch.float64, device=device, **cfg)
    ref = m.to_lstm()
    D = 2 if cfg.get("bidirectional") else 1
    L = cfg.get("num_layers", 1) * D
    x_t = torch.randn(4, 3, dtype=torch.float64, device=device)
    hx = (torch.randn(L, 4, cfg.get("proj_size") or 5, dtype=torch.float64, device=device),
          torch.randn(L, 4, 5, dtype=torch.float64, device=device))
    y, (h, c) = m.step(x_t, hx)
    seq = x_t.unsqueeze(1 if batch_first else 0)
    y_ref, (h_ref, c_ref) = ref(seq, hx)
    torch.testing.assert_close(y, y_ref.squeeze(1 if batch_first else 0), rtol=0, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-12)
    # unbatched
    y1, (h1, c1) = m.step(x_t[0], (hx[0][:, 0], hx[1][:, 0]))
    torch.testing.assert_close(y1, y[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(h1, h[:, 0], rtol=0, atol=1e-12)


def test_step_by_step_equals_the_sequence():
    torch.manual_seed(18)
    m = FusedLSTM(3, 6, num_layers=2)
    x = torch.randn(8, 2, 3)
    y_all, (h_all, c_all) = m(x)
    state, ys = None, []
    for t in range(8):
        y, state = m.step(x[t], state)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys), y_all, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(state[0], h_all, rtol=1e-6, atol=1e-6)


def test_step_rejects_a_sequence():
    with pytest.raises(ValueError, match=r"expected one step, input of shape \(B, I\) or \(I,\), got \(5, 2, 3\)"):
        FusedLSTM(3, 4).step(torch.randn(5, 2, 3))


def test_lengths_as_numpy():
    np = pytest.importorskip("numpy")
    torch.manual_seed(19)
    m = FusedLSTM(3, 4)
    x = torch.randn(5, 3, 3)
    want = m(x, lengths=[5, 2, 0])
    for lengths in (np.array([5, 2, 0]), [np.int64(5), np.int32(2), np.int16(0)]):
        got = m(x, lengths=lengths)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)


def test_complex_reset_raises():
    with pytest.raises(TypeError, match="got dtype torch.complex64"):
        FusedLSTM(3, 4)(torch.randn(5, 2, 3), reset=torch.zeros(5, 2, dtype=torch.complex64))


@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
def test_reset_and_lengths_bidirectional_run_each_episode_alone(routed_device, with_hx):
    cfg = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    ref, fused = make_pair(torch.float64, seed=20, device=routed_device, **cfg)
    T, B = 8, 5
    reset = random_reset(T, B, 0.3, seed=21)
    reset[0, 1] = True
    lengths = [8, 0, 5, 1, 6]
    x, hx = inputs(cfg, routed_device, torch.float64, [T] * B, with_hx, T=T)
    y, (h, c) = fused(x, hx, reset=reset.to(routed_device), lengths=lengths)
    for b in range(B):
        n = lengths[b]
        assert torch.all(y[n:, b] == 0)
        if n == 0:
            want_h = hx[0][:, b] if with_hx else torch.zeros_like(h[:, b])
            torch.testing.assert_close(h[:, b], want_h, rtol=0, atol=0)
            continue
        for k, (s, e) in enumerate(episodes(reset[:, b].tolist(), n)):
            h0 = None
            if k == 0 and with_hx and not reset[0, b]:
                h0 = (hx[0][:, b:b + 1], hx[1][:, b:b + 1])
            ye, (he, ce) = ref(x[s:e, b:b + 1]) if h0 is None else ref(x[s:e, b:b + 1], h0)
            assert rel_err(y[s:e, b:b + 1], ye) <= 1e-10
        assert rel_err(h[:, b:b + 1], he) <= 1e-10 and rel_err(c[:, b:b + 1], ce) <= 1e-10


def test_step_compiles_fullgraph_and_exports():
    torch.manual_seed(23)
    m = FusedLSTM(3, 6, num_layers=2)
    x_t = torch.randn(4, 3)
    hx = (torch.randn(2, 4, 6), torch.randn(2, 4, 6))
    want = m.step(x_t, hx)

    class Stepper(torch.nn.Module):
        def __init__(self, lstm):
            super().__init__()
            self.lstm = lstm

        def forward(self, x_t, h, c):
            y, (h, c) = self.lstm.step(x_t, (h, c))
            return y, h, c

    stepper = Stepper(m)
    got = torch.compile(stepper, fullgraph=True, backend="aot_eager")(x_t, *hx)
    exported = torch.export.export(stepper, (x_t, *hx)).module()(x_t, *hx)
    for out in (got, exported):
        torch.testing.assert_close(out[0], want[0])
        torch.testing.assert_close(out[1], want[1][0])
        torch.testing.assert_close(out[2], want[1][1])
