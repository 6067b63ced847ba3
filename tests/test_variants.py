"""FusedLSTM's variants beyond nn.LSTM: layer_norm (layer_norm_eps, layer_norm_cell),
zoneout, recurrent_dropout and return_cell_sequence, and the variant op under them
(torch.ops.fused_lstm.lstm_variant_forward, through fused_lstm.ops.lstm_variant).

The module is checked against an independent formulation written here (`independent`): a
plain per-sequence, per-step loop of the formulas (README "Variants"), with its own layer
norm, that does not use fused_lstm.reference. Training-mode masks are reproduced by
re-seeding and drawing them as FusedLSTM documents it (fused_lstm/variants.py, _masks): per
layer and direction in order, recurrent mask [B, Hout] = bernoulli(1 - p) / (1 - p), then
zoneout_h [rows, Hout] = (rand < p_h), then zoneout_c [rows, H] = (rand < p_c), rows
those of the time-major (or packed) input. The op itself is checked against
lstm_variant_reference, by gradcheck and by torch.library.opcheck.
"""

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import fused_lstm
from fused_lstm import FusedLSTM
from fused_lstm import ops as fused_ops
from fused_lstm.ops import lstm_variant
from fused_lstm.reference import lstm_variant_reference

from helpers import rel_err

pytestmark = [
    pytest.mark.usefixtures("one_intra_op_thread"),
    # torch's own notices (torch.jit.script, export), not ours
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:Your compiler for AOTAutograd is returning"),
]

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
needs_extension = pytest.mark.skipif(not fused_lstm.extension_loaded(),
                                     reason="compiled extension not built")


# ---- the independent formulation ----

def layer_norm(v, weight, bias, eps):
    """LN over the last dimension, written out: biased variance, as nn.LayerNorm."""
    mean = v.mean(-1, keepdim=True)
    var = ((v - mean) ** 2).mean(-1, keepdim=True)
    return (v - mean) / torch.sqrt(var + eps) * weight + bias


def direction_params(module, layer, d):
    """(w_ih, w_hh, b_ih, b_hh, w_hr, norms) of one layer direction, read by name; norms is
    None without layer_norm, else (ln_ih, ln_hh, ln_c) as (weight, bias) pairs."""
    sfx = f"_l{layer}{'_reverse' if d else ''}"
    get = lambda name: getattr(module, name + sfx, None)  # noqa: E731
    norms = None
    if module.layer_norm:
        norms = [(ln.weight, ln.bias) for ln in (get("layer_norm_ih"), get("layer_norm_hh"),
                                                 get("layer_norm_c"))]
    return (get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"), get("weight_hr"),
            norms)


def one_direction(xs, h, c, params, eps, state, reverse, keep, z_h, z_c):
    """One sequence (xs [L, I]; h [Hout], c [H]) through one layer direction, step by step.
    keep: [Hout] or None; z_h: [L, Hout] (per step) or a float, z_c alike. Returns the
    outputs [L, Hout], the cells [L, H], and the last h, c."""
    w_ih, w_hh, b_ih, b_hh, w_hr, norms = params
    H = w_hh.shape[0] // 4
    L = xs.shape[0]
    ys, cs = [None] * L, [None] * L

    def at(z, t):
        return z if not isinstance(z, torch.Tensor) else z[t]

    for t in (range(L - 1, -1, -1) if reverse else range(L)):
        h_in = h if keep is None else h * keep
        gx = torch.mv(w_ih, xs[t])
        gh = torch.mv(w_hh, h_in)
        if norms is not None:
            gx = layer_norm(gx, *norms[0], eps)
            gh = layer_norm(gh, *norms[1], eps)
        a = gx + gh
        if b_ih is not None:
            a = a + b_ih + b_hh
        i, f = torch.sigmoid(a[:H]), torch.sigmoid(a[H:2 * H])
        g, o = torch.tanh(a[2 * H:3 * H]), torch.sigmoid(a[3 * H:])
        c_hat = f * c + i * g
        n = c_hat if norms is None else layer_norm(c_hat, *norms[2], eps)
        c_new = n if (norms is not None and state) else c_hat
        h_new = o * torch.tanh(n)
        if w_hr is not None:
            h_new = torch.mv(w_hr, h_new)
        zc, zh = at(z_c, t), at(z_h, t)
        c = c_new if zc is None else zc * c + (1 - zc) * c_new
        h = h_new if zh is None else zh * h + (1 - zh) * h_new
        ys[t], cs[t] = h, c
    return torch.stack(ys), torch.stack(cs), h, c


def independent(module, seqs, h0, c0, masks):
    """All layers and directions of `module` on each sequence of `seqs` (list of [L_b, I],
    in batch order) on its own. h0 [LD, B, Hout], c0 [LD, B, H] (zeros when None). masks(k, b,
    L) gives (keep, z_h, z_c) of layer direction k for sequence b. Returns the outputs [L_b,
    D*Hout] and the last layer's cells [L_b, D*H] of each sequence, h_n and c_n."""
    D = 2 if module.bidirectional else 1
    Hout, H = module.proj_size or module.hidden_size, module.hidden_size
    B = len(seqs)
    like = seqs[0]
    if h0 is None:
        h0 = like.new_zeros(module.num_layers * D, B, Hout)
        c0 = like.new_zeros(module.num_layers * D, B, H)
    eps, state = module.layer_norm_eps, module.layer_norm_cell == "state"
    inputs = list(seqs)
    h_n = [[None] * B for _ in range(module.num_layers * D)]
    c_n = [[None] * B for _ in range(module.num_layers * D)]
    cells = None
    for layer in range(module.num_layers):
        outs, cells = [], []
        for b, xs in enumerate(inputs):
            ys_b, cs_b = [], []
            for d in range(D):
                k = layer * D + d
                ys, cs, h, c = one_direction(xs, h0[k, b], c0[k, b],
                                             direction_params(module, layer, d), eps, state,
                                             d == 1, *masks(k, b, xs.shape[0]))
                ys_b.append(ys)
                cs_b.append(cs)
                h_n[k][b], c_n[k][b] = h, c
            outs.append(torch.cat(ys_b, -1))
            cells.append(torch.cat(cs_b, -1))
        inputs = outs
    return (inputs, cells, torch.stack([torch.stack(r) for r in h_n]),
            torch.stack([torch.stack(r) for r in c_n]))


def draw_masks(module, rows, batch, dtype):
    """The masks a training-mode call draws (call after seeding as before the call): per
    layer direction in order (keep [B, Hout] or None, z_h [rows, Hout] or None, z_c [rows,
    H] or None)."""
    D = 2 if module.bidirectional else 1
    Hout, H = module.proj_size or module.hidden_size, module.hidden_size
    p, (p_h, p_c) = module.recurrent_dropout, module.zoneout
    drawn = []
    for _ in range(module.num_layers * D):
        keep = (torch.empty(batch, Hout, dtype=dtype).bernoulli_(1 - p) / (1 - p)
                if p > 0 else None)
        z_h = (torch.rand(rows, Hout, dtype=dtype) < p_h).to(dtype) if p_h > 0 else None
        z_c = (torch.rand(rows, H, dtype=dtype) < p_c).to(dtype) if p_c > 0 else None
        drawn.append((keep, z_h, z_c))
    return drawn


def eval_masks(module):
    p_h, p_c = module.zoneout
    return lambda k, b, L: (None, p_h if p_h > 0 else None, p_c if p_c > 0 else None)


def training_masks(drawn, row_of):
    """masks() for `independent` from draw_masks' tensors: row_of(b, t) is the row of x
    (time-major or packed) of sequence b at step t, and row_of(b, None) its batch position
    (the recurrent mask's row)."""
    def masks(k, b, L):
        keep, z_h, z_c = drawn[k]
        rows = torch.tensor([row_of(b, t) for t in range(L)])
        return (None if keep is None else keep[row_of(b, None)],
                None if z_h is None else z_h[rows], None if z_c is None else z_c[rows])
    return masks


# ---- the module under test, with random parameters ----

