"""PyTorch's utilities around a module, on FusedLSTM as on nn.LSTM.

Each test applies a utility to an nn.LSTM and to a FusedLSTM holding the same weights
and compares what comes out: weight reparametrisations (parametrize, weight_norm,
spectral_norm, prune, plain tensors, tied weights), torch.func (grad, vjp, jacrev, jvp,
jacfwd, vmap), TorchScript (trace, script), torch.fx, dynamic quantization, and the
attributes and helpers of nn.LSTM that code written for it reads.
"""

import copy
import io
import warnings

import pytest
import torch
import torch.nn.utils.parametrize as parametrize
import torch.nn.utils.prune as prune
from torch import nn
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vjp, vmap

import fused_lstm
from fused_lstm import FusedLSTM

from helpers import flat_outputs, make_pair, rel_err

pytestmark = [
    pytest.mark.skipif(not fused_lstm.extension_loaded(), reason="compiled extension not built"),
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated"),
    pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated"),
    pytest.mark.filterwarnings("ignore:torch.nn.utils.weight_norm is deprecated"),
    pytest.mark.filterwarnings("ignore:.*torch.ao.quantization.*deprecated"),
    pytest.mark.filterwarnings("ignore:.*migrate to use torchao"),
]

CFG = dict(input_size=5, hidden_size=7, num_layers=2, bidirectional=True)
TOL64 = 1e-10


def pair64(seed=0, **overrides):
    cfg = dict(CFG, **overrides)
    return make_pair(dtype=torch.float64, seed=seed, **cfg)


def inputs64(seed=1, T=6, B=3, I=5):
    torch.manual_seed(seed)
    return torch.randn(T, B, I, dtype=torch.float64)


def assert_close(got, want, tol=TOL64, what=""):
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape, f"{what}[{i}]: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        err = rel_err(a, b)
        assert err <= tol, f"{what}[{i}]: relative error {err:.3g} > {tol:g}"


def loss_and_grads(module, x, wrt):
    """Outputs of module(x) and the gradients of a fixed random projection of them."""
    out = flat_outputs(module(x))
    gen = torch.Generator().manual_seed(7)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in out)
    return [o.detach() for o in out], torch.autograd.grad(loss, wrt)


# ---- weights reparametrised, replaced or tied ----

def _custom(module, name):  # a parametrization of our own: the weight as a skew part plus I
    class Scaled(nn.Module):
        def forward(self, w):
            return 0.5 * w + 0.25 * w.tanh()

    parametrize.register_parametrization(module, name, Scaled())


REPARAMETRISATIONS = {
    "parametrizations.weight_norm":
        lambda m, n: nn.utils.parametrizations.weight_norm(m, n),
    "weight_norm (old hook)": lambda m, n: nn.utils.weight_norm(m, n),
    "parametrizations.spectral_norm":
        lambda m, n: nn.utils.parametrizations.spectral_norm(m, n),
    "register_parametrization": _custom,
    "prune.l1_unstructured": lambda m, n: prune.l1_unstructured(m, n, amount=0.4),
}


def underlying(module):
    """The leaf tensors training would update: parameters after reparametrisation."""
    return [p for _, p in sorted(module.named_parameters())]


@pytest.mark.parametrize("how", list(REPARAMETRISATIONS))
@pytest.mark.parametrize("name", ["weight_hh_l0", "weight_ih_l1_reverse"])
def test_reparametrised_weight_matches_nn_lstm(how, name):
    """The weight as the reparametrisation gives it reaches the kernels, and the gradients
    reach the parameters behind it, as with nn.LSTM."""
    ref, fused = pair64()
    for m in (ref, fused):
        torch.manual_seed(3)  # spectral_norm draws its power-iteration vectors here
        REPARAMETRISATIONS[how](m, name)
    ref.eval(), fused.eval()  # spectral_norm: no power iteration step during the calls
    x = inputs64()
    out_r, g_r = loss_and_grads(ref, x, underlying(ref))
    out_f, g_f = loss_and_grads(fused, x, underlying(fused))
    assert_close(out_f, out_r, what="outputs")
    assert_close(g_f, g_r, what="gradients of the underlying parameters")
    assert len(g_f) > 0 and all(g.abs().sum() > 0 for g in g_f)
    # _flat_weights shows the weight as the reparametrisation makes it
    idx = fused._flat_weights_names.index(name)
    assert torch.equal(fused._flat_weights[idx], getattr(fused, name))
    assert torch.equal(fused._flat_weights[idx], ref._flat_weights[idx])


