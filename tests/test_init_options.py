"""FusedLSTM's initialisation options: forget_bias= and chrono_init= (keyword-only, off by
default). With them off FusedLSTM initialises exactly as nn.LSTM; with them on only the
biases change, and the state_dict still loads into nn.LSTM.

Gate order in the stacked biases is i, f, g, o, H rows each.
"""

import io
import math
import pickle
import re

import pytest
import torch
from torch import nn

from fused_lstm import FusedLSTM

CONFIGS = [dict(input_size=3, hidden_size=5),
           dict(input_size=4, hidden_size=6, num_layers=2, bidirectional=True),
           dict(input_size=2, hidden_size=7, num_layers=2, proj_size=3, batch_first=True,
                bidirectional=True)]


def suffixes(cfg):
    """Every layer direction's parameter-name suffix, _l0, _l0_reverse, _l1, ..."""
    directions = 2 if cfg.get("bidirectional") else 1
    return [f"_l{k}{'_reverse' if d else ''}"
            for k in range(cfg.get("num_layers", 1)) for d in range(directions)]


def seeded(seed, make):
    torch.manual_seed(seed)
    return make()


def gates(b, H):
    """A stacked [4H] bias as its i, f, g, o slices."""
    return b[0:H], b[H:2 * H], b[2 * H:3 * H], b[3 * H:4 * H]


# ---- (1) off by default: nn.LSTM's initialisation, draw for draw ----

@pytest.mark.parametrize("cfg", CONFIGS + [dict(input_size=3, hidden_size=4, bias=False)])
@pytest.mark.parametrize("seed", [0, 123])
def test_defaults_initialise_exactly_as_nn_lstm(cfg, seed):
    ref = seeded(seed, lambda: nn.LSTM(**cfg)).state_dict()
    fused = seeded(seed, lambda: FusedLSTM(**cfg))
    explicit = seeded(seed, lambda: FusedLSTM(**cfg, forget_bias=0.0, chrono_init=None))
    for m in (fused, explicit):
        sd = m.state_dict()
        assert list(sd) == list(ref)
        for name in ref:
            assert torch.equal(sd[name], ref[name]), name
    # and the generator is left where nn.LSTM leaves it: no extra draws
    after_ref = seeded(seed, lambda: (nn.LSTM(**cfg), torch.rand(3))[1])
    after_fused = seeded(seed, lambda: (FusedLSTM(**cfg, forget_bias=0), torch.rand(3))[1])
    assert torch.equal(after_ref, after_fused)


# ---- (2) forget_bias: nn.LSTM's initialisation + b on bias_ih's forget slice ----

@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("b", [1.0, -0.5, 3])
def test_forget_bias_adds_b_to_bias_ih_forget_slice(cfg, b):
    H = cfg["hidden_size"]
    ref = seeded(7, lambda: nn.LSTM(**cfg)).state_dict()
    fused = seeded(7, lambda: FusedLSTM(**cfg, forget_bias=b))
    sd = fused.state_dict()
    assert list(sd) == list(ref)
    for sfx in suffixes(cfg):
        want = ref["bias_ih" + sfx].clone()
        want[H:2 * H] = want[H:2 * H] + b
        assert torch.equal(sd["bias_ih" + sfx], want), sfx
        # the total forget bias b_ih_f + b_hh_f is shifted by b, the other gates' not
        total = sd["bias_ih" + sfx] + sd["bias_hh" + sfx]
        total_ref = ref["bias_ih" + sfx] + ref["bias_hh" + sfx]
        shift = gates(total - total_ref, H)
        torch.testing.assert_close(shift[1], torch.full((H,), float(b)))
        for k in (0, 2, 3):
            assert torch.equal(shift[k], torch.zeros(H)), (sfx, k)
    for name in ref:  # everything but the bias_ih tensors is nn.LSTM's, unchanged
        if not name.startswith("bias_ih"):
            assert torch.equal(sd[name], ref[name]), name
    # reset_parameters starts again from nn.LSTM's initialisation and adds b once more
    ref_m = nn.LSTM(**cfg)
    torch.manual_seed(11)
    ref_m.reset_parameters()
    torch.manual_seed(11)
    fused.reset_parameters()
    for sfx in suffixes(cfg):
        want = ref_m.state_dict()["bias_ih" + sfx].clone()
        want[H:2 * H] += b
        assert torch.equal(getattr(fused, "bias_ih" + sfx).detach(), want), sfx


# ---- (3) chrono initialisation ----

