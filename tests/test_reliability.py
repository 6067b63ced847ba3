"""Reliability of FusedLSTM: determinism, long sequences, memory, threads, fallback.

* the same call twice gives bitwise-equal outputs and gradients, dropout included
  under the same seed (where it also matches nn.LSTM's mask on the CPU);
* T=20,000 forward and backward match nn.LSTM; T=70,000 (beyond cuDNN's 65,535)
  runs on the CPU; memory saved for backward is linear in T; an op call with more
  than 2^31 gate elements (64-bit index math) runs where memory allows;
* hundreds of training calls do not grow the process's memory, and four Python
  threads running one module concurrently get the single-thread answers bitwise;
* without a loadable compiled extension (missing, or built against another torch)
  importing fused_lstm warns once how to rebuild, and FusedLSTM still gives
  nn.LSTM's results through the plain-PyTorch reference.
"""

import contextlib
import gc
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from fused_lstm import FusedLSTM
from helpers import rel_err

REPO = Path(__file__).resolve().parent.parent


def pair(cfg, dtype=torch.float32, device="cpu", seed=0):
    """nn.LSTM (CPU) and FusedLSTM (on device) holding the same fresh random weights."""
    torch.manual_seed(seed)
    ref = nn.LSTM(dtype=dtype, **cfg)
    fused = FusedLSTM(dtype=dtype, **cfg)
    fused.load_state_dict(ref.state_dict(), strict=True)
    return ref, fused.to(device)


@contextlib.contextmanager
def intra_op_threads(n):
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def flat(out):
    y, (h, c) = out
    return [y.data if isinstance(y, PackedSequence) else y, h, c]


def outputs_and_grads(module, x, hx, pack=None, seed=0):
    """Outputs and the gradients of a random linear loss w.r.t. x, hx and parameters."""
    out = flat(module(pack(x) if pack else x, hx))
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device)).sum()
               for o in out)
    grads = torch.autograd.grad(loss, [x, *hx] + list(module.parameters()))
    return [o.detach() for o in out] + list(grads)


# ---------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_same_call_twice_is_bitwise_equal(packed, device):
    # B * H = 8192 cells per step: large enough for the multi-threaded step kernels
    cfg = dict(input_size=16, hidden_size=128, num_layers=2, bidirectional=True, proj_size=32)
    T, B = 6, 64
    _, fused = pair(cfg, device=device)
    x = torch.randn(T, B, 16, device=device, requires_grad=True)
    hx = (torch.randn(4, B, 32, device=device, requires_grad=True),
          torch.randn(4, B, 128, device=device, requires_grad=True))
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T

    def pack(t):
        return pack_padded_sequence(t, lengths, enforce_sorted=False)

    first = outputs_and_grads(fused, x, hx, pack if packed else None)
    second = outputs_and_grads(fused, x, hx, pack if packed else None)
    for k, (a, b) in enumerate(zip(first, second)):
        assert torch.equal(a, b), f"result {k} differs between two identical calls"


def test_dropout_under_the_same_seed_is_bitwise_equal(device):
    cfg = dict(input_size=5, hidden_size=8, num_layers=3, bidirectional=True, dropout=0.4)
    ref, fused = pair(cfg, torch.float64, device)
    x = torch.randn(7, 4, 5, dtype=torch.float64, device=device, requires_grad=True)
    hx = (torch.randn(6, 4, 8, dtype=torch.float64, device=device, requires_grad=True),
          torch.randn(6, 4, 8, dtype=torch.float64, device=device, requires_grad=True))

    def seeded(seed, module=fused, x=x, hx=hx):
        torch.manual_seed(seed)
        return outputs_and_grads(module, x, hx)

    first, second = seeded(11), seeded(11)
    for k, (a, b) in enumerate(zip(first, second)):
        assert torch.equal(a, b), f"result {k} differs between two calls under the same seed"
    assert not torch.equal(seeded(12)[0], first[0]), "dropout ignored the seed"
    fused.eval()
    with torch.no_grad():
        assert not torch.equal(fused(x, hx)[0], first[0]), "no dropout in training mode"
    if device == "cpu":  # and it is nn.LSTM's mask
        want = seeded(11, ref, x.detach().cpu().requires_grad_(True),
                      tuple(t.detach().cpu().requires_grad_(True) for t in hx))
        for k, (a, b) in enumerate(zip(first, want)):
            assert rel_err(a, b) <= 1e-9, f"result {k} differs from nn.LSTM's with dropout"


