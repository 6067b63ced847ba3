"""FusedLSTM(..., *, weight_drop=p): DropConnect on the recurrent weights (AWD-LSTM, Merity et
al. 2017). In training mode every forward call runs each layer direction with
F.dropout(weight_hh, p, training=True) in place of weight_hh, the masks drawn from the default
generator, in parameter order (l0, l0_reverse, l1, ...), before any dropout between layers;
in eval mode, and with p = 0, the weights are used as they are and nothing is drawn.

The reference here draws the masks itself, in that order (F.dropout of a tensor of ones
gives mask / (1 - p) from the same draws as F.dropout of the weight), runs nn.LSTM with the
dropped weight_hh through torch.func.functional_call, and takes the raw weight_hh's
gradient as grad(dropped) * mask / (1 - p) by hand.
"""

import copy
import io
import math
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fused_lstm import FusedLSTM, onnx_export

TOL = 1e-10  # float64, absolute, on values of order 1

pytestmark = [
    # torch's own notices (its exporters, torch.jit.script, quantization, oneDNN), not ours
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:Exporting a model:UserWarning"),
    pytest.mark.filterwarnings("ignore:It is recommended that constant folding:UserWarning"),
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN"),
    pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning"),
]


def pair(seed, p, dtype=torch.float64, **cfg):
    """An nn.LSTM with random weights, and a FusedLSTM(weight_drop=p) holding the same ones,
    both in training mode."""
    torch.manual_seed(seed)
    ref = nn.LSTM(dtype=dtype, **cfg)
    with torch.no_grad():  # wider than the default init, so the gates saturate somewhere
        for w in ref.parameters():
            w.uniform_(-0.6, 0.6)
    fused = FusedLSTM(dtype=dtype, weight_drop=p, **cfg)
    fused.load_state_dict(ref.state_dict(), strict=True)
    return ref, fused


def hh_names(cfg):
    """weight_hh of every layer direction, in parameter order: the documented draw order."""
    directions = 2 if cfg.get("bidirectional") else 1
    return [f"weight_hh_l{k}{'_reverse' if d else ''}"
            for k in range(cfg.get("num_layers", 1)) for d in range(directions)]


def draw_scales(cfg, p, like):
    """mask / (1 - p) for each weight_hh, drawn as FusedLSTM documents (call after seeding)."""
    return {n: F.dropout(torch.ones_like(like[n]), p, training=True) for n in hh_names(cfg)}


def outputs(result):
    """(output tensor, h_n, c_n) of an LSTM call; a PackedSequence's data as the output."""
    y, (h, c) = result
    return (y.data if isinstance(y, nn.utils.rnn.PackedSequence) else y), h, c


def loss_of(y, h, c, gen):
    """A loss that weighs every output element differently."""
    return sum((t * torch.randn(t.shape, dtype=t.dtype, generator=gen)).sum() for t in (y, h, c))


def close(a, b, tol=TOL):
    return a.shape == b.shape and (a.detach() - b.detach()).abs().max().item() <= tol


# ---- (1) off: today's module, bit for bit, and no draw ----

OFF_CONFIGS = [dict(input_size=3, hidden_size=5),
               dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True,
                    proj_size=2, batch_first=True)]


