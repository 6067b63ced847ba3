"""FusedLSTM as a module: interface, checkpoints, errors, training."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
from fused_lstm import FusedLSTM, convert
from helpers import make_pair, rel_err

CONFIGS = [dict(input_size=3, hidden_size=5),
           dict(input_size=4, hidden_size=6, num_layers=3, bidirectional=True, bias=False),
           dict(input_size=2, hidden_size=7, num_layers=2, proj_size=3, batch_first=True,
                dropout=0.3)]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_parameters_match_nn_lstm(cfg):
    torch.manual_seed(0)
    ref = nn.LSTM(**cfg)
    torch.manual_seed(0)
    fused = FusedLSTM(**cfg)
    names_r = [(n, tuple(p.shape)) for n, p in ref.named_parameters()]
    names_f = [(n, tuple(p.shape)) for n, p in fused.named_parameters()]
    assert names_f == names_r
    # same initialisation: same draws from the same generator
    for (n, p), q in zip(fused.named_parameters(), ref.parameters()):
        assert torch.equal(p, q), n
    assert repr(fused).replace("FusedLSTM", "LSTM") == repr(ref)
    assert [[p.shape for p in ws] for ws in fused.all_weights] == \
        [[p.shape for p in ws] for ws in ref.all_weights]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_state_dict_moves_both_ways(cfg):
    ref = nn.LSTM(**cfg)
    fused = FusedLSTM(**cfg)
    fused.load_state_dict(ref.state_dict(), strict=True)
    for (n, p), q in zip(fused.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(p, q), n
    other = nn.LSTM(**cfg)
    other.load_state_dict(FusedLSTM(**cfg).state_dict(), strict=True)


def test_from_lstm_and_convert():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(3, 4))
            self.rnn = nn.LSTM(4, 6, num_layers=2, batch_first=True)
            self.inner = nn.ModuleDict({"rnn2": nn.LSTM(6, 2, bidirectional=True)})

        def forward(self, x):
            y, _ = self.rnn(self.enc(x))
            y, _ = self.inner["rnn2"](y.transpose(0, 1))
            return y

    model = Model().double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    want = model(x)
    assert convert(model) is model
    assert isinstance(model.rnn, FusedLSTM) and isinstance(model.inner["rnn2"], FusedLSTM)
    assert not any(isinstance(m, nn.LSTM) for m in model.modules())
    assert rel_err(model(x), want) < 1e-12
    lstm = nn.LSTM(3, 4).eval()
    fused = convert(lstm)
    assert isinstance(fused, FusedLSTM) and not fused.training
    assert fused.weight_ih_l0.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_modules_track_nn_lstm(dtype):
    ref, fused = make_pair(torch.float32, input_size=8, hidden_size=16, num_layers=2)
    ref64 = nn.LSTM(8, 16, num_layers=2, dtype=torch.float64)
    ref64.load_state_dict(ref.state_dict())
    ref.to(dtype)
    fused.to(dtype)
    x = torch.randn(10, 4, 8)
    y_ref, _ = ref(x.to(dtype))
    y_fused, (h, c) = fused(x.to(dtype))
    assert y_fused.dtype == dtype and h.dtype == dtype and c.dtype == dtype
    want, _ = ref64(x.double())
    err_fused, err_ref = rel_err(y_fused.double(), want), rel_err(y_ref.double(), want)
    # float32 inside: no worse than nn.LSTM's own 16-bit error (plus rounding of the output)
    assert err_fused <= 2 * err_ref + 1e-2
    y_fused.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == dtype for p in fused.parameters())


def test_empty_batch_like_nn_lstm():
    ref, fused = make_pair(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 0, 3)
    y_r, (h_r, c_r) = ref(x)
    y_f, (h_f, c_f) = fused(x)
    assert y_f.shape == y_r.shape and h_f.shape == h_r.shape and c_f.shape == c_r.shape


def test_short_training_run_tracks_nn_lstm():
    """Same init, data and optimiser: the loss curves agree step by step."""
    torch.manual_seed(1)

    def build(cls):
        torch.manual_seed(5)
        return nn.ModuleDict({"rnn": cls(3, 8, num_layers=2, batch_first=True),
                              "head": nn.Linear(8, 1)}).double()

    xs = torch.randn(30, 16, 12, 3, dtype=torch.float64)
    ys = 3 * xs[..., 0].mean(dim=2, keepdim=True)  # [30, 16, 1]: needs memory of all steps
    losses = {}
    for cls in (nn.LSTM, FusedLSTM):
        m = build(cls)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        run = []
        for x, y in zip(xs, ys):
            out, _ = m["rnn"](x)
            loss = nn.functional.mse_loss(m["head"](out[:, -1]), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses[cls] = run
    assert losses[FusedLSTM][-1] < 0.5 * losses[FusedLSTM][0]  # it learns
    for a, b in zip(losses[FusedLSTM], losses[nn.LSTM]):
        assert abs(a - b) <= 1e-8 * max(1.0, abs(b))


# ---- bad input: the same exception type as nn.LSTM, with a message naming what is wrong ----

def _bad_calls():
    f32 = torch.float32
    return [
        # (description, module kwargs, input, hx, message pattern)
        ("feature size", {}, torch.randn(5, 2, 7), None, r"Expected 4, got 7"),
        ("1-D input", {}, torch.randn(5), None, r"Expected input to be 2D or 3D, got 1D"),
        ("4-D input", {}, torch.randn(5, 2, 4, 1), None, r"got 4D"),
        ("h0 batch", {}, torch.randn(5, 2, 4),
         (torch.randn(1, 3, 6), torch.randn(1, 2, 6)), r"hidden\[0\] size \(1, 2, 6\), got \[1, 3, 6\]"),
        ("c0 size", {}, torch.randn(5, 2, 4),
         (torch.randn(1, 2, 6), torch.randn(1, 2, 5)), r"hidden\[1\] size \(1, 2, 6\), got \[1, 2, 5\]"),
        ("layers in hx", {"num_layers": 2}, torch.randn(5, 2, 4),
         (torch.randn(1, 2, 6), torch.randn(1, 2, 6)), r"hidden\[0\] size \(2, 2, 6\)"),
        ("proj hx", {"proj_size": 3}, torch.randn(5, 2, 4),
         (torch.randn(1, 2, 6), torch.randn(1, 2, 6)), r"hidden\[0\] size \(1, 2, 3\)"),
        ("batched input, 2-D hx", {}, torch.randn(5, 2, 4),
         (torch.randn(2, 6), torch.randn(2, 6)), r"batched 3-D input, hx and cx should also be 3-D"),
        ("unbatched input, 3-D hx", {}, torch.randn(5, 4),
         (torch.randn(1, 1, 6), torch.randn(1, 1, 6)), r"unbatched 2-D input.*2-D"),
        ("hx not a pair", {}, torch.randn(5, 2, 4), (torch.randn(1, 2, 6),), r"two hidden states"),
        ("hx a triple", {}, torch.randn(5, 2, 4), (torch.randn(1, 2, 6),) * 3, r"two hidden states"),
        ("dtype mismatch", {}, torch.randn(5, 2, 4, dtype=torch.float64), None,
         r"input dtype \(torch.float64\) does not match weight dtype \(torch.float32\)"),
        ("integer input", {}, torch.randint(0, 5, (5, 2, 4)), None,
         r"input dtype \(torch.int64\) does not match"),
        ("hx dtype", {}, torch.randn(5, 2, 4),
         (torch.randn(1, 2, 6, dtype=torch.float64), torch.randn(1, 2, 6, dtype=f32)), None),
        ("empty sequence", {}, torch.randn(0, 2, 4), None, r"sequence length to be larger than 0"),
    ]


@pytest.mark.parametrize("desc,kwargs,x,hx,pattern", _bad_calls(), ids=[c[0] for c in _bad_calls()])
def test_bad_input_raises_like_nn_lstm(desc, kwargs, x, hx, pattern):
    ref = nn.LSTM(4, 6, **kwargs)
    fused = FusedLSTM(4, 6, **kwargs)
    with pytest.raises(Exception) as want:
        ref(x, hx)
    with pytest.raises(type(want.value)) as got:
        fused(x, hx)
    assert type(got.value) is type(want.value)
    if pattern:
        assert got.match(pattern)


def test_bad_packed_input_raises():
    """Packed input is checked as strictly as padded input.

    nn.LSTM on the CPU accepts two of these silently (a packed input with the
    wrong feature size, and an h0 with more rows than sequences when the batch
    was sorted by pack_sequence); FusedLSTM raises RuntimeError, the type
    nn.LSTM raises for the same mistakes on padded input.
    """
    from torch.nn.utils.rnn import pack_sequence
    seqs = [torch.randn(4, 4), torch.randn(2, 4)]
    fused = FusedLSTM(4, 6)
    wrong_hx = (torch.randn(1, 3, 6), torch.randn(1, 3, 6))
    cases = [(pack_sequence([torch.randn(4, 5)]), None, r"Expected 4, got 5"),
             (pack_sequence(seqs), wrong_hx, r"hidden\[0\] size \(1, 2, 6\), got \[1, 3, 6\]"),
             (pack_sequence(seqs, enforce_sorted=False), wrong_hx, r"hidden\[0\] size")]
    for x, hx, pattern in cases:
        with pytest.raises(RuntimeError, match=pattern):
            fused(x, hx)
    with pytest.raises(RuntimeError):
        nn.LSTM(4, 6)(pack_sequence(seqs), wrong_hx)


@pytest.mark.parametrize("kwargs,exc", [
    (dict(dropout=1.5), ValueError), (dict(dropout=True), ValueError),
    (dict(bias=1), TypeError), (dict(batch_first="yes"), TypeError),
    (dict(proj_size=6), ValueError), (dict(proj_size=-1), ValueError),
    (dict(num_layers=0), ValueError), (dict(input_size=0), ValueError),
    (dict(hidden_size=2.0), TypeError),
])
def test_bad_constructor_arguments(kwargs, exc):
    args = dict(input_size=4, hidden_size=6)
    args.update(kwargs)
    with pytest.raises(exc):
        nn.LSTM(**args)
    with pytest.raises(exc):
        FusedLSTM(**args)


def test_extension_is_loaded():
    assert fused_lstm.extension_loaded(), "the compiled op must be built for this test run"


GRADCHECK_CASES = [dict(num_layers=2, bidirectional=True), dict(proj_size=2, batch_first=True),
                   dict(bias=False), dict(proj_size=2, bias=False),
                   dict(num_layers=2, bidirectional=True, proj_size=2, packed=True)]
GRADCHECK_IDS = ["bidir", "proj-batch-first", "nobias", "proj-nobias", "packed-proj-bidir"]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=GRADCHECK_IDS)
def test_gradcheck_module_float64(routed_device, case):
    """gradcheck of the whole module w.r.t. input, state and every parameter."""
    torch.manual_seed(0)
    cfg = dict(case)
    packed = cfg.pop("packed", False)
    T, B, I, H = 4, 3, 3, 4
    fused = FusedLSTM(I, H, dtype=torch.float64, device=routed_device, **cfg)
    names = [n for n, _ in fused.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in fused.parameters()]
    L = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    g = dict(dtype=torch.float64, device=routed_device, requires_grad=True)
    x = torch.randn((B, T, I) if cfg.get("batch_first") else (T, B, I), **g)
    h0 = torch.randn(L, B, cfg.get("proj_size") or H, **g)
    c0 = torch.randn(L, B, H, **g)
    lengths = torch.tensor([4, 2, 3])  # unsorted

    def f(x, h0, c0, *ps):
        inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
        y, (h, c) = torch.func.functional_call(fused, dict(zip(names, ps)), (inp, (h0, c0)))
        return (y.data if packed else y), h, c

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params))


@pytest.mark.parametrize("options", [{}, {"layer_norm": True, "zoneout": 0.2}],
                         ids=["layer-op", "variant-op"])
@pytest.mark.parametrize("grad_off", ["no_grad", "inference_mode"])
def test_calls_with_grad_off_equal_calls_with_grad(options, grad_off):
    """With grad mode off the module calls the ops below their Autograd kernels
    (fused_lstm/ops.py, _plain_inference): the same bits as a call that records a graph,
    and nothing recorded."""
    torch.manual_seed(31)
    m = FusedLSTM(6, 20, num_layers=2, bidirectional=True, **options).eval()
    x = torch.randn(7, 3, 6)
    hx = (torch.randn(4, 3, 20), torch.randn(4, 3, 20))
    y, (h, c) = m(x, hx)
    assert y.grad_fn is not None
    with getattr(torch, grad_off)():
        y0, (h0, c0) = m(x, hx)
        y1, (h1, c1) = m.step(x[0], hx)
    for t in (y0, h0, c0, y1, h1, c1):
        assert t.grad_fn is None and not t.requires_grad
    for a, b in ((y0, y), (h0, h), (c0, c)):
        assert torch.equal(a, b.detach())
    y_step, (h_step, c_step) = m(x[:1], hx)
    assert torch.equal(y1, y_step[0].detach()) and torch.equal(h1, h_step.detach())
    assert torch.equal(c1, c_step.detach())
