"""The CPU kernels' threaded routes, each at sizes that take it, against nn.LSTM and float64.

The CPU kernels choose how to share a call between threads by its size (batch rows
split, hidden units split, a loop thread and a gradient thread, whole-block GEMMs after
the loop: csrc/cpu/cpu_plan.cpp) and by its dtype, so a mistake on one route shows only
at sizes and dtypes that take it. The small grids of test_parity.py run on one thread.
Here:
- each forward split and each backward route at hand-picked sizes, against nn.LSTM
  and the float64 reference, with bitwise repeatability on the backward routes;
- forty configurations drawn from a fixed seed at those sizes (batch 16 and up for the
  row split, hidden sizes up to 256, inputs up to 300 wide) in float32, float64 and
  bfloat16, every output and gradient against nn.LSTM run in float64 on the same
  weights and inputs.
All with two threads or more.
"""


import random

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
from fused_lstm import FusedLSTM
from helpers import assert_same_run, at_least_two_threads, make_pair, rel_err

# ---------------------------------------------------------------------------
# each route at hand-picked sizes
# ---------------------------------------------------------------------------

# (hidden size, projection size) for each way a step is split over threads
SPLITS = {"rows": (70, 60), "units": (260, 200)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("case", ["dense", "packed", "proj", "packed-proj", "unbatched"])
def test_threaded_kernels_with_several_gate_chunks(dtype, split, case):
    """Sizes where the CPU kernels split each step over threads.

    A step is split once it has enough work (B x 4H x Hout >= 512K
    multiply-adds: 32 rows here). With w_hh^T up to 512 KiB and 8 rows or more
    per thread each thread takes its own batch rows for the whole loop
    (H = 70); with a larger w_hh the threads share out the hidden units in
    chunks of 32, with a narrower last chunk (H = 260: 8 x 32 + 4), and meet
    at a barrier every step. The small grids of test_parity.py run on one thread, so this
    covers both splits, packed batches shrinking within one thread's rows, the
    chunked gate layout and the projection's column split.
    """
    H, P = SPLITS[split]
    with at_least_two_threads():
        proj = P if "proj" in case else 0
        # one direction: a bidirectional layer in training runs each direction
        # single-threaded on a core of its own
        ref, fused = make_pair(dtype, seed=4, input_size=9, hidden_size=H, num_layers=2,
                               proj_size=proj)
        with torch.no_grad():
            # At these sizes make_pair's wide weights make the float32 problem
            # itself ill-conditioned (nn.LSTM's own float32 error reaches 3e-4
            # against float64 at H = 70); scale them to about the default
            # init's range.
            for p in ref.parameters():
                p.mul_(0.25 * (70 / H) ** 0.5)
        fused.load_state_dict(ref.state_dict())
        if "packed" in case:
            lengths = torch.randint(1, 10, (32,))
            lengths[3] = 9
            padded = torch.randn(32, 9, 9, dtype=dtype)
            x = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
            x.data.requires_grad_(True)
            hx = None
        elif case == "unbatched":
            x = torch.randn(9, 9, dtype=dtype, requires_grad=True)
            hx = None
        else:
            x = torch.randn(9, 32, 9, dtype=dtype, requires_grad=True)
            hx = (torch.randn(2, 32, proj or H, dtype=dtype, requires_grad=True),
                  torch.randn(2, 32, H, dtype=dtype, requires_grad=True))
        assert_same_run(ref, fused, x, hx)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_threaded_forward_at_batch_one(dtype):
    """One row per step: the forward loop splits a step over threads from 64K
    multiply-adds (H = 128), the backward loop keeps it on one thread."""
    with at_least_two_threads():
        ref, fused = make_pair(dtype, seed=6, input_size=9, hidden_size=128)
        with torch.no_grad():
            for p in ref.parameters():
                p.mul_(0.2)
        fused.load_state_dict(ref.state_dict())
        x = torch.randn(30, 9, dtype=dtype, requires_grad=True)
        assert_same_run(ref, fused, x)


# (T, B, H, projection size) that put the backward on each of its threaded
# routes, across several of its blocks (about 512 rows each):
# - "rows": B x 4H x H >= 512K multiply-adds per step, so the batch rows are
#   split and each thread turns its own d(gates) into gradients, about 256 rows
#   per thread at a time (40 steps of 16 rows per thread: three blocks);
# - "overlapped": a step far below that runs on one thread while another turns
#   each finished chunk of steps into gradients (1,200 rows: three blocks); the
#   last chunk of each block is shared by both threads, split by rows of grad_x
#   and, with 4H >= 128, by weight-gradient columns.
# (T, B, H, Hout with a projection), float64, I = 9, two threads:
# - "rows": route 1, the batch rows split with each thread's own gradients;
# - "rows-then-blocks": route 3 with the loop on split rows (its own gradients
#   would pass 512 KiB: (I + Hout) x 4H float64 values), the GEMMs after it;
# - "overlapped": route 2, the loop on one thread and the gradients on another.
BACKWARD_ROUTES = {"rows": (40, 32, 70, 60), "rows-then-blocks": (80, 16, 128, 120),
                   "overlapped": (400, 3, 32, 12)}


def route_args(route, case, gen, dtype=torch.float64):
    """lstm_layer's arguments for a BACKWARD_ROUTES shape (I = 9, one direction; all but
    reverse), drawn from gen, and the tensors among them that take gradients."""
    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, dtype=dtype)).requires_grad_()

    T, B, H, P = BACKWARD_ROUTES[route]
    I = 9
    Hout = P if "proj" in case else H
    batch_sizes = None
    N = T * B
    if "packed" in case:
        lengths = torch.randint(1, T + 1, (B,), generator=gen)
        lengths[0] = T
        batch_sizes = torch.tensor([int((lengths > t).sum()) for t in range(T)])
        N = int(batch_sizes.sum())
    x = randn(N, I) if batch_sizes is not None else randn(T, B, I)
    w = 0.15
    weights = [randn(4 * H, I, scale=w), randn(4 * H, Hout, scale=w), randn(4 * H, scale=w),
               randn(4 * H, scale=w)] + ([randn(Hout, H, scale=w)] if Hout != H else [])
    args = [x, batch_sizes, randn(1, B, Hout), randn(1, B, H), weights, True, Hout != H, False]
    return args, [x, args[2], args[3], *weights]


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", ["dense", "packed", "proj", "packed-proj"])
@pytest.mark.parametrize("route", list(BACKWARD_ROUTES))
def test_threaded_backward_routes_over_several_blocks(route, case, reverse):
    """The op's gradients on each threaded backward route against the float64
    reference. A bidirectional model runs each direction on one thread in
    training, so the reverse direction is reached here through the op itself.
    """
    from fused_lstm.ops import lstm_layer
    from fused_lstm.reference import lstm_layers_reference

    with at_least_two_threads():
        gen = torch.Generator().manual_seed(11)
        args, tensors = route_args(route, case, gen)
        got = lstm_layer(*args, reverse)
        want = lstm_layers_reference(*args, reverse)
        grad_outs = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in want]
        got_grads = torch.autograd.grad(got, tensors, grad_outs)
        want_grads = torch.autograd.grad(want, tensors, grad_outs)
        for g, r in zip([*got, *got_grads], [*want, *want_grads]):
            assert rel_err(g, r) <= 1e-10


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("route", list(BACKWARD_ROUTES))
def test_threaded_backward_routes_are_bitwise_repeatable(route, dtype):
    """Eight identical calls give bitwise-equal gradients on each threaded route:
    how far one thread has got when another starts its share must not change the
    order of any sum."""
    from fused_lstm.ops import lstm_layer

    with at_least_two_threads():
        gen = torch.Generator().manual_seed(12)
        args, tensors = route_args(route, "dense", gen, dtype)
        out = lstm_layer(*args, False)
        grad_outs = [torch.randn(o.shape, generator=gen, dtype=dtype) for o in out]
        first = torch.autograd.grad(out, tensors, grad_outs)
        for call in range(7):
            again = torch.autograd.grad(lstm_layer(*args, False), tensors, grad_outs)
            for k, (a, b) in enumerate(zip(first, again)):
                assert torch.equal(a, b), f"gradient {k} differs on call {call + 2}"