@pytest.mark.parametrize("cfg", OFF_CONFIGS)
def test_off_is_todays_module_bit_for_bit_and_draws_nothing(cfg):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3) if cfg.get("batch_first") else torch.randn(4, 2, 3)
    results = []
    for kwargs in ({}, {"weight_drop": 0.0}, {"weight_drop": 0}):
        torch.manual_seed(1)
        model = FusedLSTM(**cfg, **kwargs)  # training mode, no dropout between layers
        assert model.weight_drop == 0.0 and isinstance(model.weight_drop, float)
        before = torch.get_rng_state()
        y, (h, c) = model(x)
        assert torch.equal(torch.get_rng_state(), before), f"{kwargs}: the call drew numbers"
        (y.sum() + h.sum() + c.sum()).backward()
        results.append([y, h, c] + [w.grad for w in model.parameters()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_off_with_dropout_between_layers_draws_as_before():
    """weight_drop=0 adds no draw before the dropout between layers: same masks."""
    x = torch.randn(5, 2, 3)
    got = []
    for kwargs in ({}, {"weight_drop": 0.0}):
        torch.manual_seed(2)
        model = FusedLSTM(3, 5, num_layers=3, dropout=0.5, **kwargs)
        torch.manual_seed(3)
        got.append(model(x)[0])
    assert torch.equal(got[0], got[1])


# ---- (2) against the independent formulation: nn.LSTM with the masks drawn here ----

DROP_CONFIGS = {
    "1-layer": (dict(input_size=3, hidden_size=5), {}),
    "2-layer-bidirectional": (dict(input_size=3, hidden_size=5, num_layers=2,
                                   bidirectional=True), {}),
    "2-layer-bidirectional-dropout-state": (dict(input_size=3, hidden_size=5, num_layers=2,
                                                 bidirectional=True, dropout=0.4),
                                            {"state": True}),
    "proj": (dict(input_size=3, hidden_size=6, num_layers=2, proj_size=3), {"state": True}),
    "batch-first": (dict(input_size=3, hidden_size=5, batch_first=True, bidirectional=True), {}),
    "packed": (dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True),
               {"packed": True, "state": True}),
    "unbatched": (dict(input_size=3, hidden_size=5, proj_size=2), {"unbatched": True}),
    "no-bias": (dict(input_size=3, hidden_size=4, bias=False), {}),
}


def make_input(cfg, packed=False, state=False, unbatched=False, T=6, B=3):
    x = torch.randn(T, B, cfg["input_size"], dtype=torch.float64)
    if unbatched:
        x = x[:, 0]
    elif cfg.get("batch_first"):
        x = x.transpose(0, 1).contiguous()
    if packed:
        lengths = torch.tensor([T, T - 2, 1][:B])
        x = pack_padded_sequence(x, lengths, batch_first=cfg.get("batch_first", False),
                                 enforce_sorted=False)
    hx = None
    if state:
        rows = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
        lead = (rows,) if unbatched else (rows, B)
        hx = (torch.randn(*lead, cfg.get("proj_size") or cfg["hidden_size"],
                          dtype=torch.float64, requires_grad=True),
              torch.randn(*lead, cfg["hidden_size"], dtype=torch.float64, requires_grad=True))
    return x, hx


@pytest.mark.parametrize("p", [0.3, 0.75])
@pytest.mark.parametrize("case", list(DROP_CONFIGS))
def test_matches_nn_lstm_with_masks_drawn_in_the_documented_order(case, p):
    cfg, how = DROP_CONFIGS[case]
    ref, fused = pair(10, p, **cfg)
    x, hx = make_input(cfg, **how)
    if isinstance(x, torch.Tensor):
        x.requires_grad_(True)
    else:
        x.data.requires_grad_(True)
    args = (x,) if hx is None else (x, hx)
    seed = 1234

    # FusedLSTM: masks drawn inside the call
    torch.manual_seed(seed)
    got = outputs(fused(*args))
    after_fused = torch.get_rng_state()
    loss = loss_of(*got, torch.Generator().manual_seed(5))
    inputs = [x if isinstance(x, torch.Tensor) else x.data] + list(hx or ())
    got_input_grads = torch.autograd.grad(loss, inputs + list(fused.parameters()))

    # the reference: same seed, masks drawn here in parameter order, then nn.LSTM's call
    # (which draws its dropout between layers after them)
    torch.manual_seed(seed)
    raw = dict(ref.named_parameters())
    scales = draw_scales(cfg, p, raw)
    dropped = {n: (raw[n].detach() * s).requires_grad_(True) for n, s in scales.items()}
    want = outputs(functional_call(ref, dropped, args))
    assert torch.equal(torch.get_rng_state(), after_fused), "a different number of draws"
    loss = loss_of(*want, torch.Generator().manual_seed(5))
    names = [n for n, _ in ref.named_parameters()]
    others = [raw[n] for n in names if n not in dropped]
    grads = torch.autograd.grad(loss, inputs + others + list(dropped.values()))
    want_input_grads = list(grads[:len(inputs)])
    by_name = dict(zip([n for n in names if n not in dropped], grads[len(inputs):]))
    for (n, s), g in zip(scales.items(), grads[len(inputs) + len(others):]):
        by_name[n] = g * s  # d loss / d raw weight_hh = grad(dropped) * mask / (1 - p)
    want_grads = want_input_grads + [by_name[n] for n in names]

    for what, a, b in zip(("output", "h_n", "c_n"), got, want):
        assert close(a, b), f"{what}: {(a - b).abs().max().item():.3g}"
    got_names = ["input", "h0", "c0"][:len(inputs)] + [n for n, _ in fused.named_parameters()]
    assert got_names[len(inputs):] == names
    for n, a, b in zip(got_names, got_input_grads, want_grads):
        assert close(a, b), f"grad of {n}: {(a - b).abs().max().item():.3g}"
    # the parameters stayed the Parameters, untouched
    for n, w in fused.named_parameters():
        assert type(w) is nn.Parameter and torch.equal(w, raw[n]), n


def test_lengths_and_reset_get_the_same_masks():
    """forward's lengths= and reset= run the same layers: under one seed, the same masks as
    the PackedSequence call and the plain call."""
    cfg = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True)
    _, fused = pair(11, 0.5, **cfg)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    torch.manual_seed(7)
    y, (h, c) = fused(x, lengths=lengths)
    torch.manual_seed(7)
    yp, (hp, cp) = fused(pack_padded_sequence(x, lengths, enforce_sorted=False))
    yp, _ = pad_packed_sequence(yp, total_length=6)
    assert close(y, yp) and close(h, hp) and close(c, cp)
    torch.manual_seed(8)
    y, (h, c) = fused(x, reset=torch.zeros(6, 3, dtype=torch.bool))
    torch.manual_seed(8)
    y2, (h2, c2) = fused(x)
    assert close(y, y2) and close(h, h2) and close(c, c2)
    torch.manual_seed(8)
    y3 = fused(x)[0]
    torch.manual_seed(9)
    assert not close(y3, fused(x)[0])  # the masks are drawn: another seed, other outputs


