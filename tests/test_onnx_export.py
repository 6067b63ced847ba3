"""torch.onnx.export of FusedLSTM: standard ONNX LSTM nodes, run in onnxruntime.

Each exported file is checked with onnx.checker, holds only standard-domain ops, and gives
eager FusedLSTM's and nn.LSTM's output, h_n and c_n in onnxruntime (float32, 1e-5 of the
largest value) at the export shape and at other sequence lengths and batch sizes.
"""

import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

_WHY = "ONNX export tests need onnx, onnxscript and onnxruntime (pip install onnx onnxscript " \
       "onnxruntime)"
onnx = pytest.importorskip("onnx", reason=_WHY)
pytest.importorskip("onnxscript", reason=_WHY)
ort = pytest.importorskip("onnxruntime", reason=_WHY)

from fused_lstm import FusedLSTM, onnx_export  # noqa: E402

from helpers import make_pair, rel_err  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5  # float32, relative to the largest magnitude

pytestmark = [
    # torch's own exporters' notices, not fused_lstm's
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*axis name.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:Exporting a model to ONNX with a batch_size:UserWarning"),
    pytest.mark.filterwarnings("ignore:Exporting a model while it is in training mode"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN"),
]


class Call(nn.Module):
    """A model around an LSTM: output, h_n and c_n as three outputs; h0, c0 as inputs when
    given."""

    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm
        self.train(lstm.training)

    def forward(self, x, h0=None, c0=None):
        y, (h, c) = self.lstm(x) if h0 is None else self.lstm(x, (h0, c0))
        return y, h, c


class CallPacked(nn.Module):
    """Takes a PackedSequence's tensors as inputs (the form torch.export can trace)."""

    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm
        self.train(lstm.training)

    def forward(self, data, batch_sizes, sorted_indices=None, unsorted_indices=None, h0=None,
                c0=None):
        packed = PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices)
        y, (h, c) = self.lstm(packed) if h0 is None else self.lstm(packed, (h0, c0))
        return y.data, h, c