def make_model(dtype=torch.float64, seed=0, **cfg):
    """A FusedLSTM with every parameter random, LayerNorm weights and biases included (not
    their initial ones and zeros)."""
    torch.manual_seed(seed)
    model = FusedLSTM(dtype=dtype, **cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("layer_norm") and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.uniform_(-0.6, 0.6)
    return model


def out_size(cfg):
    D = 2 if cfg.get("bidirectional") else 1
    return D * (cfg.get("proj_size") or cfg["hidden_size"]), D * cfg["hidden_size"]


class Case:
    """A random batch for `model` in one layout: "dense", "batch_first", "packed",
    "unbatched"; `seqs` are the sequences in batch order (views of the leaf `x`), and
    `views` cuts a module result into the same sequences."""

    def __init__(self, model, layout, lengths, dtype, with_hx, seed=1):
        torch.manual_seed(seed)
        I, T, B = model.input_size, max(lengths), len(lengths)
        self.layout, self.lengths = layout, lengths
        D = 2 if model.bidirectional else 1
        Hout, H = model.proj_size or model.hidden_size, model.hidden_size
        g = dict(dtype=dtype, requires_grad=True)
        if layout == "unbatched":
            assert B == 1
            self.x = torch.randn(T, I, **g)
            self.seqs = [self.x]
        elif layout == "batch_first":
            self.x = torch.randn(B, T, I, **g)
            self.seqs = [self.x[b, :lengths[b]] for b in range(B)]
        else:
            self.x = torch.randn(T, B, I, **g)
            self.seqs = [self.x[:lengths[b], b] for b in range(B)]
        self.input = self.x
        if layout == "packed":
            self.input = pack_padded_sequence(self.x, torch.tensor(lengths), enforce_sorted=False)
        else:
            assert all(n == T for n in lengths)
        self.hx = None
        self.h0 = self.c0 = None
        if with_hx:
            self.h0 = torch.randn(model.num_layers * D, B, Hout, **g)
            self.c0 = torch.randn(model.num_layers * D, B, H, **g)
            self.hx = ((self.h0[:, 0], self.c0[:, 0]) if layout == "unbatched"
                       else (self.h0, self.c0))

    def rows(self):
        """(rows of the time-major / packed input, batch) as FusedLSTM's masks see them."""
        if self.layout == "packed":
            return self.input.data.shape[0], len(self.lengths)
        return max(self.lengths) * len(self.lengths), len(self.lengths)

    def row_of(self, b, t):
        B = len(self.lengths)
        if self.layout != "packed":
            return b if t is None else t * B + b
        pos = int(self.input.unsorted_indices[b])
        if t is None:
            return pos
        sizes = self.input.batch_sizes.tolist()
        return sum(sizes[:t]) + pos

    def views(self, seq):
        """Cut a module output (tensor or PackedSequence) into the sequences."""
        if self.layout == "unbatched":
            return [seq]
        if self.layout == "packed":
            padded, _ = pad_packed_sequence(seq)
            return [padded[:n, b] for b, n in enumerate(self.lengths)]
        if self.layout == "batch_first":
            return [seq[b] for b in range(len(self.lengths))]
        return [seq[:, b] for b in range(len(self.lengths))]

    def state(self, t):
        return t.unsqueeze(1) if self.layout == "unbatched" else t

    def leaves(self):
        return [t for t in (self.x, self.h0, self.c0) if t is not None]


def loss_of(seqs, cells, h_n, c_n, seed=5):
    """A loss weighing every element of every output differently (the same weights for
    both sides, whatever their dtype: they depend on shapes only)."""
    gen = torch.Generator().manual_seed(seed)
    parts = list(seqs) + list(cells) + [h_n, c_n]
    return sum((p * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)).sum()
               for p in parts)


def assert_close(got, want, tol, what):
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    err = rel_err(got, want)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def cast_case(case, dtype):
    """The same batch in another dtype, with leaves of its own."""
    new = copy.copy(case)
    new.x = case.x.detach().to(dtype).requires_grad_()
    new.input = new.x
    if case.layout == "packed":
        new.input = pack_padded_sequence(new.x, torch.tensor(case.lengths),
                                         enforce_sorted=False)
    L = case.lengths
    new.seqs = ([new.x] if case.layout == "unbatched"
                else [new.x[b, :n] for b, n in enumerate(L)] if case.layout == "batch_first"
                else [new.x[:n, b] for b, n in enumerate(L)])
    new.h0 = new.c0 = new.hx = None
    if case.h0 is not None:
        new.h0 = case.h0.detach().to(dtype).requires_grad_()
        new.c0 = case.c0.detach().to(dtype).requires_grad_()
        new.hx = ((new.h0[:, 0], new.c0[:, 0]) if case.layout == "unbatched"
                  else (new.h0, new.c0))
    return new


def check_against_independent(model, case, masks, tol, ref=None):
    """Run model on case (with return_cell_sequence=True) and the independent loop on the
    same parameters and batch (or on ref = (model, case): a float64 copy of both), compare
    outputs, cells, h_n, c_n, and the gradients of x, h0, c0 and every parameter."""
    ref_model, ref_case = (model, case) if ref is None else ref
    args = (case.input,) if case.hx is None else (case.input, case.hx)
    out, (h_n, c_n), cells = model(*args, return_cell_sequence=True)
    got = (case.views(out), case.views(cells), case.state(h_n), case.state(c_n))
    want = independent(ref_model, ref_case.seqs, ref_case.h0, ref_case.c0, masks)
    for name, g, w in zip(("output", "cells"), got[:2], want[:2]):
        assert len(g) == len(w)
        for b, (gb, wb) in enumerate(zip(g, w)):
            assert_close(gb, wb, tol, f"{name} of sequence {b}")
    assert_close(got[2], want[2], tol, "h_n")
    assert_close(got[3], want[3], tol, "c_n")
    g_got = torch.autograd.grad(loss_of(*got), case.leaves() + list(model.parameters()))
    g_want = torch.autograd.grad(loss_of(*want),
                                 ref_case.leaves() + list(ref_model.parameters()))
    names = ["x", "h0", "c0"][:len(case.leaves())] + [n for n, _ in model.named_parameters()]
    assert len(names) == len(g_got) == len(g_want)
    for name, g, w in zip(names, g_got, g_want):
        assert_close(g, w, tol, f"grad of {name}")
    return got, want


# ---- (1) the module against the independent formulation ----

# (constructor options, layout, lengths, hx given, training)
MODULE_CASES = [
    (dict(layer_norm=True), "dense", [5, 5, 5], True, False),
    (dict(layer_norm=True, layer_norm_cell="state", layer_norm_eps=1e-2, num_layers=2,
          bidirectional=True), "batch_first", [4, 4], False, True),
    (dict(layer_norm=True, proj_size=2, bias=False), "dense", [4, 4, 4], True, False),
    (dict(zoneout=0.3), "dense", [5, 5, 5], True, False),
    (dict(zoneout=(0.2, 0.5), bidirectional=True), "dense", [6, 6, 6], True, True),
    (dict(zoneout=(0.0, 0.4), num_layers=2), "batch_first", [5, 5], False, True),
    (dict(recurrent_dropout=0.4, num_layers=2), "dense", [5, 5, 5], True, True),
    (dict(recurrent_dropout=0.3, bidirectional=True, proj_size=2), "packed", [5, 2, 4], True,
     True),
    (dict(layer_norm=True, layer_norm_cell="state", zoneout=(0.25, 0.4),
          recurrent_dropout=0.3, proj_size=2, num_layers=2, bidirectional=True), "packed",
     [4, 6, 1, 3], True, True),
    (dict(layer_norm=True, zoneout=(0.3, 0.1), proj_size=3, num_layers=2), "packed",
     [3, 5, 2], False, False),
    (dict(layer_norm=True, zoneout=0.3, recurrent_dropout=0.2, batch_first=True),
     "batch_first", [5, 5, 5], True, True),
    (dict(layer_norm=True, layer_norm_cell="state", zoneout=0.4, recurrent_dropout=0.25,
          num_layers=2, bidirectional=True), "unbatched", [6], True, True),
    (dict(return_cell_sequence=True, proj_size=2, bidirectional=True, num_layers=2), "dense",
     [4, 4, 4], True, True),
]


def case_id(case):
    opts, layout, lengths, hx, training = case
    words = [f"{k}={v}" for k, v in opts.items()] + [layout, "hx" if hx else "nohx",
                                                     "train" if training else "eval"]
    return ",".join(words).replace(" ", "")


def run_case(case, dtype=torch.float64, seed=0):
    """(model, batch, masks) of a MODULE_CASES entry, the module in its mode, seeded so
    that its next call draws the masks returned."""
    opts, layout, lengths, with_hx, training = case
    batch_first = layout == "batch_first" or opts.get("batch_first", False)
    opts = {k: v for k, v in opts.items() if k != "batch_first"}
    model = make_model(dtype, seed, input_size=3, hidden_size=4, batch_first=batch_first,
                       **opts)
    model.train(training)
    batch = Case(model, layout, lengths, dtype, with_hx, seed=seed + 1)
    if not training:
        return model, batch, eval_masks(model)
    torch.manual_seed(seed + 100)
    drawn = draw_masks(model, *batch.rows(), dtype)
    torch.manual_seed(seed + 100)
    return model, batch, training_masks(drawn, batch.row_of)