def check_chrono(fused, cfg, T_max, ref=None):
    """The chrono formulas, checked on the values: per layer direction, b_ih_f = log u with
    u in [1, T_max - 1], b_ih_i = -b_ih_f, b_hh_i = b_hh_f = 0, the g and o slices from
    the default uniform(-1/sqrt(H), 1/sqrt(H)) (equal to nn.LSTM's under the same seed
    when `ref` is given). Returns the forget biases."""
    H = cfg["hidden_size"]
    bound = 1 / math.sqrt(H)
    sd = fused.state_dict()
    forget = []
    for sfx in suffixes(cfg):
        i_ih, f_ih, g_ih, o_ih = gates(sd["bias_ih" + sfx], H)
        i_hh, f_hh, g_hh, o_hh = gates(sd["bias_hh" + sfx], H)
        assert torch.equal(i_ih, -f_ih), sfx
        assert f_ih.min() >= 0 and f_ih.max() <= math.log(T_max - 1) + 1e-6, sfx
        assert torch.equal(i_hh, torch.zeros(H)) and torch.equal(f_hh, torch.zeros(H)), sfx
        for t in (g_ih, o_ih, g_hh, o_hh):
            assert t.abs().max() <= bound, sfx
        assert len(set(f_ih.tolist())) > 1, "chrono draws u at random, per hidden unit"
        forget.append(f_ih.clone())
    if ref is not None:
        for name, want in ref.items():
            if name.startswith("bias_"):
                got_g_o, want_g_o = sd[name][2 * H:], want[2 * H:]
                assert torch.equal(got_g_o, want_g_o), name
            else:
                assert torch.equal(sd[name], want), name
    # each layer direction draws its own u
    assert all(not torch.equal(forget[0], f) for f in forget[1:])
    return forget


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("T_max", [3, 10.0, 784])
def test_chrono_init_formulas(cfg, T_max):
    ref = seeded(3, lambda: nn.LSTM(**cfg)).state_dict()
    fused = seeded(3, lambda: FusedLSTM(**cfg, chrono_init=T_max))
    before = check_chrono(fused, cfg, T_max, ref)
    # reset_parameters applies it again, with new draws
    fused.reset_parameters()
    after = check_chrono(fused, cfg, T_max)
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    assert all(p.is_leaf and p.requires_grad for p in fused.parameters())


def test_chrono_init_draw_order():
    """The draws come after nn.LSTM's initialisation, one Uniform(1, T_max - 1) vector of H
    per layer direction, in parameter order: nn.LSTM's init followed by those draws
    rebuilds the same biases (so a chrono initialisation can be reproduced without
    fused_lstm)."""
    cfg = dict(input_size=3, hidden_size=6, num_layers=2, bidirectional=True)
    H, T_max = 6, 50.0
    torch.manual_seed(21)
    nn.LSTM(**cfg)  # nn.LSTM's initialisation draws first
    u = [torch.empty(H).uniform_(1, T_max - 1) for _ in suffixes(cfg)]
    fused = seeded(21, lambda: FusedLSTM(**cfg, chrono_init=T_max))
    for sfx, u_k in zip(suffixes(cfg), u):
        torch.testing.assert_close(getattr(fused, "bias_ih" + sfx)[H:2 * H].detach(),
                                   torch.log(u_k), rtol=0, atol=0)


@pytest.mark.parametrize("T_max", [10.0, 1000.0])
def test_chrono_forget_bias_is_log_of_a_uniform(T_max):
    """exp(b_ih_f) over many hidden units looks like Uniform(1, T_max - 1): its mean and
    variance within a few standard errors, its range filled, and the Kolmogorov-Smirnov
    distance to that law's CDF small."""
    H = 4096
    torch.manual_seed(0)
    # proj_size=1 keeps weight_hh [4H, 1], so a large H costs little
    fused = FusedLSTM(1, H, proj_size=1, dtype=torch.float64, chrono_init=T_max)
    u = fused.bias_ih_l0[H:2 * H].detach().exp()
    lo, hi = 1.0, T_max - 1
    mean, var = (lo + hi) / 2, (hi - lo) ** 2 / 12
    assert abs(u.mean().item() - mean) < 4 * math.sqrt(var / H)
    # the sample variance's standard error for a uniform law: var * sqrt(0.8 / H)
    assert abs(u.var().item() - var) < 4 * var * math.sqrt(0.8 / H)
    assert u.min() >= lo and u.max() <= hi
    assert u.min() < lo + 0.01 * (hi - lo) and u.max() > hi - 0.01 * (hi - lo)
    s = u.sort().values
    cdf = (s - lo) / (hi - lo)
    n = torch.arange(1, H + 1, dtype=torch.float64)
    ks = torch.maximum(n / H - cdf, cdf - (n - 1) / H).max().item()
    assert ks < 1.95 / math.sqrt(H)  # the 0.1% critical value is 1.95 / sqrt(n)


# ---- (4) the numbers: forward agrees with nn.LSTM holding the same state_dict ----

