"""What exists on CUDA alone: wide layers against cuDNN, float16 and bfloat16 against
float64 next to cuDNN's own error, float16 opcheck, saved-buffer dtypes, determinism,
streams, devices, and the device checks of the ops.

The tests that run on every device take conftest.py's `device`/`routed_device`
fixtures in the other files (parity grid: test_parity.py; gradcheck and opcheck of
the ops: test_ops.py; module gradcheck: test_module.py; edges, fuzzing, reliability).
The time loops have two routes (our fused step kernels, or a cuBLAS GEMM per
step); the tests here that compare numbers run each one, forced through
FUSED_LSTM_CUDA_STEP.

Skipped as a whole without a visible GPU or without the CUDA kernels in the build.
"""

import copy

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device available", allow_module_level=True)

fused_lstm = pytest.importorskip("fused_lstm")
if not getattr(fused_lstm, "cuda_available", lambda: False)():
    pytest.skip("fused_lstm was built without its CUDA kernels", allow_module_level=True)

from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import helpers  # noqa: E402
from helpers import (  # noqa: E402
    CUDA_F32_TOL, assert_matches_cudnn, flat_outputs, make_pair, rel_err)

DEVICE = "cuda"
OPS = torch.ops.fused_lstm


@pytest.fixture(autouse=True)
def exact_float32_matmul():
    """Full float32 GEMMs on both sides (no TF32), restored afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def state(layers, directions, batch, size, dtype=torch.float32, requires_grad=True):
    return torch.randn(layers * directions, batch, size, device=DEVICE, dtype=dtype,
                       requires_grad=requires_grad)


# ---------------------------------------------------------------------------
# float32 parity with cuDNN at sizes only the CUDA kernels block differently
# (the grid, unbatched and packed parity runs on every device: test_parity.py)
# ---------------------------------------------------------------------------


@pytest.mark.usefixtures("cuda_route")
@pytest.mark.parametrize("proj", [0, 40])
def test_parity_with_cudnn_wide_layers(proj):
    # More than one block along the hidden columns (H > 256) and along the rows.
    T, B, I, H = 9, 37, 50, 300
    ref, fused = make_pair(torch.float32, device=DEVICE, input_size=I, hidden_size=H,
                           num_layers=2, bidirectional=True, proj_size=proj)
    with torch.no_grad():  # keep pre-activations O(1) at this width
        for p in list(ref.parameters()) + list(fused.parameters()):
            p.mul_(0.1)
    x = torch.randn(T, B, I, device=DEVICE, requires_grad=True)
    hx = (state(2, 2, B, proj or H), state(2, 2, B, H))
    assert_matches_cudnn(ref, fused, x, hx)


# ---------------------------------------------------------------------------
# float16 / bfloat16: error against float64 no worse than twice that of nn.LSTM
# on CUDA at the same dtype (cuDNN, or ATen's own kernels where cuDNN is not used)
# ---------------------------------------------------------------------------

REDUCED_CASES = [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=2, proj_size=8, bias=False),
    dict(num_layers=2, bidirectional=True, batch_first=True, packed=True),
]
REDUCED_IDS = ["1layer", "2layers-bidir", "proj-nobias", "packed-bidir"]


def run_with_grads(module, x, hx, lengths, grad_outs, batch_first):
    """Outputs and gradients (input, h0, c0, every parameter) of one module, by name."""
    x = x.detach().requires_grad_(True)
    h0, c0 = (t.detach().requires_grad_(True) for t in hx)
    inp = x
    if lengths is not None:
        inp = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    outs = flat_outputs(module(inp, (h0, c0)))
    names, params = zip(*module.named_parameters())
    grads = torch.autograd.grad(outs, [x, h0, c0, *params],
                                [g.to(o.device, o.dtype) for o, g in zip(outs, grad_outs)])
    result = dict(zip(["output", "h_n", "c_n"], outs))
    result.update(zip(["grad input", "grad h0", "grad c0"] + [f"grad {n}" for n in names],
                      grads))
    return result


@pytest.mark.usefixtures("cuda_route")
@pytest.mark.parametrize("case", REDUCED_CASES, ids=REDUCED_IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("gemm_16bit", [False, True], ids=["float32-gemms", "16bit-gemms"])
def test_reduced_precision_error_at_most_twice_nn_lstm(monkeypatch, gemm_16bit, dtype, case):
    """16-bit layers against float64, FusedLSTM's error at most twice cuDNN's: with float32
    GEMMs (the default), and with FUSED_LSTM_CUDA_16BIT_GEMM=1 (16-bit operands on tensor
    cores: the input projection, and on the gemm route the recurrent product of h rounded to
    16 bits, as cuDNN does; not yet run on a GPU)."""
    if gemm_16bit:
        monkeypatch.setenv("FUSED_LSTM_CUDA_16BIT_GEMM", "1")
    torch.manual_seed(0)
    cfg = dict(case)
    packed = cfg.pop("packed", False)
    T, B, I, H = 12, 6, 16, 32
    cfg.update(input_size=I, hidden_size=H)
    cudnn, fused = make_pair(dtype, device=DEVICE, **cfg)  # nn.LSTM on CUDA, FusedLSTM
    # The float64 reference holds exactly the (already rounded) low-precision weights.
    ref = nn.LSTM(dtype=torch.float64, **cfg)
    ref.load_state_dict({k: v.to("cpu", torch.float64) for k, v in cudnn.state_dict().items()})

    batch_first = cfg.get("batch_first", False)
    D = 2 if cfg.get("bidirectional", False) else 1
    L, Hout = cfg["num_layers"], cfg.get("proj_size", 0) or H
    x = torch.randn((B, T, I) if batch_first else (T, B, I), device=DEVICE).to(dtype)
    hx = (torch.randn(L * D, B, Hout, device=DEVICE).to(dtype),
          torch.randn(L * D, B, H, device=DEVICE).to(dtype))
    lengths = torch.tensor([12, 5, 9, 1, 12, 7]) if packed else None

    with torch.no_grad():
        probe = flat_outputs(fused(
            pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
            if packed else x, hx))
    grad_outs = [torch.randn(o.shape, device=DEVICE).to(dtype) for o in probe]

    want = run_with_grads(ref, x.double().cpu(), [t.double().cpu() for t in hx], lengths,
                          grad_outs, batch_first)
    got_cudnn = run_with_grads(cudnn, x, hx, lengths, grad_outs, batch_first)
    got_fused = run_with_grads(fused, x, hx, lengths, grad_outs, batch_first)
    floor = torch.finfo(dtype).eps
    for name, w in want.items():
        f, c = got_fused[name], got_cudnn[name]
        assert f.dtype == dtype and f.shape == c.shape, name
        err_f = rel_err(f.double().cpu(), w)
        err_c = rel_err(c.double().cpu(), w)
        assert err_f <= 2 * err_c + floor, (
            f"{name}: relative error {err_f:.3g} vs float64, nn.LSTM's is {err_c:.3g}")


def layer_args(**kwargs):
    """Random CUDA arguments of the layer op (helpers.layer_args; batch_sizes stays on the
    CPU), all but need_backward."""
    return helpers.layer_args(device=DEVICE, **kwargs)


def test_opcheck_forward_float16():
    """float16 is a CUDA dtype only (bfloat16 runs on every device: test_ops.py)."""
    torch.manual_seed(3)
    args = layer_args(dtype=torch.float16, requires_grad=False, proj=2)
    torch.library.opcheck(OPS.lstm_layer_forward, (*args, True))


def test_saved_buffers_shapes_and_dtypes():
    args = layer_args(dtype=torch.float16, requires_grad=False)
    y, h_n, c_n, (gates, cells) = OPS.lstm_layer_forward(*args, True)
    assert y.dtype == h_n.dtype == c_n.dtype == torch.float16
    assert gates.dtype == cells.dtype == torch.float32  # saved in float32 for 16-bit inputs
    assert gates.shape == (15, 20) and cells.shape == (15, 5)
    assert all(t.device == args[0].device for t in (y, h_n, c_n, gates, cells))
    _, _, _, (gates, cells) = OPS.lstm_layer_forward(*args, False)
    assert gates.numel() == 0 and cells.numel() == 0


# ---------------------------------------------------------------------------
# determinism, streams, devices
# ---------------------------------------------------------------------------

def run_once(module, x, hx, grad_outs):
    x = x.detach().requires_grad_(True)
    hx = tuple(t.detach().requires_grad_(True) for t in hx)
    outs = flat_outputs(module(x, hx))
    grads = torch.autograd.grad(outs, [x, *hx, *module.parameters()], grad_outs)
    return [o.detach() for o in outs] + list(grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_bitwise_deterministic(dtype, packed):
    torch.manual_seed(5)
    T, B, I, H = 10, 5, 8, 16
    _, fused = make_pair(dtype, device=DEVICE, input_size=I, hidden_size=H, num_layers=2,
                         bidirectional=True, proj_size=4)
    x = torch.randn(T, B, I, device=DEVICE).to(dtype)
    hx = (torch.randn(4, B, 4, device=DEVICE).to(dtype),
          torch.randn(4, B, H, device=DEVICE).to(dtype))
    lengths = torch.tensor([10, 3, 7, 10, 1])

    def once():
        xin = x.detach().requires_grad_(True)
        inp = pack_padded_sequence(xin, lengths, enforce_sorted=False) if packed else xin
        h0, c0 = (t.detach().requires_grad_(True) for t in hx)
        outs = flat_outputs(fused(inp, (h0, c0)))
        grad_outs = [torch.linspace(-1, 1, o.numel(), device=DEVICE).view_as(o).to(dtype)
                     for o in outs]
        grads = torch.autograd.grad(outs, [xin, h0, c0, *fused.parameters()], grad_outs)
        return [o.detach() for o in outs] + list(grads)

    first, second = once(), once()
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_runs_on_the_current_stream():
    torch.manual_seed(6)
    _, fused = make_pair(torch.float32, device=DEVICE, input_size=4, hidden_size=8, num_layers=2)
    x = torch.randn(6, 3, 4, device=DEVICE)
    hx = (state(2, 1, 3, 8, requires_grad=False), state(2, 1, 3, 8, requires_grad=False))
    grad_outs = [torch.randn(6, 3, 8, device=DEVICE), torch.randn(2, 3, 8, device=DEVICE),
                 torch.randn(2, 3, 8, device=DEVICE)]
    expected = run_once(fused, x, hx, grad_outs)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = run_once(fused, x, hx, grad_outs)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_runs_on_a_non_current_device():
    torch.manual_seed(7)
    ref, fused = make_pair(torch.float32, device="cuda:1", input_size=4, hidden_size=6,
                           bidirectional=True)
    with torch.cuda.device(0):
        x = torch.randn(5, 2, 4, device="cuda:1", requires_grad=True)
        assert_matches_cudnn(ref, fused, x)


def test_module_mixed_devices_raise_like_nn_lstm():
    ref, fused = make_pair(torch.float32, device=DEVICE, input_size=3, hidden_size=4)
    x_cpu = torch.randn(5, 2, 3)
    for m in (ref, fused):
        with pytest.raises(RuntimeError, match="device"):
            m(x_cpu)
    x = torch.randn(5, 2, 3, device=DEVICE)
    hx_cpu = (torch.randn(1, 2, 4), torch.randn(1, 2, 4))
    for m in (ref, fused):
        with pytest.raises(RuntimeError, match="device"):
            m(x, hx_cpu)


@pytest.mark.parametrize("which", [0, 2, 3, (4, 0), (4, 2)], ids=["x", "h0", "c0", "w_ih", "b_ih"])
def test_op_rejects_a_cpu_tensor_among_cuda_ones(which):
    torch.manual_seed(8)
    args = layer_args(dtype=torch.float32, requires_grad=False)
    if isinstance(which, tuple):  # a weight in the list
        args[4][which[1]] = args[4][which[1]].cpu()
    else:
        args[which] = args[which].cpu()
    with pytest.raises(RuntimeError, match=r"same CUDA device.*cpu"):
        OPS.lstm_layer_forward(*args, False)


def test_op_backward_rejects_a_cpu_gradient():
    torch.manual_seed(9)
    args = layer_args(dtype=torch.float32, requires_grad=False)
    y, h_n, c_n, saved = OPS.lstm_layer_forward(*args, True)
    grads = [torch.randn_like(y).cpu(), torch.randn_like(h_n), torch.randn_like(c_n)]
    with pytest.raises(RuntimeError, match=r"grad_y is on cpu"):
        OPS.lstm_layer_backward(*grads, *args, y, saved)


def test_packed_batch_sizes_must_stay_on_the_cpu():
    torch.manual_seed(10)
    args = layer_args(dtype=torch.float32, requires_grad=False, packed=True)
    args[1] = args[1].to(DEVICE)
    with pytest.raises(RuntimeError, match="batch_sizes"):
        OPS.lstm_layer_forward(*args, False)


# ---------------------------------------------------------------------------
# the persistent forward (FUSED_LSTM_CUDA_STEP=persistent: one launch per layer direction
# on sm_90 thread-block clusters; csrc/cuda/lstm_cuda_persistent.cu): never chosen by
# default, taken where forced for float32 dense layers without projection, B <= 16 and
# H <= 128 a multiple of 8 or H <= 256 a multiple of 16; elsewhere the default route runs
# ---------------------------------------------------------------------------

PERSISTENT_KERNEL = "persistent_forward_kernel"
# Where the kernel can run at all (clusters); on older GPUs the forced route falls back.
CLUSTERS = torch.cuda.get_device_capability()[0] >= 9


_PROFILER_SESSIONS = [0]


def cuda_kernels_of(fn):
    """Names of the CUDA kernels fn() launches, from torch.profiler (skips the test where
    the profiler records no kernels, e.g. without CUPTI).

    Each session starts with throwaway kernels, more than there have been sessions: CUPTI
    before CUDA 13.1 (torch 2.11+cu130 ships 13.0) gives the first kernel records of a
    session invalid timestamps once kineto re-registers its timestamp callback, one more
    record per session in the process, and kineto drops them as outside the profiling
    window (pytorch/pytorch#192021). Without the padding, later tests would miss a
    persistent kernel that ran."""
    from torch.profiler import ProfilerActivity, profile
    _PROFILER_SESSIONS[0] += 1
    pad = torch.zeros(1, device=DEVICE)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(64 + 2 * _PROFILER_SESSIONS[0]):
            pad.add_(1)
        torch.cuda.synchronize()
        result = fn()
        torch.cuda.synchronize()
    names = {e.name for e in prof.events()
             if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA}
    if not names:
        pytest.skip("torch.profiler recorded no CUDA kernels here")
    return result, names


def ran_persistent(fn):
    """(fn's result, whether it launched the persistent kernel)."""
    result, names = cuda_kernels_of(fn)
    return result, any(PERSISTENT_KERNEL in n for n in names)


def set_route(monkeypatch, route):
    """FUSED_LSTM_CUDA_STEP=route, or unset for route None (read by the C++ at every call)."""
    if route is None:
        monkeypatch.delenv("FUSED_LSTM_CUDA_STEP", raising=False)
    else:
        monkeypatch.setenv("FUSED_LSTM_CUDA_STEP", route)


def persistent_pair(B, H, T, I=16, bidirectional=False, batch_first=False, with_hx=True,
                    num_layers=1, seed=0, **cfg):
    """nn.LSTM and FusedLSTM on shared weights (scaled so the pre-activations stay O(1) at
    H = 256), an input and an initial state (None without hx)."""
    torch.manual_seed(seed)
    ref, fused = make_pair(torch.float32, device=DEVICE, input_size=I, hidden_size=H,
                           num_layers=num_layers, bidirectional=bidirectional,
                           batch_first=batch_first, **cfg)
    with torch.no_grad():
        for p in list(ref.parameters()) + list(fused.parameters()):
            p.mul_(min(1.0, 4.0 / H ** 0.5))
    x = torch.randn((B, T, I) if batch_first else (T, B, I), device=DEVICE, requires_grad=True)
    D = 2 if bidirectional else 1
    Hout = cfg.get("proj_size", 0) or H
    hx = None
    if with_hx:
        hx = (state(num_layers, D, B, Hout), state(num_layers, D, B, H))
    return ref, fused, x, hx


def call(module, x, hx):
    return module(x) if hx is None else module(x, hx)


def outputs_and_grads(module, x, hx, grad_outs=None):
    """Outputs (y, h_n, c_n) and, given grad_outs, the gradients of sum(out * grad_out)
    w.r.t. x, hx and every parameter (through the module's own backward)."""
    train = grad_outs is not None
    x = x.detach().requires_grad_(train)
    hx = None if hx is None else tuple(t.detach().requires_grad_(train) for t in hx)
    with torch.set_grad_enabled(train):
        outs = flat_outputs(call(module, x, hx))
    if not train:
        return outs
    wrt = [x, *(hx or ()), *module.parameters()]
    grads = torch.autograd.grad(outs, wrt, [g.to(o) for g, o in zip(grad_outs, outs)])
    return [o.detach() for o in outs] + list(grads)


PERSISTENT_SHAPES = [(B, H, T) for B in (1, 3, 16) for H in (32, 128, 256) for T in (1, 5, 300)]


@pytest.mark.parametrize("case", range(len(PERSISTENT_SHAPES)),
                         ids=[f"B{B}-H{H}-T{T}" for B, H, T in PERSISTENT_SHAPES])
def test_persistent_matches_nn_lstm(monkeypatch, case):
    """Outputs and every gradient (the default backward after the persistent forward)
    against cuDNN and float64, options cycled over the shapes: one or two directions,
    with or without hx, batch_first or not."""
    B, H, T = PERSISTENT_SHAPES[case]
    bidirectional, with_hx, batch_first = case % 2 == 1, case % 3 != 0, case % 4 >= 2
    ref, fused, x, hx = persistent_pair(B, H, T, bidirectional=bidirectional,
                                        batch_first=batch_first, with_hx=with_hx, seed=case)
    set_route(monkeypatch, "persistent")
    inference, ran = ran_persistent(lambda: outputs_and_grads(fused, x, hx))
    assert ran == CLUSTERS
    assert_matches_cudnn(ref, fused, x, hx)
    # The same kernel with and without saving for backward: the same outputs, bit for bit.
    training = outputs_and_grads(fused, x, hx, [torch.randn_like(t) for t in inference])
    for a, b in zip(inference, training[:3]):
        assert torch.equal(a, b)


def assert_persistent_matches_default(monkeypatch, ref, fused, x, hx, train=True):
    """The persistent route against the default one on the same module: outputs (and
    gradients when train) differ by at most 1e-5 relative to the largest value, or by
    twice the default route's own error against float64 where that is larger (two
    float32 results can differ by the sum of their errors)."""
    set_route(monkeypatch, None)
    probe = outputs_and_grads(fused, x, hx)
    grad_outs = [torch.randn_like(t) for t in probe] if train else None
    base = outputs_and_grads(fused, x, hx, grad_outs)
    set_route(monkeypatch, "persistent")
    _, ran = ran_persistent(lambda: outputs_and_grads(fused, x, hx))  # forward only: few events
    assert ran == CLUSTERS
    got = outputs_and_grads(fused, x, hx, grad_outs)
    ref64 = copy.deepcopy(ref).to("cpu", torch.float64)
    hx64 = None if hx is None else tuple(t.cpu().double() for t in hx)
    want = outputs_and_grads(ref64, x.cpu().double(), hx64,
                             None if grad_outs is None else [g.cpu().double() for g in grad_outs])
    for k, (g, b, w) in enumerate(zip(got, base, want)):
        assert g.shape == b.shape and g.dtype == b.dtype, k
        err_base = rel_err(b.cpu().double(), w)
        diff = rel_err(g, b)
        assert diff <= max(CUDA_F32_TOL, 2 * err_base), (
            f"tensor {k}: persistent vs default route {diff:.3g}, the default route's "
            f"error against float64 {err_base:.3g}")


@pytest.mark.parametrize("B,H,T,bidirectional,batch_first", [
    (16, 256, 300, True, False),
    (3, 128, 5, False, True),
    (1, 32, 1, True, True),
    (9, 64, 40, False, False),  # two clusters, the second with one row
    (4, 48, 17, True, False),   # a cluster of 6 CTAs
    (5, 144, 20, False, False),  # 16 units per CTA, 9 CTAs (non-portable)
    (2, 8, 3, False, False),     # a cluster of one CTA
    (3, 16, 4, True, False),     # a cluster of two CTAs
])
def test_persistent_matches_default_route(monkeypatch, B, H, T, bidirectional, batch_first):
    ref, fused, x, hx = persistent_pair(B, H, T, bidirectional=bidirectional,
                                        batch_first=batch_first, seed=B + H + T)
    assert_persistent_matches_default(monkeypatch, ref, fused, x, hx, train=True)
    assert_persistent_matches_default(monkeypatch, ref, fused, x, hx, train=False)


def test_persistent_two_layers_in_training(monkeypatch):
    """Layer 2 reads layer 1's y from the persistent kernel; both backward through it."""
    ref, fused, x, hx = persistent_pair(6, 64, 30, I=10, num_layers=2, bidirectional=True)
    set_route(monkeypatch, "persistent")
    assert_matches_cudnn(ref, fused, x, hx)


def test_persistent_long_sequence(monkeypatch):
    """70,000 steps, beyond cuDNN's 65,535 and the grid's 65,535 blocks: the loop runs
    inside the kernel. Forward and backward against the default route."""
    ref, fused, x, hx = persistent_pair(2, 32, 70_000, I=4)
    assert_persistent_matches_default(monkeypatch, ref, fused, x, hx, train=True)


def test_persistent_bitwise_repeatable(monkeypatch):
    ref, fused, x, hx = persistent_pair(16, 128, 50, bidirectional=True)
    set_route(monkeypatch, "persistent")
    grad_outs = [torch.randn_like(t) for t in outputs_and_grads(fused, x, hx)]
    for train in (False, True):
        first = outputs_and_grads(fused, x, hx, grad_outs if train else None)
        second = outputs_and_grads(fused, x, hx, grad_outs if train else None)
        for a, b in zip(first, second):
            assert torch.equal(a, b)


# Outside the persistent kernel's scope: each runs the default route, bit for bit.
FALLBACK_CASES = {
    "B17": dict(B=17, H=32),
    "H20": dict(B=3, H=20),      # not a multiple of 8
    "H136": dict(B=3, H=136),    # above 128, not a multiple of 16
    "H264": dict(B=3, H=264),    # above 256
    "proj": dict(B=3, H=32, proj_size=8),
    "packed": dict(B=3, H=32, packed=True),
    "float64": dict(B=3, H=32, dtype=torch.float64),
    "bfloat16": dict(B=3, H=32, dtype=torch.bfloat16),
}


@pytest.mark.parametrize("name", list(FALLBACK_CASES))
def test_persistent_falls_back_outside_its_scope(monkeypatch, name):
    cfg = dict(FALLBACK_CASES[name])
    B, H = cfg.pop("B"), cfg.pop("H")
    packed = cfg.pop("packed", False)
    dtype = cfg.pop("dtype", torch.float32)
    T = 7
    ref, fused, x, hx = persistent_pair(B, H, T, **cfg)
    ref, fused = ref.to(dtype), fused.to(dtype)
    x, hx = x.to(dtype), tuple(t.to(dtype) for t in hx)
    if packed:
        x = pack_padded_sequence(x, torch.tensor([7, 5, 2]), enforce_sorted=False)

    def run():
        with torch.no_grad():
            return flat_outputs(call(fused, x, hx))

    set_route(monkeypatch, None)
    want = run()
    set_route(monkeypatch, "persistent")
    got, ran = ran_persistent(run)
    assert not ran
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    if dtype == torch.float32:
        assert_matches_cudnn(ref, fused, x, hx)


@pytest.mark.parametrize("route", [None, "fused", "gemm"], ids=["default", "fused", "gemm"])
@pytest.mark.parametrize("B,H", [(16, 128), (1, 256), (3, 32)])
def test_chooser_never_picks_persistent(monkeypatch, route, B, H):
    _, fused, x, hx = persistent_pair(B, H, 20, bidirectional=True)
    set_route(monkeypatch, route)
    _, ran = ran_persistent(lambda: outputs_and_grads(fused, x, hx))
    assert not ran


def test_route_switch_names_persistent_in_its_error(monkeypatch):
    _, fused, x, hx = persistent_pair(3, 32, 4)
    set_route(monkeypatch, "persistant")
    with pytest.raises(RuntimeError, match="'fused', 'gemm' or 'persistent'"):
        outputs_and_grads(fused, x, hx)