def export(model, args, path, dynamic_shapes=None, dynamo=True, **kwargs):
    torch.onnx.export(model, args, str(path), dynamo=dynamo, dynamic_shapes=dynamic_shapes,
                      verbose=False, **kwargs)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_graph(path):
    """onnx.checker passes and every op is a standard ONNX op; returns the LSTM nodes."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    domains = {n.domain for n in proto.graph.node}
    assert domains <= {"", "ai.onnx"}, f"non-standard op domains: {domains}"
    assert not proto.functions, [f.name for f in proto.functions]
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}
    return [n for n in proto.graph.node if n.op_type == "LSTM"]


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def run(session, args):
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    assert len(feeds) == len(session.get_inputs())
    return [torch.from_numpy(o) for o in session.run(None, feeds)]


def assert_matches(got, want, what):
    assert len(got) == len(want), what
    for name, a, b in zip(("output", "h_n", "c_n"), got, want):
        b = b.detach()
        assert tuple(a.shape) == tuple(b.shape), f"{what} {name}: {tuple(a.shape)} vs {tuple(b.shape)}"
        err = rel_err(a, b)
        assert err <= TOL, f"{what} {name}: relative error {err:.3g} > {TOL:g}"


def dense_inputs(cfg, with_state, steps, batch, gen):
    proj = cfg.get("proj_size", 0)
    states = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    shape = (batch, steps, 3) if cfg.get("batch_first") else (steps, batch, 3)
    args = (torch.randn(shape, generator=gen),)
    if with_state:
        args += (torch.randn(states, batch, proj or 5, generator=gen),
                 torch.randn(states, batch, 5, generator=gen))
    return args


# (config, h0/c0 given): 1 and 2 layers, bidirectional, batch_first, with and without state
# and bias; with projection (decomposed onto the LSTM op).
DENSE = [
    (dict(), False),
    (dict(bias=False), True),
    (dict(num_layers=2), True),
    (dict(bidirectional=True, bias=False), False),
    (dict(batch_first=True), False),
    (dict(num_layers=2, bidirectional=True, batch_first=True), True),
    (dict(proj_size=3, bidirectional=True), False),
    (dict(proj_size=3, num_layers=2, bidirectional=True, batch_first=True), True),
]


@pytest.mark.parametrize("cfg,with_state", DENSE,
                         ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) or "default"
                         if isinstance(v, dict) else ("state" if v else "nostate"))
def test_dense(cfg, with_state, tmp_path):
    ref, fused = make_pair(seed=0, input_size=3, hidden_size=5, **cfg)
    fused.eval()
    gen = torch.Generator().manual_seed(1)
    steps_dim, batch_dim = torch.export.Dim("steps"), torch.export.Dim("batch")
    x_dims = {1: steps_dim, 0: batch_dim} if cfg.get("batch_first") else {0: steps_dim,
                                                                            1: batch_dim}
    dims = {"x": x_dims}
    if with_state:
        dims.update(h0={1: batch_dim}, c0={1: batch_dim})
    path = tmp_path / "lstm.onnx"
    session = export(Call(fused), dense_inputs(cfg, with_state, 5, 3, gen), path, dims)

    layers, dirs = cfg.get("num_layers", 1), 2 if cfg.get("bidirectional") else 1
    lstms = check_graph(path)
    proj = cfg.get("proj_size", 0)
    # One node per layer; with projection and h0, one per layer direction.
    assert len(lstms) == (layers * dirs if proj and with_state else layers)
    for node in lstms:
        a = attrs(node)
        assert a["hidden_size"] == 5 and a.get("layout", 0) == 0
        if not (proj and with_state):
            assert a["direction"] == (b"bidirectional" if dirs == 2 else b"forward")
        assert len(node.input) < 5 or node.input[4] == ""  # no sequence_lens for dense input
    for steps, batch in [(5, 3), (11, 4), (1, 1)]:
        args = dense_inputs(cfg, with_state, steps, batch, gen)
        got = run(session, args)
        with torch.no_grad():
            assert_matches(got, Call(fused)(*args), f"vs FusedLSTM at T={steps} B={batch}")
            assert_matches(got, Call(ref)(*args), f"vs nn.LSTM at T={steps} B={batch}")


def test_unbatched(tmp_path):
    ref, fused = make_pair(seed=2, input_size=3, hidden_size=5, bidirectional=True)
    fused.eval()
    gen = torch.Generator().manual_seed(3)

    def inputs(steps):
        return (torch.randn(steps, 3, generator=gen), torch.randn(2, 5, generator=gen),
                torch.randn(2, 5, generator=gen))

    steps = torch.export.Dim("steps")
    session = export(Call(fused), inputs(4), tmp_path / "u.onnx", ({0: steps}, None, None))
    check_graph(tmp_path / "u.onnx")
    for n in (4, 9):
        args = inputs(n)
        with torch.no_grad():
            assert_matches(run(session, args), Call(ref)(*args), f"T={n}")


def packed_inputs(lengths, with_state, states, proj, gen, enforce_sorted):
    x = torch.randn(len(lengths), max(lengths), 3, generator=gen)
    p = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True,
                             enforce_sorted=enforce_sorted)
    args = (p.data, p.batch_sizes)
    if not enforce_sorted:
        args += (p.sorted_indices, p.unsorted_indices)
    if with_state:
        args += (torch.randn(states, len(lengths), proj or 5, generator=gen),
                 torch.randn(states, len(lengths), 5, generator=gen))
    return args


@pytest.mark.parametrize("cfg,with_state,enforce_sorted", [
    (dict(num_layers=2, bidirectional=True), True, False),
    (dict(), False, True),
    (dict(proj_size=2, bidirectional=True), True, False),
], ids=["2-layer-bidirectional-state", "sorted-nostate", "proj-bidirectional-state"])
def test_packed_sequence_becomes_sequence_lens(cfg, with_state, enforce_sorted, tmp_path):
    ref, fused = make_pair(seed=4, input_size=3, hidden_size=5, **cfg)
    fused.eval()
    gen = torch.Generator().manual_seed(5)
    states = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)

    def inputs(lengths):
        return packed_inputs(lengths, with_state, states, cfg.get("proj_size", 0), gen,
                             enforce_sorted)

    rows, steps, batch = (torch.export.Dim(n) for n in ("rows", "steps", "batch"))
    dims = {"data": {0: rows}, "batch_sizes": {0: steps}}
    if not enforce_sorted:
        dims.update(sorted_indices={0: batch}, unsorted_indices={0: batch})
    if with_state:
        dims.update(h0={1: batch}, c0={1: batch})
    first = [5, 4, 2] if enforce_sorted else [4, 2, 5]
    path = tmp_path / "packed.onnx"
    session = export(CallPacked(fused), inputs(first), path, dims)
    lstms = check_graph(path)
    assert lstms and all(n.input[4] for n in lstms), "sequence_lens not given"
    others = [[7, 6, 3, 3, 1], [2]] if enforce_sorted else [[1, 7, 3, 3, 6], [2]]
    for lengths in [first] + others:
        args = inputs(lengths)
        got = run(session, args)
        with torch.no_grad():
            assert_matches(got, CallPacked(fused)(*args), f"vs FusedLSTM, lengths {lengths}")
            assert_matches(got, CallPacked(ref)(*args), f"vs nn.LSTM, lengths {lengths}")


class CallLengths(nn.Module):
    """Padded input with lengths= (a model input, so each run may take others)."""

    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm
        self.train(lstm.training)

    def forward(self, x, lengths, h0=None, c0=None):
        hx = None if h0 is None else (h0, c0)
        y, (h, c) = self.lstm(x, hx, lengths=lengths)
        return y, h, c


@pytest.mark.parametrize("cfg,with_state", [
    (dict(num_layers=2, bidirectional=True), True),
    (dict(batch_first=True), False),
    (dict(proj_size=2, bidirectional=True), True),
    (dict(proj_size=2, num_layers=2, batch_first=True), False),
], ids=["2-layer-bidirectional-state", "batch-first-nostate", "proj-bidirectional-state",
        "proj-2-layer-batch-first-nostate"])
def test_lengths_become_sequence_lens(cfg, with_state, tmp_path):
    """lengths= exports as the LSTM nodes' sequence_lens: zero past each length, h_n and c_n
    at each sequence's last step, the reverse direction from there, and a length of 0 keeping
    the initial state, at other lengths, sequence lengths and batch sizes than the export's."""
    _, fused = make_pair(seed=8, input_size=3, hidden_size=5, **cfg)
    fused.eval()
    gen = torch.Generator().manual_seed(9)

    def inputs(steps, lengths):
        args = dense_inputs(cfg, with_state, steps, len(lengths), gen)
        return (args[0], torch.tensor(lengths)) + args[1:]

    steps, batch = torch.export.Dim("steps"), torch.export.Dim("batch")
    x_dims = {0: batch, 1: steps} if cfg.get("batch_first") else {0: steps, 1: batch}
    dims = {"x": x_dims, "lengths": {0: batch}}
    if with_state:
        dims.update(h0={1: batch}, c0={1: batch})
    path = tmp_path / "lengths.onnx"
    session = export(CallLengths(fused), inputs(6, [6, 2, 0, 4]), path, dims)
    lstms = check_graph(path)
    assert lstms and all(len(n.input) > 4 and n.input[4] for n in lstms), "sequence_lens not given"
    for T, lengths in [(6, [6, 2, 0, 4]), (9, [1, 9, 3]), (4, [0, 0]), (7, [7])]:
        args = inputs(T, lengths)
        with torch.no_grad():
            assert_matches(run(session, args), CallLengths(fused)(*args), f"T={T} {lengths}")