@pytest.mark.parametrize("case", MODULE_CASES, ids=[case_id(c) for c in MODULE_CASES])
def test_module_matches_independent_float64(case):
    model, batch, masks = run_case(case)
    check_against_independent(model, batch, masks, TOL[torch.float64])


@pytest.mark.parametrize("case", [MODULE_CASES[i] for i in (1, 8, 11)],
                         ids=[case_id(MODULE_CASES[i]) for i in (1, 8, 11)])
def test_module_matches_independent_float32(case):
    """float32 against the float64 loop on the same values (parameters, batch, masks)."""
    model64, batch64, _ = run_case(case)
    model = copy.deepcopy(model64).float()
    batch = cast_case(batch64, torch.float32)
    opts, layout, lengths, with_hx, training = case
    if training:  # the float32 call draws float32 masks: the same 0/1 draws, cast
        torch.manual_seed(100)
        drawn = draw_masks(model, *batch.rows(), torch.float32)
        masks = training_masks([tuple(None if m is None else m.double() for m in d)
                                for d in drawn], batch.row_of)
        torch.manual_seed(100)
    else:
        masks = eval_masks(model)
    check_against_independent(model, batch, masks, TOL[torch.float32], ref=(model64, batch64))


def test_masks_are_used_in_training_mode():
    """The training-mode cases above depend on the masks: the same call in eval mode, or
    with other masks, gives other numbers (so reproducing the masks is what they test)."""
    case = MODULE_CASES[8]
    model, batch, masks = run_case(case)
    out_train = model(batch.input, batch.hx)[0].data
    with torch.no_grad():
        model.eval()
        out_eval = model(batch.input, batch.hx)[0].data
        model.train()
        out_other = model(batch.input, batch.hx)[0].data  # the next masks
    assert rel_err(out_eval, out_train) > 1e-3
    assert rel_err(out_other, out_train) > 1e-3