def test_applies_to_the_parametrized_weight():
    """Under a parametrization weight_hh is computed, then dropped; the gradient reaches the
    parametrization's original through the mask."""
    from torch.nn.utils import parametrize

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    p = 0.5
    cfg = dict(input_size=3, hidden_size=5)
    ref, fused = pair(12, p, **cfg)
    parametrize.register_parametrization(fused, "weight_hh_l0", Double())
    original = fused.parametrizations.weight_hh_l0.original
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.manual_seed(3)
    y = fused(x)[0]
    (g_orig,) = torch.autograd.grad(y.sum(), [original])
    torch.manual_seed(3)
    scales = draw_scales(cfg, p, dict(ref.named_parameters()))
    dropped = (2 * original.detach() * scales["weight_hh_l0"]).requires_grad_(True)
    want = functional_call(ref, {"weight_hh_l0": dropped}, (x,))[0]
    (g_dropped,) = torch.autograd.grad(want.sum(), [dropped])
    assert close(y, want)
    assert close(g_orig, 2 * g_dropped * scales["weight_hh_l0"])


def test_autocast_drops_the_weight_then_casts():
    """Under CPU autocast the dropped weight is the float32 one, cast as any weight is: the
    same as FusedLSTM without weight drop given that dropped weight."""
    cfg = dict(input_size=3, hidden_size=8, num_layers=2)
    torch.manual_seed(13)
    fused = FusedLSTM(**cfg, weight_drop=0.5)
    plain = copy.deepcopy(fused)
    plain.weight_drop = 0.0
    x = torch.randn(5, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(4)
        got = fused(x)
        torch.manual_seed(4)
        scales = draw_scales(cfg, 0.5, dict(plain.named_parameters()))
        want = functional_call(plain, {n: getattr(plain, n) * s for n, s in scales.items()},
                               (x,))
    for a, b in zip(outputs(got), outputs(want)):
        assert a.dtype == b.dtype == torch.bfloat16
        assert torch.equal(a, b)


# ---- (3) eval mode: nn.LSTM with the same weights, no draw ----

@pytest.mark.parametrize("case", ["2-layer-bidirectional-dropout-state", "proj", "packed"])
def test_eval_mode_is_nn_lstm(case):
    cfg, how = DROP_CONFIGS[case]
    ref, fused = pair(14, 0.5, **cfg)
    ref.eval()
    fused.eval()
    x, hx = make_input(cfg, **how)
    args = (x,) if hx is None else (x, hx)
    before = torch.get_rng_state()
    got = outputs(fused(*args))
    assert torch.equal(torch.get_rng_state(), before)
    for a, b in zip(got, outputs(ref(*args))):
        assert close(a, b)
    again = outputs(fused(*args))
    for a, b in zip(got, again):
        assert torch.equal(a, b)


# ---- (4) masks differ between calls; about p of weight_hh is dropped ----

@pytest.mark.parametrize("p", [0.2, 0.5])
def test_masks_change_between_calls_and_drop_a_fraction_p(p):
    H = 192  # weight_hh: 768 x 192 = 147,456 elements
    torch.manual_seed(15)
    fused = FusedLSTM(4, H, weight_drop=p)
    x = torch.randn(3, 2, 4)
    hx = (torch.randn(1, 2, H), torch.randn(1, 2, H))
    patterns, ys = [], []
    for _ in range(2):
        y, _ = fused(x, hx)
        (g,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), [fused.weight_hh_l0])
        patterns.append(g == 0)  # dropped elements get no gradient
        ys.append(y)
    assert not torch.equal(ys[0], ys[1])
    assert not torch.equal(patterns[0], patterns[1])
    n = patterns[0].numel()
    for dropped in patterns:
        fraction = dropped.float().mean().item()
        # 6 standard deviations of a binomial fraction (about 0.008 here)
        assert abs(fraction - p) <= 6 * math.sqrt(p * (1 - p) / n), fraction
    # the two masks are independent: they agree where chance says
    both = (patterns[0] & patterns[1]).float().mean().item()
    assert abs(both - p * p) <= 6 * math.sqrt(p * p * (1 - p * p) / n), both
    # and weight_ih is never dropped
    y, _ = fused(x, hx)
    (g_ih,) = torch.autograd.grad(y.sum(), [fused.weight_ih_l0])
    assert (g_ih == 0).float().mean().item() < 0.01