# ---------------------------------------------------------------------------
# forty configurations drawn at the threaded sizes
# ---------------------------------------------------------------------------

# Relative to the largest magnitude of each result: float32 and float64 a few hundred
# roundings over the sequence; bfloat16 about nn.LSTM's own bfloat16 error against float64.
TOL = {torch.float32: 1e-4, torch.float64: 1e-9, torch.bfloat16: 6e-2}


def draw_cases(n, seed=20261126):
    rng = random.Random(seed)
    cases = []
    while len(cases) < n:
        case = dict(
            dtype=rng.choice([torch.float32, torch.float64, torch.bfloat16]),
            T=rng.choice([1, 2, 7, 20]),
            B=rng.choice([1, 3, 16, 17, 32, 33, 64]),
            I=rng.choice([9, 64, 128, 256, 300]),
            H=rng.choice([40, 64, 96, 128, 160, 256]),
            num_layers=rng.choice([1, 1, 2]),
            bidirectional=rng.random() < 0.25,
            packed=rng.random() < 0.25,
            seed=rng.randrange(2**31),
        )
        case["proj_size"] = rng.choice([0, 0, 0, case["H"] // 2])
        if case["T"] * case["B"] * case["H"] * max(case["I"], case["H"]) <= 4e7:
            cases.append(case)
    return cases


CASES = draw_cases(40)


def case_id(c):
    return (f"{str(c['dtype']).split('.')[-1]}-T{c['T']}-B{c['B']}-I{c['I']}-H{c['H']}"
            f"-L{c['num_layers']}{'-bi' if c['bidirectional'] else ''}"
            f"{'-proj' if c['proj_size'] else ''}{'-packed' if c['packed'] else ''}")


@pytest.mark.skipif(not fused_lstm.extension_loaded(), reason="needs the compiled CPU kernels")
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_drawn_configurations_match_float64_nn_lstm(case):
    dtype, T, B = case["dtype"], case["T"], case["B"]
    gen = torch.Generator().manual_seed(case["seed"])
    ref = torch.nn.LSTM(case["I"], case["H"], case["num_layers"], proj_size=case["proj_size"],
                        bidirectional=case["bidirectional"]).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.empty_like(p).uniform_(-0.3, 0.3, generator=gen))
    fused = FusedLSTM.from_lstm(ref).to(dtype)
    x = torch.randn(T, B, case["I"], generator=gen, dtype=torch.float64)
    lengths = None
    if case["packed"]:
        lengths = torch.randint(1, T + 1, (B,), generator=gen)
        lengths[0] = T

    def run(module, dt):
        xx = x.to(dt).requires_grad_()
        inp = pack_padded_sequence(xx, lengths, enforce_sorted=False) if case["packed"] else xx
        out, (h, c) = module(inp)
        y = out.data if case["packed"] else out
        g = torch.Generator().manual_seed(1)
        grad_outs = [torch.randn(t.shape, generator=g, dtype=torch.float64).to(dt)
                     for t in (y, h, c)]
        grads = torch.autograd.grad((y, h, c), [xx, *module.parameters()], grad_outs)
        return [y, h, c, *grads]

    with at_least_two_threads():
        got = run(fused, dtype)
    want = run(ref, torch.float64)
    names = ["output", "h_n", "c_n", "input"] + [n for n, _ in ref.named_parameters()]
    for name, a, b in zip(names, got, want):
        err = rel_err(a.double(), b)
        assert err <= TOL[dtype], f"{name}: relative error {err:.3g} > {TOL[dtype]:g}"