# ---------------------------------------------------------------------------
# long sequences
# ---------------------------------------------------------------------------

def close_rel(name, got, want, tol):
    err = rel_err(got.detach().cpu(), want.detach().cpu())
    assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g}"


def test_20000_steps_match_nn_lstm(device):
    T, B, I, H = 20_000, 2, 3, 4
    ref, fused = pair(dict(input_size=I, hidden_size=H), torch.float32, device, seed=4)
    x = torch.randn(T, B, I, requires_grad=True)
    hx = (torch.randn(1, B, H, requires_grad=True), torch.randn(1, B, H, requires_grad=True))
    xd = x.detach().to(device).requires_grad_(True)
    hxd = tuple(t.detach().to(device).requires_grad_(True) for t in hx)
    with intra_op_threads(1):  # tiny per-step work: threads only add overhead
        got = outputs_and_grads(fused, xd, hxd, seed=5)
        want = outputs_and_grads(ref, x, hx, seed=5)
    names = ["output", "h_n", "c_n", "grad of input", "grad of h0", "grad of c0"] + \
        [f"grad of {n}" for n, _ in fused.named_parameters()]
    steps = torch.cat([torch.arange(0, 10), torch.arange(T // 2, T // 2 + 10),
                       torch.arange(T - 10, T)])
    for k, (name, a, b) in enumerate(zip(names, got, want)):
        if name in ("output", "grad of input"):
            a, b = a.cpu()[steps], b[steps]
        close_rel(name, a, b, 1e-4)


def saved_bytes(module, x):
    """Bytes of the distinct storages autograd saves for backward of module(x)."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, (h, c) = module(x)
    (y.sum() + h.sum() + c.sum()).backward()
    return sum(storages.values())


def test_memory_saved_for_backward_is_linear_in_length():
    _, fused = pair(dict(input_size=8, hidden_size=16, num_layers=2, bidirectional=True,
                         dropout=0.2))
    T, B = 1000, 4
    one = saved_bytes(fused, torch.randn(T, B, 8, requires_grad=True))
    two = saved_bytes(fused, torch.randn(2 * T, B, 8, requires_grad=True))
    assert one > T * B * 16 * 4, "expected the gates and cells of every step to be saved"
    assert 1.6 <= two / one <= 2.4, f"saved {one} bytes for T={T}, {two} for T={2 * T}"


def test_70000_steps_on_the_cpu():
    """Beyond cuDNN's 65,535 steps, forward and backward, checked against nn.LSTM by pieces."""
    T, K, I, H = 70_000, 50, 2, 2
    ref, fused = pair(dict(input_size=I, hidden_size=H), seed=6)
    x = torch.randn(T, 1, I, requires_grad=True)
    g = torch.randn(T, 1, H)
    with intra_op_threads(1):
        y, (h_n, c_n) = fused(x)
        (y * g).sum().backward()
        # the first K steps are nn.LSTM's first K steps
        close_rel("first outputs", y[:K], ref(x[:K].detach())[0], 1e-5)
        # the last K steps are nn.LSTM's, started from FusedLSTM's state at T - K
        with torch.no_grad():
            _, state = fused(x[:T - K].detach())
        x_tail = x[T - K:].detach().requires_grad_(True)
        y_tail, (h_tail, c_tail) = ref(x_tail, state)
        (y_tail * g[T - K:]).sum().backward()
    close_rel("last outputs", y[T - K:], y_tail, 1e-5)
    close_rel("h_n", h_n, h_tail, 1e-5)
    close_rel("c_n", c_n, c_tail, 1e-5)
    # the input gradient of the last K steps depends on those steps only
    close_rel("grad of the last inputs", x.grad[T - K:], x_tail.grad, 1e-5)
    assert torch.isfinite(x.grad).all() and x.grad[:K].abs().max() > 0
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().max() > 0
               for p in fused.parameters())