def test_return_cell_sequence_is_lstm_cell_c_per_step():
    """No variant but the cell sequence: FusedLSTM's cells are the c of an nn.LSTMCell loop
    (2 layers, bidirectional; the last layer's cells, forward then reverse), and the rest
    is nn.LSTM's."""
    torch.manual_seed(3)
    lstm = nn.LSTM(3, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
    with torch.no_grad():
        for p in lstm.parameters():
            p.uniform_(-0.6, 0.6)
    fused = FusedLSTM(3, 5, num_layers=2, bidirectional=True, dtype=torch.float64,
                      return_cell_sequence=True)
    fused.load_state_dict(lstm.state_dict())
    T, B = 6, 3
    x = torch.randn(T, B, 3, dtype=torch.float64)
    h0, c0 = torch.randn(4, B, 5, dtype=torch.float64), torch.randn(4, B, 5, dtype=torch.float64)
    y, (h_n, c_n), cells = fused(x, (h0, c0))
    y_ref, (h_ref, c_ref) = lstm(x, (h0, c0))
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(c_n, c_ref, rtol=0, atol=1e-12)
    layer_in = x
    for layer in range(2):
        outs, cs = [], []
        for d in range(2):
            sfx = f"_l{layer}{'_reverse' if d else ''}"
            cell = nn.LSTMCell(layer_in.shape[-1], 5, dtype=torch.float64)
            with torch.no_grad():
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(cell, name).copy_(getattr(lstm, name + sfx))
            h, c = h0[2 * layer + d], c0[2 * layer + d]
            ys, cc = [None] * T, [None] * T
            for t in (range(T - 1, -1, -1) if d else range(T)):
                h, c = cell(layer_in[t], (h, c))
                ys[t], cc[t] = h, c
            outs.append(torch.stack(ys))
            cs.append(torch.stack(cc))
        layer_in = torch.cat(outs, -1)
    torch.testing.assert_close(layer_in, y, rtol=0, atol=1e-12)
    assert cells.shape == (T, B, 10)
    torch.testing.assert_close(cells, torch.cat(cs, -1), rtol=0, atol=1e-12)
    # the forward keyword overrides the constructor's, either way
    assert len(fused(x, return_cell_sequence=False)) == 2
    plain = FusedLSTM(3, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
    plain.load_state_dict(lstm.state_dict())
    assert len(plain(x)) == 2
    torch.testing.assert_close(plain(x, (h0, c0), return_cell_sequence=True)[2], cells,
                               rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["batch_first", "unbatched", "packed"])
def test_cell_sequence_layout(layout):
    """cells: output's layout with H per direction (batch_first, unbatched squeezed,
    PackedSequence with output's batch_sizes and indices)."""
    model = make_model(input_size=3, hidden_size=4, proj_size=2, bidirectional=True,
                       batch_first=layout == "batch_first", layer_norm=True)
    lengths = [5] if layout == "unbatched" else ([5, 5] if layout == "batch_first"
                                                 else [2, 5, 3])
    batch = Case(model, layout, lengths, torch.float64, False)
    out, _, cells = model(batch.input, return_cell_sequence=True)
    if layout == "packed":
        assert isinstance(cells, PackedSequence)
        assert torch.equal(cells.batch_sizes, out.batch_sizes)
        assert torch.equal(cells.sorted_indices, out.sorted_indices)
        assert torch.equal(cells.unsorted_indices, out.unsorted_indices)
        assert cells.data.shape == (sum(lengths), 8)
    else:
        assert cells.shape == out.shape[:-1] + (8,)
        assert out.shape[-1] == 4


def test_lengths_match_per_sequence_calls():
    """lengths= (forward keyword) with the variants in eval mode: each sequence as if run on
    its own to its length; output and cells zero past it; h_n, c_n its last step's."""
    model = make_model(input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                       proj_size=2, layer_norm=True, zoneout=(0.3, 0.2),
                       layer_norm_cell="state").eval()
    torch.manual_seed(9)
    lengths = [5, 2, 0, 4]
    x = torch.randn(5, 4, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 4, 2, dtype=torch.float64)
    c0 = torch.randn(4, 4, 4, dtype=torch.float64)
    y, (h_n, c_n), cells = model(x, (h0, c0), lengths=lengths, return_cell_sequence=True)
    for b, n in enumerate(lengths):
        if n == 0:
            assert torch.equal(h_n[:, b], h0[:, b]) and torch.equal(c_n[:, b], c0[:, b])
        else:
            yb, (hb, cb), cb_seq = model(x[:n, b:b + 1], (h0[:, b:b + 1], c0[:, b:b + 1]),
                                         return_cell_sequence=True)
            assert_close(y[:n, b], yb[:, 0], 1e-10, f"output of sequence {b}")
            assert_close(cells[:n, b], cb_seq[:, 0], 1e-10, f"cells of sequence {b}")
            assert_close(h_n[:, b], hb[:, 0], 1e-10, f"h_n of sequence {b}")
            assert_close(c_n[:, b], cb[:, 0], 1e-10, f"c_n of sequence {b}")
        assert not y[n:, b].any() and not cells[n:, b].any()
    # and the gradient reaches only the steps within each length
    (y.sum() + cells.sum()).backward()
    for b, n in enumerate(lengths):
        assert not x.grad[n:, b].any()
        if n:
            assert x.grad[:n, b].abs().min() > 0


# ---- (2)-(4) the op: against lstm_variant_reference, gradcheck, opcheck ----

def variant_args(dtype=torch.float64, packed=False, proj=0, norm=None, zoneout=None,
                 rmask=False, reverse=False, bias=True, T=5, B=3, I=4, H=5, eps=1e-3,
                 requires_grad=True, seed=0):
    """Random arguments of lstm_variant (the op's, less need_backward) as a list: x,
    batch_sizes, h0 [B, Hout], c0 [B, H], weights, has_bias, has_proj, reverse, norm,
    norm_eps, norm_state, recurrent_mask, zoneout_h, zoneout_c. norm: None, "hidden" or
    "state"; zoneout: None, "rows" (per row of x, values in [0, 1): the op takes any) or
    "const" ([Hout] / [H] for every row)."""
    torch.manual_seed(seed)
    g = dict(dtype=dtype)
    Hout = proj or H
    if packed:
        sizes = sorted(torch.randint(1, B + 1, (T,)).tolist(), reverse=True)
        sizes[0] = B
        batch_sizes = torch.tensor(sizes)
        x = torch.randn(sum(sizes), I, **g)
    else:
        batch_sizes = None
        x = torch.randn(T, B, I, **g)
    rows = x.shape[0] if packed else T * B
    weights = [torch.rand(4 * H, I, **g) - 0.5, torch.rand(4 * H, Hout, **g) - 0.5]
    if bias:
        weights += [torch.randn(4 * H, **g), torch.randn(4 * H, **g)]
    if proj:
        weights.append(torch.randn(Hout, H, **g) / 2)
    norms = []
    if norm:
        norms = [torch.rand(4 * H, **g) + 0.5, torch.randn(4 * H, **g),
                 torch.rand(4 * H, **g) + 0.5, torch.randn(4 * H, **g),
                 torch.rand(H, **g) + 0.5, torch.randn(H, **g)]
    z_h = z_c = None
    if zoneout == "rows":
        z_h, z_c = torch.rand(rows, Hout, **g), torch.rand(rows, H, **g)
    elif zoneout == "const":
        z_h, z_c = torch.rand(Hout, **g), torch.rand(H, **g)
    mask = (torch.rand(B, Hout, **g) * 2) if rmask else None
    h0, c0 = torch.randn(B, Hout, **g), torch.randn(B, H, **g)
    for t in [x, h0, c0, *weights, *norms]:
        t.requires_grad_(requires_grad)
    return [x, batch_sizes, h0, c0, weights, bias, bool(proj), reverse, norms, eps,
            norm == "state", mask, z_h, z_c]


def differentiable(args):
    x, _, h0, c0, weights, *_ = args
    return [x, h0, c0, *weights, *args[8]]


def reference_of(args):
    x, batch_sizes, h0, c0, weights, has_bias, has_proj, reverse, norm, *rest = args
    w_ih, w_hh = weights[:2]
    b_ih, b_hh = (weights[2], weights[3]) if has_bias else (None, None)
    w_hr = weights[-1] if has_proj else None
    return lstm_variant_reference(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                  reverse, norm, *rest)


def op_weights_loss(outs, seed=11):
    gen = torch.Generator().manual_seed(seed)
    return sum((o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o)).sum()
               for o in outs)


OP_GRID = list(itertools.product(
    [False, True],                 # packed
    [0, 3],                        # proj
    [None, "hidden", "state"],     # norm
    [None, "rows", "const"],       # zoneout
    [False, True],                 # recurrent mask
    [False, True],                 # reverse
))


def grid_id(c):
    packed, proj, norm, zoneout, rmask, reverse = c
    return "-".join([("packed" if packed else "dense"), f"proj{proj}", f"norm={norm}",
                     f"zo={zoneout}", "mask" if rmask else "nomask",
                     "rev" if reverse else "fwd"])


def cast_args(args, dtype):
    """variant_args' list in another dtype, with leaves of its own."""
    def cast(t):
        return None if t is None else t.detach().to(dtype).requires_grad_(t.requires_grad)
    out = list(args)
    out[0], out[2], out[3] = cast(args[0]), cast(args[2]), cast(args[3])
    out[4], out[8] = [cast(w) for w in args[4]], [cast(n) for n in args[8]]
    out[11], out[12], out[13] = cast(args[11]), cast(args[12]), cast(args[13])
    return out


@needs_extension
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", OP_GRID, ids=[grid_id(c) for c in OP_GRID])
def test_op_matches_reference(case, dtype):
    """The op in float64 against the reference in float64 (1e-10); in float32 against the
    reference in float64 on the same values (1e-5: the op's own float32 error)."""
    packed, proj, norm, zoneout, rmask, reverse = case
    args64 = variant_args(torch.float64, packed, proj, norm, zoneout, rmask, reverse,
                          seed=len(grid_id(case)))
    args = args64 if dtype == torch.float64 else cast_args(args64, dtype)
    got = lstm_variant(*args)
    want = reference_of(args64)
    tol = TOL[dtype]
    if dtype == torch.float32 and norm:
        # The CPU kernels' float exp and tanh are within a few ulps, not correctly rounded
        # (README, accuracy); layer norm divides by the spread of rows of five values here,
        # which amplifies that: 1.3e-5 measured at worst, half of it from the activations.
        tol = 2e-5
    for name, g, w in zip(("y", "h_n", "c_n", "cells"), got, want):
        assert g.dtype == dtype
        assert_close(g, w, tol, name)
    g_got = torch.autograd.grad(op_weights_loss(got), differentiable(args))
    g_want = torch.autograd.grad(op_weights_loss(want), differentiable(args64))
    names = ["x", "h0", "c0"] + [f"weights[{i}]" for i in range(len(args[4]))] + [
        f"norm[{i}]" for i in range(len(args[8]))]
    assert len(names) == len(g_got)
    for name, g, w in zip(names, g_got, g_want):
        assert_close(g, w, tol, f"grad of {name}")


def test_op_grid_is_not_trivial():
    """The grid's options change the numbers: each one alone moves y away from the plain
    LSTM's (so a kernel ignoring one would fail the grid)."""
    plain = reference_of(variant_args(requires_grad=False))[0]
    for opts in (dict(norm="hidden"), dict(zoneout="rows"), dict(zoneout="const"),
                 dict(rmask=True)):
        y = reference_of(variant_args(requires_grad=False, **opts))[0]
        assert rel_err(y, plain) > 1e-2, opts
    hidden = reference_of(variant_args(requires_grad=False, norm="hidden"))
    state = reference_of(variant_args(requires_grad=False, norm="state"))
    assert rel_err(state[3], hidden[3]) > 1e-2


GRADCHECK_CASES = [
    dict(norm="hidden", zoneout="rows", rmask=True),
    dict(norm="state", zoneout="const", proj=2, reverse=True),
    dict(packed=True, norm="state", zoneout="rows", rmask=True, reverse=True),
    dict(packed=True, proj=2, bias=False, zoneout="rows"),
]


def gradcheck_fn(args):
    """y, h_n, c_n, cells of lstm_variant as a function of the differentiable tensors."""
    n_w, n_norm = len(args[4]), len(args[8])

    def f(x, h0, c0, *rest):
        call = list(args)
        call[0], call[2], call[3] = x, h0, c0
        call[4], call[8] = list(rest[:n_w]), list(rest[n_w:n_w + n_norm])
        return tuple(lstm_variant(*call))
    return f


@needs_extension
@pytest.mark.parametrize("cfg", GRADCHECK_CASES, ids=[",".join(f"{k}={v}" for k, v in c.items())
                                                      for c in GRADCHECK_CASES])
def test_gradcheck_op(cfg):
    """Every output differentiated, cells included (gradcheck weighs each output)."""
    args = variant_args(T=3, B=2, I=2, H=2, seed=3, **cfg)
    assert torch.autograd.gradcheck(gradcheck_fn(args), differentiable(args))


@needs_extension
def test_gradcheck_op_cells_alone():
    """The gradient flowing in through cells only (y, h_n, c_n unused)."""
    args = variant_args(T=3, B=2, I=2, H=2, seed=4, norm="state", zoneout="rows", rmask=True)
    f = gradcheck_fn(args)
    assert torch.autograd.gradcheck(lambda *t: f(*t)[3], differentiable(args))


@needs_extension
def test_gradgradcheck_op():
    args = variant_args(T=2, B=2, I=2, H=2, seed=5, norm="state", zoneout="rows", rmask=True,
                        proj=1)
    assert torch.autograd.gradgradcheck(gradcheck_fn(args), differentiable(args))


OPCHECK_CASES = [
    dict(norm="hidden", zoneout="rows", rmask=True),
    dict(norm="state", zoneout="const", proj=2, reverse=True),
    dict(packed=True, norm="state", zoneout="rows", rmask=True),
    dict(packed=True, proj=3, bias=False),
    dict(dtype=torch.float32, packed=True, norm="hidden", zoneout="const", reverse=True),
]


@needs_extension
@pytest.mark.parametrize("cfg", OPCHECK_CASES, ids=[",".join(f"{k}={v}" for k, v in c.items())
                                                    for c in OPCHECK_CASES])
def test_opcheck(cfg):
    args = variant_args(T=4, B=3, I=3, H=4, seed=6, **cfg)
    torch.library.opcheck(torch.ops.fused_lstm.lstm_variant_forward.default, (*args, True))


@needs_extension
def test_op_called_without_need_backward_still_differentiates():
    """need_backward=False with inputs that require grad (as a trace bakes it): backward
    recomputes what it needs, and the gradients are the reference's."""
    args = variant_args(seed=8, packed=True, norm="state", zoneout="rows", rmask=True, proj=2)
    y, h_n, c_n, cells, saved = torch.ops.fused_lstm.lstm_variant_forward(*args, False)
    assert all(t.numel() == 0 for t in saved)
    want = reference_of(args)
    wrt = differentiable(args)
    g_got = torch.autograd.grad(op_weights_loss((y, h_n, c_n, cells)), wrt)
    g_want = torch.autograd.grad(op_weights_loss(want), wrt)
    for k, (g, w) in enumerate(zip(g_got, g_want)):
        assert_close(g, w, 1e-10, f"grad {k}")


# ---- (5) torch.compile and torch.export ----

def grads_of_model(model, x):
    x = x.detach().requires_grad_(True)
    out, (h_n, c_n) = model(x)
    outs = [out, h_n, c_n]
    loss = op_weights_loss(outs)
    return [o.detach() for o in outs], torch.autograd.grad(loss, [x] + list(model.parameters()))


@needs_extension
def test_compile_fullgraph_matches_eager_eval_mode():
    """Eval mode (zoneout's constants) with layer norm: torch.compile(fullgraph=True) gives
    eager's outputs and gradients, its graphs calling the variant op and its backward.
    aot_eager: dynamo and AOTAutograd over the op's fake kernels and autograd, without
    inductor's C++ builds (about 50 s on 2 cores)."""
    from torch._dynamo.testing import AotEagerAndRecordGraphs

    torch._dynamo.reset()
    model = make_model(torch.float32, input_size=3, hidden_size=5, num_layers=2,
                       bidirectional=True, batch_first=True, layer_norm=True,
                       layer_norm_cell="state", zoneout=(0.2, 0.3)).eval()
    x = torch.randn(2, 6, 3)
    want_out, want_grads = grads_of_model(model, x)
    backend = AotEagerAndRecordGraphs()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    got_out, got_grads = grads_of_model(compiled, x)
    for k, (g, w) in enumerate(zip(got_out, want_out)):
        assert_close(g, w, 1e-5, f"output {k}")
    for k, (g, w) in enumerate(zip(got_grads, want_grads)):
        assert_close(g, w, 1e-5, f"grad {k}")
    fw = "\n".join(g.code for g in backend.fw_graphs)
    bw = "\n".join(g.code for g in backend.bw_graphs)
    assert fw.count("fused_lstm.lstm_variant_forward") == 4
    assert bw.count("fused_lstm.lstm_variant_backward") == 4
    with torch.no_grad():  # and inference under compile
        x2 = torch.randn(3, 6, 3)
        got, want = compiled(x2), model(x2)
    assert_close(got[0], want[0], 1e-5, "no_grad output")
    torch._dynamo.reset()


@needs_extension
def test_export_layer_norm_eval_model_matches_eager():
    model = make_model(torch.float32, input_size=3, hidden_size=5, num_layers=2,
                       bidirectional=True, proj_size=2, layer_norm=True, zoneout=0.25).eval()
    x = torch.randn(6, 2, 3)
    with torch.no_grad():
        ep = torch.export.export(model, (x,))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.fused_lstm.lstm_variant_forward.default) == 4
    with torch.no_grad():
        got, want = ep.module()(x), model(x)
    for k, (g, w) in enumerate(zip([got[0], *got[1]], [want[0], *want[1]])):
        assert_close(g, w, 1e-5, f"output {k}")