@pytest.mark.parametrize("how", ["parametrizations.weight_norm", "register_parametrization",
                                 "prune.l1_unstructured"])
def test_removing_the_reparametrisation_restores_a_plain_weight(how):
    ref, fused = pair64()
    name = "weight_hh_l1"
    for m in (ref, fused):
        REPARAMETRISATIONS[how](m, name)
        if how.startswith("prune"):
            prune.remove(m, name)
        else:
            parametrize.remove_parametrizations(m, name, leave_parametrized=True)
        assert isinstance(m._parameters[name], nn.Parameter)
    assert sorted(fused.state_dict()) == sorted(ref.state_dict())
    x = inputs64()
    out_r, g_r = loss_and_grads(ref, x, list(ref.parameters()))
    out_f, g_f = loss_and_grads(fused, x, list(fused.parameters()))
    assert_close(out_f, out_r)
    assert_close(g_f, g_r)


def test_weight_replaced_by_a_plain_tensor():
    """AWD-LSTM's weight drop: the parameter deleted, a tensor computed from it set in its
    place before each call."""
    ref, fused = pair64()
    x = inputs64()
    outs = []
    for m in (ref, fused):
        raw = m.weight_hh_l0
        del m.weight_hh_l0
        m.register_parameter("weight_hh_l0_raw", raw)
        torch.manual_seed(11)
        m.weight_hh_l0 = nn.functional.dropout(m.weight_hh_l0_raw, p=0.3, training=True)
        idx = m._flat_weights_names.index("weight_hh_l0")
        assert m._flat_weights[idx] is m.weight_hh_l0
        outs.append(loss_and_grads(m, x, list(m.parameters())))
    assert_close(outs[1][0], outs[0][0])
    assert_close(outs[1][1], outs[0][1])


def test_weights_tied_between_layers():
    ref, fused = pair64(bidirectional=False, input_size=7)
    for m in (ref, fused):
        m.weight_hh_l1 = m.weight_hh_l0  # the same Parameter in both layers
    x = inputs64(I=7)
    out_r, g_r = loss_and_grads(ref, x, list(ref.parameters()))
    out_f, g_f = loss_and_grads(fused, x, list(fused.parameters()))
    assert len(g_f) == len(g_r)
    assert_close(out_f, out_r)
    assert_close(g_f, g_r)


# ---- torch.func ----

def functional(module):
    params = {k: v.detach() for k, v in module.named_parameters()}

    def f(p, x):
        y, (h, c) = functional_call(module, p, (x,))
        return y, h, c

    return params, f


@pytest.mark.parametrize("cfg", [dict(), dict(proj_size=3, bidirectional=False)],
                         ids=["bidirectional", "proj"])
def test_func_grad_vjp_jacrev_match_nn_lstm(cfg):
    ref, fused = pair64(**cfg)
    x = inputs64()
    (p_r, f_r), (p_f, f_f) = functional(ref), functional(fused)

    def loss(f):
        return lambda p, x: sum((o ** 2).sum() for o in f(p, x))

    g_r = grad(loss(f_r), argnums=(0, 1))(p_r, x)
    g_f = grad(loss(f_f), argnums=(0, 1))(p_f, x)
    assert_close([g_f[1]] + [g_f[0][k] for k in p_f], [g_r[1]] + [g_r[0][k] for k in p_r],
                 what="grad")

    cot = tuple(torch.randn_like(o) for o in f_r(p_r, x))
    _, pull_r = vjp(lambda x: f_r(p_r, x), x)
    _, pull_f = vjp(lambda x: f_f(p_f, x), x)
    assert_close(pull_f(cot), pull_r(cot), what="vjp")

    small = x[:2, :2]
    j_r = jacrev(lambda x: f_r(p_r, x)[0])(small)
    j_f = jacrev(lambda x: f_f(p_f, x)[0])(small)
    assert_close([j_f], [j_r], what="jacrev")


