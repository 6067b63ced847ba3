"""Differential test of FusedLSTM against nn.LSTM at the sizes the threaded CPU routes take.

test_fuzz.py covers the whole configuration space at tiny sizes on one thread. The
CPU kernels choose how to share a call between threads by its size (batch rows split,
hidden units split, a loop thread and a gradient thread, whole-block GEMMs after the
loop) and by its dtype, so a mistake on one route shows only at sizes and dtypes that
take it. Here configurations are drawn at those sizes (batch 16 and up for the row
split, hidden sizes up to 256, inputs up to 300 wide) in float32, float64 and
bfloat16, with two threads, and every output and gradient is compared with nn.LSTM
run in float64 on the same weights and inputs.

The draws come from a fixed seed, so every run sees the same cases.
"""

import random

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
from fused_lstm import FusedLSTM
from helpers import at_least_two_threads, rel_err

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
def test_matches_float64_nn_lstm_on_threaded_routes(case):
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