# ---- (6) masks: seeded, fresh per call, none in eval mode ----

def training_run(model, x, h):
    out, (h_n, c_n), cells = model(x, h, return_cell_sequence=True)
    loss = op_weights_loss([out, h_n, c_n, cells])
    return [out, h_n, c_n, cells], torch.autograd.grad(loss, [x, *h, *model.parameters()])


def regularised_model():
    return make_model(torch.float32, input_size=3, hidden_size=6, num_layers=2,
                      bidirectional=True, layer_norm=True, zoneout=(0.3, 0.2),
                      recurrent_dropout=0.3, dropout=0.2)


def test_same_seed_same_masks_bitwise():
    model = regularised_model().train()
    x = torch.randn(7, 4, 3, requires_grad=True)
    h = (torch.randn(4, 4, 6, requires_grad=True), torch.randn(4, 4, 6, requires_grad=True))
    torch.manual_seed(2024)
    first = training_run(model, x, h)
    torch.manual_seed(2024)
    again = training_run(model, x, h)
    for a, b in zip(first[0] + list(first[1]), again[0] + list(again[1])):
        assert torch.equal(a, b)


def test_two_calls_draw_different_masks():
    model = regularised_model().train()
    x = torch.randn(7, 4, 3)
    with torch.no_grad():
        one, two = model(x)[0], model(x)[0]
    assert rel_err(one, two) > 1e-3
    # each of the options alone draws too
    for opts in (dict(zoneout=(0.3, 0.0)), dict(zoneout=(0.0, 0.3)),
                 dict(recurrent_dropout=0.3)):
        model = make_model(torch.float32, input_size=3, hidden_size=6, **opts).train()
        with torch.no_grad():
            assert rel_err(model(x)[0], model(x)[0]) > 1e-3, opts


def test_eval_mode_is_deterministic_and_draws_nothing():
    model = regularised_model().eval()
    x = torch.randn(7, 4, 3)
    state = torch.get_rng_state()
    with torch.no_grad():
        one = model(x, return_cell_sequence=True)
        two = model(x, return_cell_sequence=True)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(one[0], two[0]) and torch.equal(one[2], two[2])
    # a training-mode call does draw (the check above can fail)
    model.train()
    with torch.no_grad():
        model(x)
    assert not torch.equal(torch.get_rng_state(), state)


def test_masks_drawn_in_documented_order_with_dropout_between_layers():
    """Per layer: each direction's (recurrent mask, z_h, z_c), then the dropout between
    layers (F.dropout of the layer's output), then the next layer's."""
    model = make_model(input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                       zoneout=(0.3, 0.2), recurrent_dropout=0.4, dropout=0.5).train()
    torch.manual_seed(1)
    T, B = 5, 2
    x = torch.randn(T, B, 3, dtype=torch.float64)
    torch.manual_seed(77)
    layer0 = draw_masks(_one_layer(model), T * B, B, torch.float64)
    drop = F.dropout(torch.ones(T, B, 8, dtype=torch.float64), 0.5, training=True)
    layer1 = draw_masks(_one_layer(model), T * B, B, torch.float64)
    torch.manual_seed(77)
    with torch.no_grad():
        y, (h_n, c_n) = model(x)
    # the loop, with the dropout between layers applied by hand
    masks0 = training_masks(layer0, lambda b, t: b if t is None else t * B + b)
    masks1 = training_masks(layer1, lambda b, t: b if t is None else t * B + b)
    one = _one_layer(model)
    with torch.no_grad():
        out0, _, h0n, c0n = independent(one, [x[:, b] for b in range(B)], None, None, masks0)
        mid = torch.stack(out0, 1) * drop
        second = _one_layer(model, layer=1)
        out1, _, h1n, c1n = independent(second, [mid[:, b] for b in range(B)], None, None,
                                        masks1)
    assert_close(y, torch.stack(out1, 1), 1e-10, "output")
    assert_close(h_n, torch.cat([h0n, h1n]), 1e-10, "h_n")
    assert_close(c_n, torch.cat([c0n, c1n]), 1e-10, "c_n")


class _OneLayerView:
    """Layer `layer` of a FusedLSTM, seen as a one-layer module by `independent`."""

    def __init__(self, model, layer):
        self.model, self.layer = model, layer
        for k in ("bidirectional", "proj_size", "hidden_size", "layer_norm", "layer_norm_eps",
                  "layer_norm_cell", "zoneout", "recurrent_dropout"):
            setattr(self, k, getattr(model, k))
        self.num_layers = 1

    def __getattr__(self, name):  # weight_ih_l0 -> weight_ih_l{layer} of the model
        base, _, rest = name.rpartition("_l0")
        return getattr(self.model, f"{base}_l{self.layer}{rest}")


def _one_layer(model, layer=0):
    return _OneLayerView(model, layer)


# ---- (7) state dict and parameters ----

def norm_keys(num_layers, bidirectional):
    sfxs = [f"_l{k}{'_reverse' if d else ''}" for k in range(num_layers)
            for d in range(2 if bidirectional else 1)]
    return [f"layer_norm_{part}{sfx}.{p}" for sfx in sfxs for part in ("ih", "hh", "c")
            for p in ("weight", "bias")]


CFG = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2)


def test_nn_lstm_checkpoint_loads_missing_exactly_the_layer_norms():
    torch.manual_seed(0)
    lstm = nn.LSTM(**CFG)
    fused = FusedLSTM(**CFG, layer_norm=True)
    result = fused.load_state_dict(lstm.state_dict(), strict=False)
    assert sorted(result.missing_keys) == sorted(norm_keys(2, True))
    assert result.unexpected_keys == []
    for name, value in lstm.state_dict().items():
        assert torch.equal(fused.state_dict()[name], value), name
    with pytest.raises(RuntimeError, match="layer_norm_ih_l0.weight"):
        FusedLSTM(**CFG, layer_norm=True).load_state_dict(lstm.state_dict())