def test_func_jvp_and_jacfwd_are_exact():
    """Forward mode: the tangent of the recurrence, against nn.LSTM's own (float64) and
    against finite differences; never zeros."""
    ref, fused = pair64()
    x = inputs64()
    (p_r, f_r), (p_f, f_f) = functional(ref), functional(fused)
    t_x = torch.randn_like(x)
    t_p = {k: torch.randn_like(v) for k, v in p_r.items()}
    _, tan_r = jvp(f_r, (p_r, x), (t_p, t_x))
    _, tan_f = jvp(f_f, (p_f, x), (t_p, t_x))
    assert_close(tan_f, tan_r, what="jvp")
    assert all(t.abs().max() > 0 for t in tan_f)
    eps = 1e-6  # central differences along the same direction
    plus = f_f({k: v + eps * t_p[k] for k, v in p_f.items()}, x + eps * t_x)
    minus = f_f({k: v - eps * t_p[k] for k, v in p_f.items()}, x - eps * t_x)
    assert_close(tan_f, [(a - b) / (2 * eps) for a, b in zip(plus, minus)], tol=1e-6,
                 what="jvp against finite differences")

    small = x[:2, :2]
    jf_r = jacfwd(lambda x: f_r(p_r, x)[0])(small)
    jf_f = jacfwd(lambda x: f_f(p_f, x)[0])(small)
    assert_close([jf_f], [jf_r], what="jacfwd")
    assert_close([jf_f], [jacrev(lambda x: f_f(p_f, x)[0])(small)], what="jacfwd vs jacrev")


def test_forward_ad_dual_tensors_and_gradcheck():
    """torch.autograd.forward_ad (outside torch.func), and gradcheck in both modes."""
    _, fused = pair64(num_layers=1)
    x = inputs64(T=3, B=2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: fused(x)[0], (x,), check_forward_ad=True)


def test_func_vmap_matches_a_loop():
    ref, fused = pair64()
    torch.manual_seed(5)
    xs = torch.randn(3, 6, 2, 5, dtype=torch.float64)
    got = vmap(lambda x: fused(x)[0])(xs)
    want = torch.stack([ref(x)[0] for x in xs])
    assert_close([got], [want], what="vmap")


def test_per_sample_gradients_vmap_of_grad():
    """The per-sample-gradient recipe of torch.func's docs (nn.LSTM fails under it, so its
    gradients come one sample at a time)."""
    ref, fused = pair64(bidirectional=False)
    (p_r, f_r), (p_f, f_f) = functional(ref), functional(fused)
    torch.manual_seed(6)
    xs = torch.randn(4, 6, 1, 5, dtype=torch.float64)

    def loss(f):
        return lambda p, x: f(p, x)[0].pow(2).sum()

    g_f = vmap(grad(loss(f_f)), in_dims=(None, 0))(p_f, xs)
    one_at_a_time = [grad(loss(f_r))(p_r, x) for x in xs]
    g_r = {k: torch.stack([g[k] for g in one_at_a_time]) for k in p_r}
    assert_close([g_f[k] for k in p_f], [g_r[k] for k in p_r], what="per-sample grads")


# ---- TorchScript ----

