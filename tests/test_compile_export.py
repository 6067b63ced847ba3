"""torch.compile, torch.export and torch.library.opcheck on FusedLSTM and its ops."""

import pytest
import torch
from torch import nn

import fused_lstm
from fused_lstm import FusedLSTM

from helpers import rel_err
from helpers import layer_args

OPS = torch.ops.fused_lstm

pytestmark = [
    pytest.mark.skipif(not fused_lstm.extension_loaded(), reason="compiled extension not built"),
    # raised inside torch's own export/opcheck machinery, not by fused_lstm
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated"),
]

TOL = 1e-5  # float32, relative to the largest magnitude


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class Tagger(nn.Module):
    """A 2-layer bidirectional batch-first FusedLSTM with a Linear head."""

    def __init__(self, lstm_cls=FusedLSTM, input_size=3, hidden_size=6, classes=2):
        super().__init__()
        self.lstm = lstm_cls(input_size, hidden_size, num_layers=2, batch_first=True,
                             bidirectional=True)
        self.head = nn.Linear(2 * hidden_size, classes)

    def forward(self, x):
        y, (h_n, c_n) = self.lstm(x)
        return self.head(y), h_n, c_n


def make_model(seed=0):
    torch.manual_seed(seed)
    return Tagger()


def run_with_grads(model, x):
    """Outputs, and the gradients of a fixed loss w.r.t. x and every parameter."""
    x = x.detach().requires_grad_(True)
    outs = model(x)
    gen = torch.Generator().manual_seed(123)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    grads = torch.autograd.grad(loss, [x] + list(model.parameters()))
    return [o.detach() for o in outs], grads


def assert_matches(got, want, what):
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape, f"{what}[{i}]: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        err = rel_err(a, b)
        assert err <= TOL, f"{what}[{i}]: relative error {err:.3g} > {TOL:g}"


# ---- torch.compile ----

def test_nn_lstm_cannot_compile_fullgraph():
    """The reason FusedLSTM exists beside it: dynamo refuses nn.LSTM outright."""
    model = nn.LSTM(3, 6, num_layers=2, batch_first=True, bidirectional=True)
    with pytest.raises(torch._dynamo.exc.Unsupported, match="LSTM"):
        torch.compile(model, fullgraph=True)(torch.randn(2, 5, 3))


def test_no_graph_breaks():
    model = make_model()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 5, 3))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_inductor_fullgraph_matches_eager_forward_and_backward():
    """Default backend: same outputs and gradients as eager; the compiled code calls the
    fused ops; a new sequence length afterwards works and is right too."""
    from torch._inductor.utils import run_and_get_code

    model = make_model()
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 5, 3)
    want_out, want_grads = run_with_grads(model, x)
    (got_out, got_grads), code = run_and_get_code(run_with_grads, compiled, x)
    assert_matches(got_out, want_out, "output")
    assert_matches(got_grads, want_grads, "grad")
    code = "\n".join(code)
    # one op per layer, both directions in it
    assert "fused_lstm.lstm_layer_forward" in code
    assert "fused_lstm.lstm_layer_backward" in code

    x2 = torch.randn(2, 9, 3)  # a new length: recompiles (dynamic), must not error
    got_out, got_grads = run_with_grads(compiled, x2)
    want_out, want_grads = run_with_grads(model, x2)
    assert_matches(got_out, want_out, "output (T=9)")
    assert_matches(got_grads, want_grads, "grad (T=9)")


def test_aot_eager_new_lengths_recompile_once():
    """After the first compile, a second length compiles a graph with a symbolic length
    that serves every later length without recompiling; gradients stay exact."""
    from torch._dynamo.testing import CompileCounterWithBackend

    model = make_model(seed=1)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    for T in (5, 9, 13, 30):
        x = torch.randn(2, T, 3)
        got_out, got_grads = run_with_grads(compiled, x)
        want_out, want_grads = run_with_grads(model, x)
        assert_matches(got_out, want_out, f"output (T={T})")
        assert_matches(got_grads, want_grads, f"grad (T={T})")
    assert counter.frame_count == 2, f"compiled {counter.frame_count} times for 4 lengths"
    with torch.no_grad():  # inference under compile: no saved activations requested
        x = torch.randn(2, 7, 3)
        assert_matches(compiled(x), model(x), "no_grad output")