def memory_allowed_bytes(device):
    """What a test may allocate: FUSED_LSTM_TEST_MAX_GB (default 2), within what is free."""
    allowed = float(os.environ.get("FUSED_LSTM_TEST_MAX_GB", "2")) * 2 ** 30
    if device == "cuda":
        free = torch.cuda.mem_get_info()[0]
    else:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        free = int(info["MemAvailable"].split()[0]) * 1024
    return min(allowed, 0.8 * free)


def test_64_bit_index_math(device):
    """More than 2^31 gate elements in one op call: the last rows must still be right."""
    T, H, I = 8, 1, 1
    B = 2 ** 31 // (T * 4 * H) + 8  # N * 4H = T * B * 4H > 2^31
    need = 4 * (T * B * (I + 4 * H + H) + 4 * B * H) * 1.1  # x, gates, y, h0/c0/h/c
    allowed = memory_allowed_bytes(device)
    if need > allowed:
        pytest.skip(f"needs ~{need / 2 ** 30:.0f} GiB for {T * B * 4 * H} gate elements; "
                    f"{allowed / 2 ** 30:.1f} GiB allowed (raise FUSED_LSTM_TEST_MAX_GB, "
                    "within free memory, to run it)")
    ref, fused = pair(dict(input_size=I, hidden_size=H), seed=8)
    fused.to(device)
    last = 8
    x_tail = torch.randn(T, last, I)
    with torch.no_grad():
        x = torch.empty(T, B, I, device=device).normal_()
        x[:, -last:] = x_tail.to(device)
        y, (h_n, c_n) = fused(x)
        del x
        y_tail = y[:, -last:].cpu()
        del y
        want, (h_want, c_want) = ref(x_tail)
    close_rel("output of the last rows", y_tail, want, 1e-5)
    close_rel("h_n of the last rows", h_n[:, -last:], h_want, 1e-5)
    close_rel("c_n of the last rows", c_n[:, -last:], c_want, 1e-5)


# ---------------------------------------------------------------------------
# memory and threads
# ---------------------------------------------------------------------------

def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_training_calls_do_not_grow_memory():
    # the gates and cells saved per call (~200 KB) would add 60 MB if kept
    _, fused = pair(dict(input_size=16, hidden_size=32, num_layers=2, proj_size=8,
                         dropout=0.1, bidirectional=True))
    xs = [torch.randn(50, 8, 16) for _ in range(4)]
    opt = torch.optim.SGD(fused.parameters(), lr=1e-3)

    def step(k):
        x = xs[k % 4].requires_grad_(k % 2 == 0)
        y, (h, c) = fused(x)
        loss = y.square().mean() + h.sum() + c.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    with intra_op_threads(1):  # small calls: threads only add overhead
        for k in range(50):  # warm-up: allocator caches, lazy initialisation
            step(k)
        gc.collect()
        before = rss_bytes()
        for k in range(300):
            step(k)
        gc.collect()
        growth = rss_bytes() - before
    assert growth < 20 * 2 ** 20, f"memory grew by {growth / 2 ** 20:.1f} MB over 300 calls"


def test_concurrent_inference_from_four_threads(device):
    cfg = dict(input_size=16, hidden_size=128, num_layers=2, bidirectional=True, proj_size=32)
    _, fused = pair(cfg, device=device)
    fused.eval()
    # each thread its own input; thread 0's is large enough for the multi-threaded kernels
    shapes = [(5, 64, 16), (9, 3, 16), (1, 17, 16), (12, 1, 16)]
    inputs = [torch.randn(s, device=device) for s in shapes]
    lengths = torch.tensor([9, 7, 7, 2])
    inputs[1] = pack_padded_sequence(inputs[1], lengths[:3], enforce_sorted=False)
    with torch.no_grad():
        want = [flat(fused(x)) for x in inputs]
    errors = []
    start = threading.Barrier(4)

    def worker(k):
        try:
            start.wait()
            for _ in range(15):
                with torch.no_grad():
                    got = flat(fused(inputs[k]))
                for name, a, b in zip(("output", "h_n", "c_n"), got, want[k]):
                    if not torch.equal(a, b):
                        errors.append(f"thread {k}: {name} differs from the single-thread run")
                        return
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"thread {k}: {e!r}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors


# ---------------------------------------------------------------------------
# no compiled extension: one warning, and the reference gives nn.LSTM's results
# ---------------------------------------------------------------------------

FALLBACK_SCRIPT = r"""
import importlib.abc, importlib.machinery, json, sys, warnings
import torch
from torch import nn

class BrokenExtension(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # fused_lstm._C found but failing to load, as a build for another torch does
    def __init__(self, error):
        self.error = error
    def find_spec(self, name, path, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name == "fused_lstm._C" else None
    def create_module(self, spec):
        raise self.error
    def exec_module(self, module):
        pass

SIMULATIONS = {
    "missing": None,  # not built: the import finds nothing
    "other-torch": ImportError("fused_lstm/_C.so: undefined symbol: "
                               "_ZN3c1017RegisterOperatorsD1Ev"),
    "unloadable": OSError("libc10.so: cannot open shared object file: No such file"),
}

results = {}
for name, error in SIMULATIONS.items():
    for mod in [m for m in sys.modules if m == "fused_lstm" or m.startswith("fused_lstm.")]:
        del sys.modules[mod]
    finder = None
    if error is None:
        sys.modules["fused_lstm._C"] = None
    else:
        finder = BrokenExtension(error)
        sys.meta_path.insert(0, finder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fused_lstm
        from fused_lstm import FusedLSTM
        torch.manual_seed(0)
        cfg = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2,
                   batch_first=True, dtype=torch.float64)
        ref, fused = nn.LSTM(**cfg), FusedLSTM(**cfg)
        fused.load_state_dict(ref.state_dict())
        x = torch.randn(4, 6, 3, dtype=torch.float64, requires_grad=True)
        errs = []
        outs = []
        for m in (ref, fused):
            y, (h, c) = m(x)
            loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view(y.shape)).sum() \
                + h.sum() - c.sum()
            grads = torch.autograd.grad(loss, [x] + list(m.parameters()))
            outs.append([y, h, c, *grads])
        for a, b in zip(*outs):
            errs.append(((a - b).abs().max() / b.abs().max()).item())
    runtime_warnings = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    results[name] = dict(loaded=fused_lstm.extension_loaded(),
                         cuda=fused_lstm.cuda_available(),
                         warnings=runtime_warnings, max_rel_err=max(errs), n_compared=len(errs))
    if finder is not None:
        sys.meta_path.remove(finder)
    sys.modules.pop("fused_lstm._C", None)
print("RESULT " + json.dumps(results))
"""


def test_without_the_compiled_extension_warns_once_and_falls_back():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    results = json.loads(line[len("RESULT "):])
    assert set(results) == {"missing", "other-torch", "unloadable"}
    for name, r in results.items():
        assert r["loaded"] is False and r["cuda"] is False, name
        assert len(r["warnings"]) == 1, f"{name}: {r['warnings']}"
        message = r["warnings"][0]
        assert "pip install --no-build-isolation" in message, f"{name}: {message}"
        assert "fused_lstm._C" in message, f"{name}: {message}"
        if name == "other-torch":
            assert "undefined symbol" in message, message
        assert r["n_compared"] == 3 + 1 + 20, name
        assert r["max_rel_err"] <= 1e-9, f"{name}: fallback differs from nn.LSTM"


@pytest.mark.parametrize("config", ["float64", "digits-rows"])
def test_training_step_memory_not_above_nn_lstm(config):
    """Peak tensor memory of one training step (bench's measure, deterministic):
    FusedLSTM's saved buffers and backward workspaces stay under nn.LSTM's.
    Gradients of the saved gates/cells outputs must not be materialised as
    zeros (that alone put float64 at 23 MiB against nn.LSTM's 19)."""
    from fused_lstm import bench

    case = bench.build(bench.CONFIGS[config], "cpu")
    peaks = {}
    for impl in bench.IMPLS:
        step = bench.make_step(case, impl, "training")
        step()
        peaks[impl] = bench.peak_step_memory(step, "cpu")
    ref_impl, fused_impl = bench.IMPLS
    assert 0 < peaks[fused_impl] <= peaks[ref_impl], peaks