def test_lengths_with_the_torchscript_exporter_points_to_dynamo(tmp_path):
    model = CallLengths(FusedLSTM(3, 5).eval())
    with pytest.raises(onnx_export.OnnxExportError, match=r"lengths=.*dynamo=True"):
        export(model, (torch.randn(4, 2, 3), torch.tensor([4, 1])), tmp_path / "l.onnx",
               dynamo=False)


def test_reset_is_refused(tmp_path):
    class CallReset(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = FusedLSTM(3, 5).eval()

        def forward(self, x, reset):
            return self.lstm(x, reset=reset)[0]

    with pytest.raises(Exception, match="reset= is not supported"):
        export(CallReset(), (torch.randn(4, 2, 3), torch.rand(4, 2) < 0.3), tmp_path / "r.onnx")


# ---- what cannot be exported says why ----

def test_training_mode_dropout_is_refused(tmp_path):
    """ONNX's LSTM has no dropout between layers: export in eval mode."""
    model = FusedLSTM(3, 5, num_layers=2, dropout=0.5)  # training mode
    with pytest.raises(Exception, match=r"training mode with dropout=0\.5.*model\.eval\(\)"):
        export(model, (torch.randn(4, 2, 3),), tmp_path / "d.onnx")


def test_bfloat16_is_refused(tmp_path):
    model = FusedLSTM(3, 5, dtype=torch.bfloat16).eval()
    with pytest.raises(Exception, match=r"bfloat16.*model\.float\(\)"):
        export(model, (torch.randn(4, 2, 3, dtype=torch.bfloat16),), tmp_path / "b.onnx")


def test_no_export_no_onnx_path(monkeypatch):
    """Without an ONNX export under way (eager, torch.jit.trace, torch.export), FusedLSTM
    runs its fused ops: the ONNX form is never built."""
    def fail(*args, **kwargs):
        raise AssertionError("the ONNX form ran outside torch.onnx.export")

    monkeypatch.setattr(onnx_export, "forward", fail)
    model = FusedLSTM(3, 5).eval()
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        want = model(x)[0]
        assert torch.equal(torch.jit.trace(model, (x,))(x)[0], want)
        ep = torch.export.export(model, (x,))
    assert any("fused_lstm" in str(n.target) for n in ep.graph.nodes)
    assert not onnx_export.in_onnx_export()


# ---- the TorchScript exporter (dynamo=False) ----

def test_torchscript_exporter(tmp_path):
    """dynamo=False exports the equivalent nn.LSTM's graph (aten::lstm -> LSTM)."""
    cfg = dict(num_layers=2, bidirectional=True, batch_first=True)
    ref, fused = make_pair(seed=6, input_size=3, hidden_size=5, **cfg)
    fused.eval()
    gen = torch.Generator().manual_seed(7)
    path = tmp_path / "ts.onnx"
    session = export(Call(fused), dense_inputs(cfg, True, 5, 3, gen), path, dynamo=False,
                     input_names=["x", "h0", "c0"],
                     dynamic_axes={"x": {0: "batch", 1: "steps"}, "h0": {1: "batch"},
                                   "c0": {1: "batch"}})
    assert len(check_graph(path)) == 2
    for steps, batch in [(5, 3), (9, 2)]:
        args = dense_inputs(cfg, True, steps, batch, gen)
        with torch.no_grad():
            assert_matches(run(session, args), Call(ref)(*args), f"T={steps} B={batch}")


def test_torchscript_exporter_refuses_projection_pointing_to_dynamo(tmp_path):
    model = FusedLSTM(3, 5, proj_size=2).eval()
    with pytest.raises(onnx_export.OnnxExportError, match=r"proj_size.*dynamo=True"):
        export(model, (torch.randn(4, 2, 3),), tmp_path / "p.onnx", dynamo=False)


# ---- the examples' models ----

@pytest.fixture
def examples(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))


