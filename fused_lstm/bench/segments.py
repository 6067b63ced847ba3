"""`lengths=` and `reset=` against the other ways users run such batches today.

    python -m fused_lstm.bench.segments [--device cpu] [--reps 20] [--threads N]

Table 1, padded batches with lengths (drawn uniformly from [T/4, T], fixed seed); each
way timed interleaved in one process, medians:
  lengths=        FusedLSTM(x, lengths=lengths)
  packed          FusedLSTM on a PackedSequence made beforehand (the packed path alone)
  pack+pad        pack_padded_sequence, FusedLSTM, pad_packed_sequence (what users write)
  nn.LSTM padded  nn.LSTM over all T steps of the padded batch (the usual shortcut)
  nn.LSTM pack+pad
Table 2, a PPO-style rollout with episode ends (reset at each step and environment
with probability 1/50): one call with reset=, against the step-at-a-time loops RL code
writes (nn.LSTM, or FusedLSTM, called with T = 1 and the state multiplied by 1 - done).
Table 3, one-step calls (streaming): FusedLSTM.step(x_t, (h, c)) against nn.LSTM and
FusedLSTM called on a sequence of length 1, at B = 1, 8, 64 and H = I = 128, 256, 512;
each timed repetition makes ONE_STEP_CALLS calls and the table gives ms per call.
Inference (no_grad) and training (forward + backward of the outputs and h_n, c_n).
"""

import argparse
from typing import Dict, List

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .. import FusedLSTM
from .report import machine_info
from .timing import summarize, time_interleaved

# (name, T, B, I, H, layers, bidirectional)
SHAPES = [
    ("sentiment", 50, 30, 100, 256, 2, True),
    ("long-seq", 500, 16, 64, 128, 1, False),
    ("speech", 200, 32, 80, 256, 1, True),
]
WAYS = ["lengths=", "packed", "pack+pad", "nn.LSTM padded", "nn.LSTM pack+pad"]
# (name, T, B, I, H)
ROLLOUTS = [("ppo", 128, 16, 256, 256), ("ppo-atari", 128, 8, 512, 128)]
RESET_WAYS = ["reset=", "nn.LSTM step loop", "FusedLSTM step loop"]
# (name, B, H): one-step calls with I = H
ONE_STEP_SHAPES = [(f"B={B} H={H}", B, H) for B in (1, 8, 64) for H in (128, 256, 512)]
ONE_STEP_WAYS = ["FusedLSTM.step", "nn.LSTM T=1", "FusedLSTM T=1"]
ONE_STEP_CALLS = 10


def _timed_step(mode: str, run) -> callable:
    """One inference (no_grad) or training (forward + backward of y, h_n and c_n) step of
    run() -> (y, h_n, c_n)."""
    if mode == "inference":
        def step():
            with torch.no_grad():
                run()
    else:
        def step():
            y, h, c = run()
            (y.sum() + h.sum() + c.sum()).backward()
    return step