def test_each_layer_direction_draws_its_own_mask(monkeypatch):
    """One F.dropout per weight_hh, in parameter order, with p, before any dropout between
    layers; nothing else dropped."""
    cfg = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, dropout=0.25)
    _, fused = pair(16, 0.3, **cfg)
    seen = []
    real = F.dropout

    def spy(t, p=0.5, training=True, inplace=False):
        name = next((n for n, w in fused.named_parameters() if w is t), "activations")
        seen.append((name, p, training))
        return real(t, p, training, inplace)

    monkeypatch.setattr(F, "dropout", spy)
    fused(torch.randn(4, 2, 3, dtype=torch.float64))
    assert seen == [(n, 0.3, True) for n in hh_names(cfg)] + [("activations", 0.25, True)]
    seen.clear()
    fused.eval()
    fused(torch.randn(4, 2, 3, dtype=torch.float64))
    assert seen == []


# ---- (5) gradcheck with the masks fixed ----

@pytest.mark.parametrize("cfg", [dict(input_size=2, hidden_size=3, num_layers=2,
                                      bidirectional=True),
                                 dict(input_size=2, hidden_size=3, proj_size=2)])
def test_gradcheck_with_fixed_masks(cfg):
    _, fused = pair(17, 0.5, **cfg)
    names = [n for n, _ in fused.named_parameters()]
    params = [w.detach().clone().requires_grad_(True) for w in fused.parameters()]
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)

    def f(x, *weights):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(99)  # every evaluation draws the same masks
            y, (h, c) = functional_call(fused, dict(zip(names, weights)), (x,))
        return y, h, c

    assert torch.autograd.gradcheck(f, (x, *params))
    # the masks are really there: the output is not the undropped module's
    plain = copy.deepcopy(fused).eval()
    assert not close(f(x, *params)[0], plain(x)[0])