def test_layer_norm_state_dict_round_trip():
    model = make_model(**CFG, layer_norm=True, layer_norm_cell="state").eval()
    sd = model.state_dict()
    assert list(sd)[-len(norm_keys(2, True)):] == norm_keys(2, True)
    other = FusedLSTM(**CFG, layer_norm=True, layer_norm_cell="state",
                      dtype=torch.float64).eval()
    other.load_state_dict(sd, strict=True)
    for name in sd:
        assert torch.equal(other.state_dict()[name], sd[name]), name
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        a, b = model(x), other(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1][0], b[1][0])
    # and into a module without layer norm: only the layer norms are unexpected
    result = FusedLSTM(**CFG, dtype=torch.float64).load_state_dict(sd, strict=False)
    assert result.missing_keys == []
    assert sorted(result.unexpected_keys) == sorted(norm_keys(2, True))


def test_parameter_order_nn_lstm_first_then_layer_norms():
    lstm_names = [n for n, _ in nn.LSTM(**CFG).named_parameters()]
    names = [n for n, _ in FusedLSTM(**CFG, layer_norm=True).named_parameters()]
    assert names[:len(lstm_names)] == lstm_names
    assert names[len(lstm_names):] == norm_keys(2, True)


@pytest.mark.parametrize("cfg", [CFG, dict(input_size=4, hidden_size=3, bias=False)])
def test_initialisation(cfg):
    """All options default: nn.LSTM's parameters draw for draw. layer_norm: nn.LSTM's
    weights still (the LayerNorms draw nothing), LayerNorms at weight 1, bias 0, with
    layer_norm_eps as their eps."""
    torch.manual_seed(5)
    want = nn.LSTM(**cfg).state_dict()
    after_want = torch.rand(3)
    for opts in (dict(), dict(zoneout=0.0, recurrent_dropout=0.0, layer_norm=False),
                 dict(layer_norm=True, layer_norm_eps=1e-3)):
        torch.manual_seed(5)
        model = FusedLSTM(**cfg, **opts)
        assert torch.equal(torch.rand(3), after_want), opts
        sd = model.state_dict()
        for name, value in want.items():
            assert torch.equal(sd[name], value), (opts, name)
        if opts.get("layer_norm"):
            for key in norm_keys(cfg.get("num_layers", 1), cfg.get("bidirectional", False)):
                fill = 1.0 if key.endswith("weight") else 0.0
                assert torch.equal(sd[key], torch.full_like(sd[key], fill)), key
                module = getattr(model, key.split(".")[0])
                assert module.eps == 1e-3
                H = cfg["hidden_size"]
                assert sd[key].shape == ((H,) if "_c_" in key else (4 * H,))
        else:
            assert list(sd) == list(want)


# ---- (8) bad arguments ----

BAD = [
    (dict(zoneout=1.0), ValueError, "zoneout"),
    (dict(zoneout=-0.1), ValueError, "zoneout"),
    (dict(zoneout=(0.1, 1.0)), ValueError, r"zoneout\[1\]"),
    (dict(zoneout=(-0.5, 0.1)), ValueError, r"zoneout\[0\]"),
    (dict(zoneout="0.1"), TypeError, "zoneout"),
    (dict(zoneout=None), TypeError, "zoneout"),
    (dict(zoneout=True), TypeError, "zoneout"),
    (dict(zoneout=(0.1, "a")), TypeError, r"zoneout\[1\]"),
    (dict(zoneout=(0.1,)), ValueError, "pair"),
    (dict(zoneout=(0.1, 0.2, 0.3)), ValueError, "pair"),
    (dict(recurrent_dropout=1.0), ValueError, "recurrent_dropout"),
    (dict(recurrent_dropout=-0.1), ValueError, "recurrent_dropout"),
    (dict(recurrent_dropout="0.1"), TypeError, "recurrent_dropout"),
    (dict(layer_norm="yes"), TypeError, "layer_norm"),
    (dict(layer_norm=1), TypeError, "layer_norm"),
    (dict(layer_norm=True, layer_norm_eps="1e-5"), TypeError, "layer_norm_eps"),
    (dict(layer_norm=True, layer_norm_eps=0), ValueError, "layer_norm_eps"),
    (dict(layer_norm=True, layer_norm_eps=-1), ValueError, "layer_norm_eps"),
    (dict(layer_norm=True, layer_norm_eps=float("inf")), ValueError, "layer_norm_eps"),
    (dict(layer_norm=True, layer_norm_eps=float("nan")), ValueError, "layer_norm_eps"),
    (dict(layer_norm=True, layer_norm_cell="foo"), ValueError, "layer_norm_cell"),
    (dict(layer_norm=True, layer_norm_cell=None), TypeError, "layer_norm_cell"),
    (dict(layer_norm_eps=1e-3), ValueError, "layer_norm=True"),
    (dict(layer_norm_cell="state"), ValueError, "layer_norm=True"),
    (dict(return_cell_sequence=1), TypeError, "return_cell_sequence"),
    (dict(return_cell_sequence="yes"), TypeError, "return_cell_sequence"),
]


@pytest.mark.parametrize("opts,error,match", BAD, ids=[repr(b[0]) for b in BAD])
def test_bad_options_raise(opts, error, match):
    with pytest.raises(error, match=match):
        FusedLSTM(3, 4, **opts)


def test_good_options_accepted():
    """The edges of the ranges, and the types the checks let through."""
    for opts in (dict(zoneout=0), dict(zoneout=0.999), dict(zoneout=[0.1, 0.0]),
                 dict(recurrent_dropout=0), dict(recurrent_dropout=0.99),
                 dict(layer_norm=True, layer_norm_eps=1), dict(layer_norm=True,
                                                                layer_norm_eps=1e-12),
                 dict(layer_norm=True, layer_norm_cell="state")):
        FusedLSTM(3, 4, **opts)
    assert FusedLSTM(3, 4, zoneout=0.2).zoneout == (0.2, 0.2)
    assert FusedLSTM(3, 4, zoneout=[0.1, 0]).zoneout == (0.1, 0.0)


@pytest.mark.parametrize("value", [1, 0, "yes", None])
def test_return_cell_sequence_at_forward_must_be_bool(value):
    model = FusedLSTM(3, 4)
    with pytest.raises(TypeError, match="return_cell_sequence"):
        model(torch.randn(2, 1, 3), return_cell_sequence=value)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        FusedLSTM(3, 4, 1, True, False, 0.0, False, 0, None, None, 0.0, None, 0.0, True)


# ---- (9) refused where nn.LSTM's form would silently drop a variant ----

VARIANTS = [dict(layer_norm=True), dict(layer_norm=True, layer_norm_cell="state"),
            dict(zoneout=0.1), dict(zoneout=(0.0, 0.2)), dict(recurrent_dropout=0.3),
            dict(return_cell_sequence=True)]


@pytest.mark.parametrize("opts", VARIANTS, ids=[repr(v) for v in VARIANTS])
def test_to_lstm_and_jit_script_refuse_variants(opts):
    model = FusedLSTM(3, 4, **opts)
    name = next(iter(opts))
    with pytest.raises(RuntimeError, match=name):
        model.to_lstm()
    with pytest.raises(RuntimeError, match=name):
        model.eval().to_lstm()  # eval too: to_lstm's nn.LSTM shares params to be trained
    with pytest.raises(RuntimeError, match=name):
        torch.jit.script(model)
    # the refusal is about the variant: the same module without it converts
    assert isinstance(FusedLSTM(3, 4).to_lstm(), nn.LSTM)


# ---- (10) options off: nn.LSTM's numbers ----

def test_options_off_is_nn_lstm():
    """Defaults: nn.LSTM's numbers (to 1e-5: FusedLSTM's kernels are its own, README "Same
    numbers as nn.LSTM"; not bit for bit: they differ by ~6e-8 in float32). The variants
    turned off explicitly: the plain module bit for bit, outputs and gradients, drawing
    nothing in training mode."""
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    x = torch.randn(6, 2, 3, requires_grad=True)
    runs = []
    for opts in (dict(), dict(layer_norm=False, zoneout=0.0, recurrent_dropout=0.0,
                              return_cell_sequence=False), dict(zoneout=(0, 0))):
        fused = FusedLSTM(3, 5, num_layers=2, bidirectional=True, **opts)
        fused.load_state_dict(lstm.state_dict())
        state = torch.get_rng_state()
        out, (h, c) = fused(x)
        assert torch.equal(torch.get_rng_state(), state), opts
        grads = torch.autograd.grad(op_weights_loss([out, h, c]), [x, *fused.parameters()])
        runs.append([out, h, c, *grads])
    want = lstm(x)
    for g, w in zip(runs[0][:3], [want[0], *want[1]]):
        assert_close(g, w, 1e-5, "against nn.LSTM")
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