@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("opts", [dict(forget_bias=1.0), dict(chrono_init=100.0)])
def test_forward_matches_nn_lstm_with_same_state_dict(cfg, opts):
    torch.manual_seed(5)
    fused = FusedLSTM(**cfg, dtype=torch.float64, **opts)
    ref = nn.LSTM(**cfg, dtype=torch.float64)
    ref.load_state_dict(fused.state_dict(), strict=True)  # ordinary biases, same keys
    B, T = 3, 6
    shape = (B, T, cfg["input_size"]) if cfg.get("batch_first") else (T, B, cfg["input_size"])
    x = torch.randn(shape, dtype=torch.float64)
    y, (h, c) = fused(x)
    y_ref, (h_ref, c_ref) = ref(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c, c_ref, rtol=1e-10, atol=1e-12)
    # the option reaches the numbers: a default-initialised nn.LSTM from the same seed
    # gives other outputs
    plain = seeded(5, lambda: nn.LSTM(**cfg, dtype=torch.float64))
    assert not torch.allclose(plain(x)[0], y)


# ---- (5) bad arguments ----

@pytest.mark.parametrize("kwargs,exc,named", [
    (dict(bias=False, forget_bias=1.0), ValueError, "bias=False"),
    (dict(bias=False, chrono_init=10), ValueError, "bias=False"),
    (dict(chrono_init=2), ValueError, "got 2"),
    (dict(chrono_init=1.5), ValueError, "got 1.5"),
    (dict(chrono_init=-3), ValueError, "got -3"),
    (dict(chrono_init=float("nan")), ValueError, "got nan"),
    (dict(chrono_init=float("inf")), ValueError, "got inf"),
    (dict(chrono_init=True), TypeError, "got True"),
    (dict(chrono_init="10"), TypeError, "got '10'"),
    (dict(forget_bias="1"), TypeError, "got '1'"),
    (dict(forget_bias=True), TypeError, "got True"),
    (dict(forget_bias=None), TypeError, "got None"),
    (dict(forget_bias=float("nan")), ValueError, "got nan"),
    (dict(forget_bias=float("-inf")), ValueError, "got -inf"),
    (dict(forget_bias=1.0, chrono_init=10), ValueError, "chrono"),
])
def test_bad_init_options_raise(kwargs, exc, named):
    with pytest.raises(exc, match=re.escape(named)) as info:
        FusedLSTM(4, 6, **kwargs)
    option = "chrono_init" if "chrono_init" in kwargs else "forget_bias"
    assert option in str(info.value)  # names the option too


def test_both_options_refused_with_the_reason():
    with pytest.raises(ValueError, match="sets the forget gate's bias"):
        FusedLSTM(4, 6, forget_bias=1.0, chrono_init=10)


def test_init_options_are_keyword_only():
    with pytest.raises(TypeError):
        FusedLSTM(4, 6, 1, True, False, 0.0, False, 0, None, None, 1.0)


# ---- (6) repr ----

def test_repr_shows_options_only_when_set():
    cfg = dict(input_size=3, hidden_size=5, num_layers=2)
    plain = repr(nn.LSTM(**cfg)).replace("LSTM", "FusedLSTM", 1)
    assert repr(FusedLSTM(**cfg)) == plain
    assert repr(FusedLSTM(**cfg, forget_bias=0, chrono_init=None)) == plain
    assert repr(FusedLSTM(**cfg, forget_bias=1)) == \
        "FusedLSTM(3, 5, num_layers=2, forget_bias=1.0)"
    assert repr(FusedLSTM(**cfg, chrono_init=100)) == \
        "FusedLSTM(3, 5, num_layers=2, chrono_init=100.0)"


# ---- (7) pickles ----

@pytest.mark.parametrize("opts", [dict(), dict(forget_bias=1.5), dict(chrono_init=20.0)])
def test_pickle_round_trip_keeps_options(opts):
    m = FusedLSTM(3, 5, **opts)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    assert back.forget_bias == opts.get("forget_bias", 0.0)
    assert back.chrono_init == opts.get("chrono_init")
    assert repr(back) == repr(m)
    for (n, p), q in zip(back.state_dict().items(), m.state_dict().values()):
        assert torch.equal(p, q), n


def test_old_pickle_without_options_gets_defaults():
    m = FusedLSTM(3, 5, forget_bias=2.0)
    del m.__dict__["forget_bias"], m.__dict__["chrono_init"]  # as pickled before them
    back = pickle.loads(pickle.dumps(m))
    assert back.forget_bias == 0.0 and back.chrono_init is None
    assert repr(back) == "FusedLSTM(3, 5)"
    # reset_parameters then initialises as nn.LSTM does
    torch.manual_seed(4)
    back.reset_parameters()
    ref = seeded(4, lambda: nn.LSTM(3, 5))
    for (n, p), q in zip(back.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(p, q), n
    # and __setstate__ called directly on such a state
    state = dict(FusedLSTM(3, 5).__dict__)
    del state["forget_bias"], state["chrono_init"]
    obj = FusedLSTM.__new__(FusedLSTM)
    obj.__setstate__(state)
    assert obj.forget_bias == 0.0 and obj.chrono_init is None