# ---- (6) bad arguments ----

@pytest.mark.parametrize("value", [True, False, "0.5", None, [0.5], torch.tensor(0.5), 1j])
def test_weight_drop_must_be_a_real_number(value):
    with pytest.raises(TypeError, match=r"weight_drop should be a real number in \[0, 1\)"):
        FusedLSTM(3, 5, weight_drop=value)


@pytest.mark.parametrize("value", [1, 1.0, 1.5, -0.1, -1, float("nan"), float("inf")])
def test_weight_drop_must_be_in_0_1(value):
    with pytest.raises(ValueError, match=r"weight_drop.*\[0, 1\), got " + repr(value)):
        FusedLSTM(3, 5, weight_drop=value)


def test_weight_drop_is_keyword_only_and_takes_any_real():
    with pytest.raises(TypeError):
        FusedLSTM(3, 5, 1, True, False, 0.0, False, 0, None, None, 0.5)
    import fractions

    import numpy as np
    for value in (0.5, 0, np.float32(0.25), fractions.Fraction(1, 3)):
        assert FusedLSTM(3, 5, weight_drop=value).weight_drop == float(value)


# ---- (7) to_lstm, torch.jit.script, ONNX in training mode: refused, not silently lost ----

def test_to_lstm_refuses_weight_drop():
    fused = FusedLSTM(3, 5, weight_drop=0.5)
    with pytest.raises(RuntimeError, match=r"weight_drop=0\.5.*nn\.LSTM has no weight drop"
                                           r".*rather than warns"):
        fused.to_lstm()
    fused.eval()  # the nn.LSTM could be put back in training mode: refused in eval mode too
    with pytest.raises(RuntimeError, match=r"weight_drop=0\.5"):
        fused.to_lstm()
    fused.weight_drop = 0.0  # what the message suggests for inference
    lstm = fused.to_lstm()
    assert lstm.weight_hh_l0 is fused.weight_hh_l0