def test_digits_and_adding_models(examples, tmp_path):
    import adding
    import digits

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(8)
    batch, steps = torch.export.Dim("batch"), torch.export.Dim("steps")
    for name, model, shape, dims, others in [
        ("digits", digits.Classifier(FusedLSTM, 16), (4, 8, 8), {0: batch}, [(1, 8, 8),
                                                                            (9, 8, 8)]),
        ("adding", adding.Adder(16), (4, 20, 2), {0: batch, 1: steps}, [(2, 50, 2),
                                                                        (7, 3, 2)]),
    ]:
        model.eval()
        path = tmp_path / f"{name}.onnx"
        session = export(model, (torch.randn(shape, generator=gen),), path, ({**dims},))
        assert len(check_graph(path)) == 1
        for s in [shape] + others:
            x = torch.randn(s, generator=gen)
            with torch.no_grad():
                want = model(x)
            got = run(session, (x,))[0]
            assert got.shape == want.shape and rel_err(got, want) <= TOL, (name, s)


def test_sentiment_model(examples, tmp_path):
    """pack_padded_sequence inside the model: torch.export cannot trace it (nor can it with
    nn.LSTM), so dynamo=True says so; the TorchScript exporter exports it, with the packing as
    the LSTM nodes' sequence_lens."""
    import sentiment

    torch.manual_seed(0)
    model = sentiment.SentimentModel(vocab=40, embed=8, hidden=6).eval()
    gen = torch.Generator().manual_seed(9)

    def inputs(batch, steps):
        lengths = torch.randint(1, steps + 1, (batch,), generator=gen)
        lengths[0] = steps
        return torch.randint(1, 40, (batch, steps), generator=gen), lengths

    with pytest.raises(Exception, match=r"pack_padded_sequence.*dynamo=False"):
        export(model, inputs(4, 9), tmp_path / "s_dynamo.onnx")

    path = tmp_path / "s.onnx"
    session = export(model, inputs(4, 9), path, dynamo=False,
                     input_names=["tokens", "lengths"],
                     dynamic_axes={"tokens": {0: "batch", 1: "steps"},
                                   "lengths": {0: "batch"}})
    lstms = check_graph(path)
    assert len(lstms) == 2 and all(n.input[4] for n in lstms)
    for batch, steps in [(4, 9), (7, 15), (1, 3)]:
        args = inputs(batch, steps)
        with torch.no_grad():
            want = model(*args)
        got = run(session, args)[0]
        assert got.shape == want.shape and rel_err(got, want) <= TOL, (batch, steps)


# ---- the README's snippet, as written ----

def test_readme_snippet_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Export to ONNX"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (Export to ONNX)", "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "lstm.onnx").exists()
    printed = capsys.readouterr().out.split()
    assert printed and float(printed[-1]) <= 1e-5