def _pair(device, I, H, **cfg):
    """nn.LSTM with seed-0 weights on device, and a FusedLSTM holding the same ones."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ref = nn.LSTM(I, H, **cfg).to(device)
    return ref, FusedLSTM.from_lstm(ref)


def _rollout_steps(shape, device, mode: str) -> Dict[str, callable]:
    name, T, B, I, H = shape
    gen = torch.Generator().manual_seed(0)
    ref, fused = _pair(device, I, H)
    x = torch.randn(T, B, I, generator=gen).to(device).requires_grad_(mode == "training")
    done = (torch.rand(T, B, generator=gen) < 1 / 50).to(device)
    h0 = torch.randn(1, B, H, generator=gen).to(device)
    c0 = torch.randn(1, B, H, generator=gen).to(device)

    def one_call(module):
        y, (h, c) = module(x, (h0, c0), reset=done)
        return y, h, c

    def step_loop(module):
        h, c = h0, c0
        ys = []
        for t in range(T):
            keep = (1.0 - done[t].float()).view(1, -1, 1)
            y, (h, c) = module(x[t:t + 1], (h * keep, c * keep))
            ys.append(y)
        return torch.cat(ys), h, c

    return {"reset=": _timed_step(mode, lambda: one_call(fused)),
            "nn.LSTM step loop": _timed_step(mode, lambda: step_loop(ref)),
            "FusedLSTM step loop": _timed_step(mode, lambda: step_loop(fused))}


def _one_step_steps(shape, device, mode: str) -> Dict[str, callable]:
    """ONE_STEP_CALLS one-step calls of each way per timed repetition (training: each
    call's output, h and c summed and backpropagated, as a per-step loss would)."""
    name, B, H = shape
    gen = torch.Generator().manual_seed(0)
    ref, fused = _pair(device, H, H)
    x = torch.randn(B, H, generator=gen).to(device).requires_grad_(mode == "training")
    h0 = torch.randn(1, B, H, generator=gen).to(device)
    c0 = torch.randn(1, B, H, generator=gen).to(device)
    calls = {"FusedLSTM.step": lambda: fused.step(x, (h0, c0)),
             "nn.LSTM T=1": lambda: ref(x.unsqueeze(0), (h0, c0)),
             "FusedLSTM T=1": lambda: fused(x.unsqueeze(0), (h0, c0))}

    def repeated(call):
        def run():
            for _ in range(ONE_STEP_CALLS):
                y, (h, c) = call()
                if mode == "training":
                    (y.sum() + h.sum() + c.sum()).backward()
        return run

    return {way: repeated(call) if mode == "training" else _timed_step(mode, repeated(call))
            for way, call in calls.items()}


def _steps(shape, device, mode: str) -> Dict[str, callable]:
    name, T, B, I, H, layers, bidir = shape
    gen = torch.Generator().manual_seed(0)
    ref, fused = _pair(device, I, H, num_layers=layers, bidirectional=bidir)
    x = torch.randn(T, B, I, generator=gen).to(device).requires_grad_(mode == "training")
    lengths = torch.randint(T // 4, T + 1, (B,), generator=gen)
    lengths[0] = T
    packed = pack_padded_sequence(x.detach(), lengths, enforce_sorted=False)
    packed = packed._replace(data=packed.data.requires_grad_(mode == "training"))

    def run(module, way):
        if way == "lengths=":
            y, (h, c) = module(x, lengths=lengths)
        elif way == "packed":
            y, (h, c) = module(packed)
            y = y.data
        elif way == "nn.LSTM padded":
            y, (h, c) = module(x)
        else:  # pack+pad
            y, (h, c) = module(pack_padded_sequence(x, lengths, enforce_sorted=False))
            y, _ = pad_packed_sequence(y, total_length=T)
        return y, h, c

    def make(module, way):
        return _timed_step(mode, lambda: run(module, way))

    return {
        "lengths=": make(fused, "lengths="),
        "packed": make(fused, "packed"),
        "pack+pad": make(fused, "pack+pad"),
        "nn.LSTM padded": make(ref, "nn.LSTM padded"),
        "nn.LSTM pack+pad": make(ref, "pack+pad"),
    }


def _label(shape) -> str:
    name, T, B, I, H, layers, bidir = shape
    return (f"{name} T={T} B={B} I={I} H={H}" + (f" L={layers}" if layers > 1 else "")
            + (" bidir" if bidir else ""))


def _table(title: str, ways: List[str], cases, args, calls: int = 1) -> List[dict]:
    """One markdown table: a row per (case, mode), the ways timed interleaved, medians in
    ms (per call, where each timed step makes `calls` calls) and each way's time over the
    first way's. cases: (label, shape, make_steps)."""
    print(f"| {title} | mode | " + " | ".join(ways) + " |")
    print("|---|---|" + "---|" * len(ways))
    rows = []
    for label, shape, make_steps in cases:
        for mode in ("inference", "training"):
            steps = make_steps(shape, args.device, mode)
            times = time_interleaved([steps[w] for w in ways], args.reps, args.warmup,
                                     args.device)
            med = {w: summarize(t)["median_s"] * 1e3 / calls for w, t in zip(ways, times)}
            cells = [f"{med[w]:.3g}" + ("" if w == ways[0] else f" ({med[w] / med[ways[0]]:.2f}x)")
                     for w in ways]
            print(f"| {label} | {mode} | " + " | ".join(cells) + " |")
            rows.append(dict(case=label, mode=mode, ms=med))
    return rows


def main(argv: List[str] = None) -> List[dict]:
    parser = argparse.ArgumentParser(prog="python -m fused_lstm.bench.segments",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info(torch.device(args.device),
                        ["python", "-m", "fused_lstm.bench.segments"] + list(argv or []))
    kernels = (info.get("cpu_isa") or {}).get("kernels", "")
    print(f"# lengths=, reset= and one-step calls on {info.get('device_name')} ({kernels})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, reps {args.reps}, "
          "medians in ms; ratios: time of the way / time of the first column's\n")
    rows = []
    lengths_table = [(_label(shape), shape, _steps) for shape in SHAPES]
    rows += _table("shape", WAYS, lengths_table, args)
    print()
    rollout_table = [(f"{s[0]} T={s[1]} B={s[2]} I={s[3]} H={s[4]}", s, _rollout_steps)
                     for s in ROLLOUTS]
    rows += _table("rollout", RESET_WAYS, rollout_table, args)
    print()
    one_step_table = [(s[0], s, _one_step_steps) for s in ONE_STEP_SHAPES]
    rows += _table("one step", ONE_STEP_WAYS, one_step_table, args, calls=ONE_STEP_CALLS)
    return rows


if __name__ == "__main__":
    main()