def test_jit_script_refuses_weight_drop():
    model = nn.Sequential(FusedLSTM(3, 5, weight_drop=0.25))
    with pytest.raises(RuntimeError, match=r"torch\.jit\.script.*weight_drop=0\.25.*no weight "
                                           r"drop"):
        torch.jit.script(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(FusedLSTM(3, 5))  # without weight drop it still scripts


def test_onnx_export_in_training_mode_refused_eval_mode_unaffected(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(18)
    model = FusedLSTM(3, 5, num_layers=2, bidirectional=True, weight_drop=0.5)
    x = torch.randn(4, 2, 3)
    # the TorchScript exporter exports in eval mode unless told otherwise (training=EVAL)
    for dynamo, how in ((True, {}), (False, {"training": torch.onnx.TrainingMode.TRAINING}),
                        (False, {"training": torch.onnx.TrainingMode.PRESERVE})):
        with pytest.raises(Exception, match=r"training mode with weight_drop=0\.5.*model\.eval"):
            torch.onnx.export(model, (x,), str(tmp_path / "t.onnx"), dynamo=dynamo,
                              verbose=False, **how)
    assert model.training
    model.eval()
    with torch.no_grad():
        want = model(x)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dynamo in (True, False):
            path = str(tmp_path / f"e{dynamo}.onnx")
            torch.onnx.export(model, (x,), path, dynamo=dynamo, verbose=False)
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
            assert (torch.from_numpy(got) - want).abs().max().item() <= 1e-5


def test_onnx_refusal_is_ahead_of_the_fused_ops():
    """_refuse is where the ONNX path checks a module: weight drop in training mode is there."""
    model = FusedLSTM(3, 5, weight_drop=0.5)
    with pytest.raises(onnx_export.OnnxExportError, match="weight_drop"):
        onnx_export._refuse(model, torch.randn(2, 1, 3))
    onnx_export._refuse(model.eval(), torch.randn(2, 1, 3))


def test_dynamic_quantization_is_inference_and_keeps_working():
    fused = FusedLSTM(3, 5, weight_drop=0.5).eval()
    q = torch.ao.quantization.quantize_dynamic(nn.Sequential(fused), {FusedLSTM},
                                               dtype=torch.qint8)
    assert isinstance(q[0], torch.ao.nn.quantized.dynamic.LSTM)


# ---- (8) parameters, state_dict, pickling, repr ----

def test_state_dict_unchanged_and_loads_into_nn_lstm():
    cfg = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2)
    torch.manual_seed(19)
    fused = FusedLSTM(**cfg, weight_drop=0.5)
    torch.manual_seed(19)
    plain = FusedLSTM(**cfg)
    x = torch.randn(4, 2, 3)
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    fused(x)[0].sum().backward()  # a training call leaves nothing behind
    sd = fused.state_dict()
    assert list(sd) == list(plain.state_dict()) == list(nn.LSTM(**cfg).state_dict())
    for k in sd:
        assert torch.equal(sd[k], before[k]) and torch.equal(sd[k], plain.state_dict()[k]), k
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert list(fused.buffers()) == []
    ref = nn.LSTM(**cfg)
    ref.load_state_dict(sd, strict=True)
    fused.eval()
    ref.eval()
    assert torch.allclose(fused(x)[0], ref(x)[0], atol=1e-6)


def test_pickle_repr_and_older_pickles():
    fused = FusedLSTM(3, 5, num_layers=2, weight_drop=0.5)
    assert repr(fused) == "FusedLSTM(3, 5, num_layers=2, weight_drop=0.5)"
    assert "weight_drop" not in repr(FusedLSTM(3, 5))
    buf = io.BytesIO()
    torch.save(fused, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=False).weight_drop == 0.5
    assert copy.deepcopy(fused).weight_drop == 0.5
    state = pickle.loads(pickle.dumps(fused)).__dict__.copy()
    del state["weight_drop"]  # as pickled before the option existed
    old = FusedLSTM.__new__(FusedLSTM)
    old.__setstate__(state)
    assert old.weight_drop == 0.0
    x = torch.randn(4, 2, 3)
    before = torch.get_rng_state()
    old(x)
    assert torch.equal(torch.get_rng_state(), before)


# ---- (9) torch.compile equals eager in training mode under the same seed ----

@pytest.mark.parametrize("cfg", [dict(input_size=3, hidden_size=5, num_layers=2,
                                      bidirectional=True, dropout=0.3),
                                 dict(input_size=3, hidden_size=6, proj_size=2,
                                      batch_first=True)])
def test_compile_matches_eager_under_the_same_seed(cfg):
    torch._dynamo.reset()
    try:
        _, fused = pair(20, 0.5, dtype=torch.float32, **cfg)
        compiled = torch.compile(fused, backend="aot_eager", fullgraph=True)
        x = torch.randn(2, 5, 3) if cfg.get("batch_first") else torch.randn(5, 2, 3)
        results = []
        for run in (fused, compiled, compiled):  # the second compiled call reuses the graph
            torch.manual_seed(21)
            y, (h, c) = run(x)
            loss = loss_of(y, h, c, torch.Generator().manual_seed(1))
            results.append([y, h, c, *torch.autograd.grad(loss, list(fused.parameters()))])
        for other in results[1:]:
            for a, b in zip(results[0], other):
                assert torch.allclose(a, b, rtol=1e-6, atol=1e-6)
        torch.manual_seed(22)
        assert not torch.allclose(compiled(x)[0], results[0][0])  # masks drawn in the graph
    finally:
        torch._dynamo.reset()