class Tagger(nn.Module):
    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm
        torch.manual_seed(0)  # the same head whichever LSTM it follows
        features = (lstm.proj_size or lstm.hidden_size) * (2 if lstm.bidirectional else 1)
        self.head = nn.Linear(features, 3, dtype=lstm.weight_ih_l0.dtype)

    def forward(self, x):
        y, (h, c) = self.lstm(x)
        return self.head(y), h, c


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_jit_trace_with_its_check_and_a_second_length(mode):
    ref, fused = make_pair(seed=0, dropout=0.0, **CFG)
    model = Tagger(fused)
    getattr(model, mode)()
    x = torch.randn(6, 3, 5)
    traced = torch.jit.trace(model, (x,))  # default check_trace=True reruns and compares
    for T in (6, 11):
        x = torch.randn(T, 3, 5)
        assert_close(traced(x), model(x), tol=1e-6, what=f"traced (T={T})")
    graph = str(traced.inlined_graph)
    assert "fused_lstm::lstm_layer_forward" in graph
    # the traced model trains: gradients through the recorded ops
    x = torch.randn(6, 3, 5, requires_grad=True)
    g = torch.autograd.grad(traced(x)[0].sum(), x)[0]
    g_ref = torch.autograd.grad(model(x)[0].sum(), x)[0]
    assert_close([g], [g_ref], tol=1e-5, what="gradient through the trace")
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    assert_close(loaded(x), traced(x), tol=0, what="saved and loaded trace")


def test_jit_script_compiles_the_equivalent_nn_lstm():
    ref, fused = make_pair(seed=0, proj_size=3, **CFG)
    model = Tagger(fused)
    with pytest.warns(UserWarning, match="scripted as the equivalent nn.LSTM"):
        scripted = torch.jit.script(model)
    x = torch.randn(6, 3, 5)
    assert_close(scripted(x), model(x), tol=1e-6, what="scripted")
    # the scripted model holds the same parameters (training one trains the other)
    assert scripted.lstm.weight_hh_l0.data_ptr() == fused.weight_hh_l0.data_ptr()
    assert sorted(scripted.state_dict()) == sorted(model.state_dict())


def test_jit_script_refuses_reparametrised_weights_clearly():
    _, fused = make_pair(seed=0, **CFG)
    nn.utils.parametrizations.weight_norm(fused, "weight_hh_l0")
    with pytest.raises(RuntimeError, match="to_lstm needs every weight to be a parameter"):
        torch.jit.script(Tagger(fused))


# ---- torch.fx ----

def test_fx_symbolic_trace_keeps_fused_lstm_a_leaf_like_nn_lstm():
    ref, fused = make_pair(seed=0, batch_first=True, **CFG)
    traced = {}
    for name, lstm in (("nn.LSTM", ref), ("FusedLSTM", fused)):
        model = Tagger(lstm)
        gm = torch.fx.symbolic_trace(model)
        traced[name] = [(n.op, str(n.target)) for n in gm.graph.nodes]
        x = torch.randn(3, 6, 5)
        assert_close(gm(x), model(x), tol=0, what=f"{name} fx graph")
        assert isinstance(gm.lstm, type(lstm))
    assert traced["FusedLSTM"] == traced["nn.LSTM"]
    assert ("call_module", "lstm") in traced["FusedLSTM"]


def test_fx_symbolic_trace_of_fused_lstm_itself_says_why():
    with pytest.raises(torch.fx.proxy.TraceError, match="model holding FusedLSTM"):
        torch.fx.symbolic_trace(FusedLSTM(5, 7))


# ---- dynamic quantization ----

@pytest.mark.parametrize("dtype", [torch.qint8, torch.float16])
def test_quantize_dynamic_named_gives_torchs_quantized_lstm(dtype):
    ref, fused = make_pair(seed=0, **CFG)
    model_r, model_f = Tagger(ref), Tagger(fused)
    q_r = torch.ao.quantization.quantize_dynamic(model_r, {nn.LSTM, nn.Linear}, dtype=dtype)
    q_f = torch.ao.quantization.quantize_dynamic(model_f, {FusedLSTM, nn.Linear}, dtype=dtype)
    assert type(q_f.lstm) is type(q_r.lstm) is torch.ao.nn.quantized.dynamic.LSTM
    assert isinstance(model_f.lstm, FusedLSTM)  # quantize_dynamic copied, the original stays
    x = torch.randn(6, 3, 5)
    assert_close(q_f(x), q_r(x), tol=0, what="quantized")
    err = rel_err(q_f(x)[0], model_f(x)[0])
    assert 0 < err < (5e-2 if dtype == torch.qint8 else 1e-3)