# ---- torch.export ----

def test_export_dynamic_length_and_save_load(tmp_path):
    model = make_model(seed=2).eval()
    T = torch.export.Dim("T", min=2, max=4096)
    x = torch.randn(2, 5, 3)
    ep = torch.export.export(model, (x,), dynamic_shapes={"x": {1: T}})
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.fused_lstm.lstm_layer_forward.default) == 2
    exported = ep.module()
    for length in (5, 17):
        xl = torch.randn(2, length, 3)
        with torch.no_grad():
            assert_matches(exported(xl), model(xl), f"exported (T={length})")

    path = tmp_path / "tagger.pt2"
    torch.export.save(ep, str(path))
    loaded = torch.export.load(str(path)).module()
    for length in (5, 11):
        xl = torch.randn(2, length, 3)
        with torch.no_grad():
            want = model(xl)
            assert_matches(loaded(xl), want, f"loaded (T={length})")
            assert_matches(loaded(xl), exported(xl), f"loaded vs exported (T={length})")


def test_export_dynamic_batch_and_length_under_no_grad():
    """Exported under no_grad, the graph asks the op for no saved activations."""
    model = make_model(seed=3).eval()
    B = torch.export.Dim("B", min=2, max=256)
    T = torch.export.Dim("T", min=2, max=4096)
    with torch.no_grad():
        ep = torch.export.export(model, (torch.randn(2, 5, 3),),
                                 dynamic_shapes={"x": {0: B, 1: T}})
    # One op per layer, both directions in it: 2 layers.
    forward_op = torch.ops.fused_lstm.lstm_layer_forward.default
    calls = [n for n in ep.graph.nodes if n.target == forward_op]
    assert [n.args[-1] for n in calls] == [False] * 2  # need_backward
    x = torch.randn(7, 12, 3)
    with torch.no_grad():
        assert_matches(ep.module()(x), model(x), "exported (B=7, T=12)")


# ---- torch.library.opcheck: cases tests/test_ops.py does not cover ----
# test_ops.py runs opcheck in float32 on dense/proj/nobias/packed; here: float64 on every
# layout, float32 packed with projection / without bias, and the 16-bit dtypes.

OPCHECK_CASES = [
    (torch.float64, dict(), False),
    (torch.float64, dict(proj=2), True),
    (torch.float64, dict(bias=False), True),
    (torch.float64, dict(packed=True), False),
    (torch.float64, dict(packed=True, proj=3), True),
    (torch.float64, dict(packed=True, bias=False, proj=2), False),
    (torch.float64, dict(B=1, T=1, I=1, H=1), True),
    (torch.float32, dict(packed=True, proj=3), False),
    (torch.float32, dict(packed=True, bias=False), True),
    (torch.bfloat16, dict(proj=2), False),
    (torch.bfloat16, dict(packed=True), True),
    (torch.float16, dict(), True),
    (torch.float16, dict(packed=True, proj=3, bias=False), False),
]


def _case_id(case):
    dtype, cfg, reverse = case
    parts = [str(dtype).replace("torch.", "")]
    parts += [f"{k}={v}" for k, v in cfg.items()] or ["dense"]
    parts.append("rev" if reverse else "fwd")
    return "-".join(parts)


@pytest.mark.parametrize("case", OPCHECK_CASES, ids=[_case_id(c) for c in OPCHECK_CASES])
def test_opcheck_both_ops(case):
    dtype, cfg, reverse = case
    torch.manual_seed(0)
    args = layer_args(dtype=dtype, reverse=reverse, **cfg)
    torch.library.opcheck(OPS.lstm_layer_forward, (*args, True))
    args = layer_args(dtype=dtype, requires_grad=False, reverse=reverse, **cfg)
    y, h_n, c_n, saved = OPS.lstm_layer_forward(*args, True)
    grads = [torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n)]
    torch.library.opcheck(OPS.lstm_layer_backward, (*grads, *args, y, saved))