def test_recurrent_dropout_in_eval_mode_is_the_plain_module_bitwise():
    plain = make_model(torch.float32, input_size=3, hidden_size=5, num_layers=2,
                       bidirectional=True, proj_size=2)
    dropped = FusedLSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2,
                        recurrent_dropout=0.3)
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(6, 2, 3, requires_grad=True)
    out_p, (h_p, c_p) = plain.eval()(x)
    out_d, (h_d, c_d) = dropped.eval()(x)
    for g, w in ((out_d, out_p), (h_d, h_p), (c_d, c_p)):
        assert torch.equal(g, w)
    g_d = torch.autograd.grad(out_d.sum() + c_d.sum(), [x, *dropped.parameters()])
    g_p = torch.autograd.grad(out_p.sum() + c_p.sum(), [x, *plain.parameters()])
    for g, w in zip(g_d, g_p):
        assert torch.equal(g, w)
    with torch.no_grad():  # and it does change training mode (the check above can fail)
        assert not torch.equal(dropped.train()(x)[0], out_p)


# ---- (11) autocast ----

def test_autocast_bfloat16_layer_norm_close_to_float32():
    """Under autocast the layer-norm model runs in bfloat16 (nn.LSTM's dtypes on the CPU:
    dense, no projection) and stays within 5e-2 of float32, outputs and gradients. The
    model is checked to be well conditioned first: some random layer-norm LSTMs move by
    tens of percent in float64 when only their parameters and input are rounded to
    bfloat16 (seen at make_model(seed=0) with these sizes; 1-2% is typical), and no kernel
    can do better than that. The op's own bfloat16 error is ~0.5% (checked by hand against
    float64 on bfloat16-rounded arguments)."""
    model = make_model(torch.float32, seed=1, input_size=4, hidden_size=8, num_layers=2,
                       bidirectional=True, layer_norm=True, zoneout=0.2).eval()
    torch.manual_seed(4)
    x = torch.randn(6, 3, 4, requires_grad=True)
    hx = (torch.randn(4, 3, 8), torch.randn(4, 3, 8))
    with torch.no_grad():  # conditioning: bfloat16 inputs and parameters, exact arithmetic
        m64 = copy.deepcopy(model).double()
        rounded = copy.deepcopy(model).bfloat16().double()
        r = lambda t: t.detach().bfloat16().double()  # noqa: E731
        exact = m64(x.double(), tuple(t.double() for t in hx))[0]
        assert rel_err(rounded(r(x), tuple(r(t) for t in hx))[0], exact) < 2.5e-2
    out32, (h32, c32) = model(x, hx)
    g32 = torch.autograd.grad(op_weights_loss([out32, h32, c32]), [x, *model.parameters()])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = model(x, hx)
    assert out.dtype == h.dtype == c.dtype == torch.bfloat16
    grads = torch.autograd.grad(op_weights_loss([out, h, c]), [x, *model.parameters()])
    for name, g, w in (("output", out, out32), ("h_n", h, h32), ("c_n", c, c32)):
        assert_close(g.float(), w, 5e-2, name)
    names = ["x"] + [n for n, _ in model.named_parameters()]
    for name, g, w in zip(names, grads, g32):
        assert g.dtype == w.dtype == torch.float32
        assert_close(g, w, 5e-2, f"grad of {name}")
    # and autocast did run in bfloat16 (the check above can fail): not float32's numbers
    assert rel_err(out.float(), out32) > 1e-4


# ---- (12) CUDA: the reference there, the CPU's numbers ----

@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_variant_model_matches_cpu_and_trains():
    cpu = make_model(torch.float64, input_size=3, hidden_size=5, num_layers=2,
                     bidirectional=True, proj_size=2, layer_norm=True, zoneout=(0.2, 0.1),
                     recurrent_dropout=0.3, layer_norm_cell="state").eval()
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        want = cpu(x, return_cell_sequence=True)
        got = gpu(x.cuda(), return_cell_sequence=True)
    for k, (g, w) in enumerate(zip([got[0], *got[1], got[2]], [want[0], *want[1], want[2]])):
        assert_close(g.cpu(), w, 1e-10, f"output {k}")
    gpu.train()
    before = [p.detach().clone() for p in gpu.parameters()]
    opt = torch.optim.SGD(gpu.parameters(), lr=0.1)
    out, (h, c), cells = gpu(x.cuda(), return_cell_sequence=True)
    (out.square().mean() + cells.square().mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gpu.parameters())
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, gpu.parameters()))


@needs_extension
@pytest.mark.parametrize("norm", [None, "hidden"])
def test_op_with_no_steps_returns_the_initial_state(norm):
    """T = 0: h_n and c_n are h0 and c0 (as the reference and the layer op give), y and the
    cells empty."""
    args = variant_args(torch.float64, norm=norm, T=0, requires_grad=False)
    y, h_n, c_n, cells = lstm_variant(*args)
    assert y.shape[0] == 0 and cells.shape[0] == 0
    assert torch.equal(h_n, args[2]) and torch.equal(c_n, args[3])


@needs_extension
def test_backward_op_refuses_saved_buffers_of_other_options():
    """lstm_variant_backward checks every saved buffer the options read against its size: a
    list from a call with other options raises instead of reading past a buffer."""
    op = torch.ops.fused_lstm
    plain = variant_args(torch.float64, proj=3, requires_grad=False)
    y, h_n, c_n, cells, saved = op.lstm_variant_forward(*plain, True)
    grads = (torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n), None)
    short = list(saved)
    short[7] = torch.empty(0, dtype=torch.float64)  # the projection's buffer dropped
    with pytest.raises(RuntimeError, match="saved tensor 7"):
        op.lstm_variant_backward(*grads, *plain, y, cells, short)
    normed = list(plain)
    normed[8] = [torch.rand(n, dtype=torch.float64) + 0.5
                 for n in (4 * 5, 4 * 5, 4 * 5, 4 * 5, 5, 5)]
    with pytest.raises(RuntimeError, match="saved tensor 1"):  # no layer-norm buffers saved
        op.lstm_variant_backward(*grads, *normed, y, cells, list(saved))


# ---- (13) CUDA: the variant op's own kernels, behind FUSED_LSTM_CUDA_VARIANT_OP=1 ----
#
# Off by default (the reference runs CUDA calls, test above); these turn the switch on for
# one test each. A GPU run: .ci/cuda_check.sh (benchmarks/NOTES.md, "CUDA: the variant op's
# kernels").

needs_cuda_variant = pytest.mark.skipif(
    not (torch.cuda.is_available() and fused_ops._CUDA_VARIANT_KERNELS),
    reason="no CUDA device, or fused_lstm built without the variant op's CUDA kernels")


def test_cuda_variant_switch_is_off_by_default(monkeypatch):
    """Unset (or 0), the switch is off and CUDA calls take the reference; 1 turns it on;
    anything else warns and leaves it off. (Runs without a GPU: it reads the switch only.)"""
    monkeypatch.delenv(fused_ops.CUDA_VARIANT_ENV, raising=False)
    assert fused_ops._read_cuda_variant_switch() is False
    monkeypatch.setattr(fused_ops, "_CUDA_VARIANT_OP", False)
    assert not fused_ops._variant_op_on(torch.device("cuda"))
    assert fused_ops._variant_op_on(torch.device("cpu"))
    monkeypatch.setenv(fused_ops.CUDA_VARIANT_ENV, "0")
    assert fused_ops._read_cuda_variant_switch() is False
    monkeypatch.setenv(fused_ops.CUDA_VARIANT_ENV, "1")
    assert fused_ops._read_cuda_variant_switch() is True
    monkeypatch.setenv(fused_ops.CUDA_VARIANT_ENV, "yes")
    with pytest.warns(RuntimeWarning, match="must be 0 or 1"):
        assert fused_ops._read_cuda_variant_switch() is False