def test_quantize_dynamic_default_spec_leaves_fused_lstm_float():
    """quantize_dynamic's default spec names torch's module types only (README says to
    name FusedLSTM); what it does name is quantized as usual."""
    _, fused = make_pair(seed=0, **CFG)
    q = torch.ao.quantization.quantize_dynamic(Tagger(fused), dtype=torch.qint8)
    assert isinstance(q.lstm, FusedLSTM)
    assert type(q.head) is torch.ao.nn.quantized.dynamic.Linear


# ---- nn.LSTM's attributes and helpers ----

def test_attributes_code_written_for_nn_lstm_reads():
    ref, fused = make_pair(seed=0, proj_size=3, **CFG)
    assert fused.mode == ref.mode == "LSTM"
    assert fused._flat_weights_names == ref._flat_weights_names
    assert all(a is b for a, b in zip(fused._flat_weights, fused.parameters()))
    assert [t.shape for t in fused._flat_weights] == [t.shape for t in ref._flat_weights]
    # reassigning a weight shows in _flat_weights, as with nn.LSTM
    new = nn.Parameter(torch.randn_like(fused.weight_hh_l1))
    fused.weight_hh_l1 = new
    assert fused._flat_weights[fused._flat_weights_names.index("weight_hh_l1")] is new
    with pytest.raises(AttributeError, match="assign the weights themselves"):
        fused._flat_weights = []
    # survives pickling, as nn.LSTM's does
    again = copy.deepcopy(fused)
    assert again._flat_weights_names == ref._flat_weights_names and again.mode == "LSTM"


@pytest.mark.parametrize("batch_first", [False, True])
def test_check_helpers_match_nn_lstm(batch_first):
    ref, fused = make_pair(seed=0, proj_size=3, batch_first=batch_first, **CFG)
    x = torch.randn(4, 6, 5)
    for name in ("get_expected_hidden_size", "get_expected_cell_size"):
        assert getattr(fused, name)(x, None) == getattr(ref, name)(x, None)
    packed = nn.utils.rnn.pack_sequence([torch.randn(n, 5) for n in (5, 3, 2)])
    assert fused.get_expected_hidden_size(packed.data, packed.batch_sizes) == \
        ref.get_expected_hidden_size(packed.data, packed.batch_sizes)
    good = (torch.zeros(ref.get_expected_hidden_size(x, None)),
            torch.zeros(ref.get_expected_cell_size(x, None)))
    fused.check_forward_args(x, good, None)
    ref.check_forward_args(x, good, None)
    bad_cases = [
        (x, (good[0][:, :2], good[1]), None),           # h0 of another batch
        (x, (good[0], good[1][..., :2]), None),         # c0 of another width
        (x[..., :2], good, None),                       # input of another width
        (x[0], good, None),                             # input of the wrong rank
        (x.double(), good, None),                       # input of another dtype
    ]
    for args in bad_cases:
        with pytest.raises(Exception) as want:
            ref.check_forward_args(*args)
        with pytest.raises(want.type) as got:
            fused.check_forward_args(*args)
        assert str(got.value) == str(want.value)
    for args in bad_cases[2:]:
        with pytest.raises(Exception) as want:
            ref.check_input(args[0], None)
        with pytest.raises(want.type):
            fused.check_input(args[0], None)
    perm = torch.tensor([2, 0, 1])
    h = (torch.randn(4, 3, 3), torch.randn(4, 3, 7))
    for a, b in zip(fused.permute_hidden(h, perm), ref.permute_hidden(h, perm)):
        assert torch.equal(a, b)
    assert fused.permute_hidden(h, None) is h


def test_deliberate_difference_is_not_an_nn_lstm_subclass():
    """FusedLSTM is not an nn.LSTM subclass (torch.compile refuses nn.LSTM by type)."""
    assert not isinstance(FusedLSTM(5, 7), nn.LSTM)


def test_warnings_free_forward_for_plain_modules():
    """None of the new paths warns or slows a plain module's call: same numbers as before."""
    ref, fused = make_pair(seed=0, **CFG)
    x = torch.randn(6, 3, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fused(x)
    assert_close(flat_outputs(out), flat_outputs(ref(x)), tol=1e-5)