@pytest.fixture
def cuda_variant_op(monkeypatch):
    """For one test: FUSED_LSTM_CUDA_VARIANT_OP=1 (re-read, as at import), full float32
    GEMMs (no TF32), and lstm_variant's reference fallback made to fail, so that every CUDA
    call of the test is seen to run the op."""
    monkeypatch.setenv(fused_ops.CUDA_VARIANT_ENV, "1")
    monkeypatch.setattr(fused_ops, "_CUDA_VARIANT_OP", fused_ops._read_cuda_variant_switch())
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)

    def reference_ran(*args, **kwargs):
        raise AssertionError("lstm_variant ran the reference on CUDA, not the op")
    monkeypatch.setattr(fused_ops, "lstm_variant_reference", reference_ran)


def args_to(args, dtype, device):
    """variant_args' list in `dtype` on `device` (batch_sizes stays on the CPU), with leaves
    of its own."""
    def to(t):
        return (None if t is None
                else t.detach().to(device=device, dtype=dtype).requires_grad_(t.requires_grad))
    out = list(args)
    out[0], out[2], out[3] = to(args[0]), to(args[2]), to(args[3])
    out[4], out[8] = [to(w) for w in args[4]], [to(n) for n in args[8]]
    out[11], out[12], out[13] = to(args[11]), to(args[12]), to(args[13])
    return out


@needs_cuda_variant
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", OP_GRID, ids=[grid_id(c) for c in OP_GRID])
def test_cuda_variant_op_matches_reference_and_cpu_op(case, dtype, cuda_variant_op):
    """The op on CUDA against the reference on CUDA in float64 and against the CPU op on the
    same inputs and masks, outputs and every gradient: 1e-10 in float64, 1e-5 in float32
    (2e-5 with layer norm, as test_op_matches_reference)."""
    packed, proj, norm, zoneout, rmask, reverse = case
    args64 = variant_args(torch.float64, packed, proj, norm, zoneout, rmask, reverse,
                          seed=len(grid_id(case)))
    gpu = args_to(args64, dtype, "cuda")
    cpu = args_to(args64, dtype, "cpu")
    ref = args_to(args64, torch.float64, "cuda")
    got, on_cpu, want = lstm_variant(*gpu), lstm_variant(*cpu), reference_of(ref)
    tol = 2e-5 if dtype == torch.float32 and norm else TOL[dtype]
    # Each device is held to tol against float64; the two can differ by the sum of their
    # errors (the CPU op alone reaches 9.4e-6 of its 2e-5 at dense-proj0-norm=hidden-
    # zo=None-mask-rev, grad of norm[4], from its arithmetic, not the rounded inputs).
    tol_cpu = 2 * tol
    for name, g, c, w in zip(("y", "h_n", "c_n", "cells"), got, on_cpu, want):
        assert g.device.type == "cuda" and g.dtype == dtype
        assert_close(g.cpu(), w.cpu(), tol, name)
        assert_close(g.cpu(), c, tol_cpu, f"{name} against the CPU op")
    g_got = torch.autograd.grad(op_weights_loss(got), differentiable(gpu))
    g_cpu = torch.autograd.grad(op_weights_loss(on_cpu), differentiable(cpu))
    g_want = torch.autograd.grad(op_weights_loss(want), differentiable(ref))
    names = ["x", "h0", "c0"] + [f"weights[{i}]" for i in range(len(gpu[4]))] + [
        f"norm[{i}]" for i in range(len(gpu[8]))]
    assert len(names) == len(g_got)
    for name, g, c, w in zip(names, g_got, g_cpu, g_want):
        assert g.dtype == dtype
        assert_close(g.cpu(), w.cpu(), tol, f"grad of {name}")
        assert_close(g.cpu(), c, tol_cpu, f"grad of {name} against the CPU op")


@needs_cuda_variant
def test_cuda_variant_op_saves_what_the_cpu_op_saves(cuda_variant_op):
    """The same saved list (count, shapes, dtypes), so ops.py's autograd serves both."""
    for cfg in (dict(), dict(norm="state", proj=3, zoneout="rows", rmask=True, packed=True)):
        args = variant_args(torch.float64, requires_grad=False, **cfg)
        *_, saved_cpu = torch.ops.fused_lstm.lstm_variant_forward(*args, True)
        *_, saved_gpu = torch.ops.fused_lstm.lstm_variant_forward(
            *args_to(args, torch.float64, "cuda"), True)
        assert [(s.shape, s.dtype) for s in saved_gpu] == [(s.shape, s.dtype) for s in saved_cpu]


@needs_cuda_variant
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_cuda_variant_op_16_bit_matches_cpu_op(dtype, cuda_variant_op):
    """16-bit inputs run in float32 on both devices and come back in their dtype."""
    args64 = variant_args(torch.float64, norm="hidden", zoneout="rows", rmask=True, proj=3,
                          seed=6)
    gpu, cpu = args_to(args64, dtype, "cuda"), args_to(args64, dtype, "cpu")
    got, on_cpu = lstm_variant(*gpu), lstm_variant(*cpu)
    for k, (g, c) in enumerate(zip(got, on_cpu)):
        assert g.dtype == dtype
        assert_close(g.cpu().double(), c.double(), 2e-2, f"output {k}")
    g_got = torch.autograd.grad(op_weights_loss(got), differentiable(gpu))
    g_cpu = torch.autograd.grad(op_weights_loss(on_cpu), differentiable(cpu))
    for k, (g, c) in enumerate(zip(g_got, g_cpu)):
        assert g.dtype == dtype
        assert_close(g.cpu().double(), c.double(), 2e-2, f"gradient {k}")


@needs_cuda_variant
@pytest.mark.parametrize("cfg", OPCHECK_CASES, ids=[",".join(f"{k}={v}" for k, v in c.items())
                                                    for c in OPCHECK_CASES])
def test_cuda_variant_opcheck(cfg, cuda_variant_op):
    """torch.library.opcheck on CUDA tensors: the fake kernel, autograd registration and
    schema agree with the CUDA kernels as they do with the CPU ones."""
    cfg = dict(cfg)
    dtype = cfg.pop("dtype", torch.float64)
    args = args_to(variant_args(torch.float64, T=4, B=3, I=3, H=4, seed=6, **cfg), dtype, "cuda")
    torch.library.opcheck(torch.ops.fused_lstm.lstm_variant_forward.default, (*args, True))


CUDA_MODULE_CASES = [
    dict(layer_norm=True),
    dict(layer_norm=True, layer_norm_cell="state", zoneout=(0.2, 0.1), recurrent_dropout=0.3,
         proj_size=2),
    dict(zoneout=0.15, recurrent_dropout=0.25, packed=True),
    dict(layer_norm=True, zoneout=0.1, eval=True),
    dict(),  # the cell sequence alone
]


@needs_cuda_variant
@pytest.mark.parametrize("cfg", CUDA_MODULE_CASES,
                         ids=[",".join(f"{k}={v}" for k, v in c.items()) or "cells"
                              for c in CUDA_MODULE_CASES])
def test_cuda_variant_module_under_switch_equals_default_route(cfg, monkeypatch):
    """FusedLSTM (2 layers, bidirectional) on CUDA with the options, the switch on, against
    the same module on the default route (the reference): outputs, cells and every
    gradient, training-mode masks drawn under one seed by both, float64 to 1e-10."""
    cfg = dict(cfg)
    packed, evaluate = cfg.pop("packed", False), cfg.pop("eval", False)
    model = make_model(torch.float64, input_size=3, hidden_size=5, num_layers=2,
                       bidirectional=True, **cfg).cuda()
    model.train(not evaluate)
    x = torch.randn(6, 4, 3, dtype=torch.float64, device="cuda")
    lengths = torch.tensor([6, 4, 3, 1])

    def run():
        torch.manual_seed(3)
        xx = x.clone().requires_grad_()
        inp = pack_padded_sequence(xx, lengths, enforce_sorted=False) if packed else xx
        out, (h, c), cells = model(inp, return_cell_sequence=True)
        if packed:
            out, cells = out.data, cells.data
        loss = op_weights_loss((out, h, c, cells))
        grads = torch.autograd.grad(loss, [xx, *model.parameters()])
        return [out, h, c, cells, *grads]

    monkeypatch.setattr(fused_ops, "_CUDA_VARIANT_OP", False)
    want = run()
    monkeypatch.setenv(fused_ops.CUDA_VARIANT_ENV, "1")
    monkeypatch.setattr(fused_ops, "_CUDA_VARIANT_OP", fused_ops._read_cuda_variant_switch())
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)

    def reference_ran(*args, **kwargs):
        raise AssertionError("lstm_variant ran the reference on CUDA, not the op")
    monkeypatch.setattr(fused_ops, "lstm_variant_reference", reference_ran)
    got = run()
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.device.type == "cuda"
        assert_close(g.cpu(), w.cpu(), 1e-10, f"result {k}")
