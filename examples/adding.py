"""The adding problem: a long-memory benchmark that FusedLSTM learns on a CPU.

Each input sequence has T steps (default 200) and two channels: a random value in [0, 1] and
a marker that is 1 at exactly two steps (one in each half of the sequence) and 0 elsewhere.
The target is the sum of the two marked values. Always predicting 1 (the mean) gives an MSE
of 1/6 = 0.167; a model that remembers the marked values across up to T steps does far
better. Fresh random sequences are drawn for every batch; a fixed set of held-out sequences
measures the MSE. Prints the final MSE against the 0.167 baseline and plots the MSE curve.

    python examples/adding.py [--length 200] [--steps 4000] [--out examples/out]
"""

import argparse
import sys
import time

import torch
from torch import nn

from _common import Progress, add_common_args, describe_backend, save_plot, setup_torch

BASELINE = 1.0 / 6.0  # MSE of always answering 1: the variance of the sum of two U(0, 1)


def make_batch(batch, length, generator):
    values = torch.rand(batch, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (batch,), generator=generator)
    second = torch.randint(half, length, (batch,), generator=generator)
    marker = torch.zeros(batch, length)
    rows = torch.arange(batch)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    x = torch.stack([values, marker], dim=-1)  # (batch, T, 2)
    y = values[rows, first] + values[rows, second]
    return x, y


class Adder(nn.Module):
    def __init__(self, hidden, forget_bias=0.0):
        super().__init__()
        from fused_lstm import FusedLSTM

        self.lstm = FusedLSTM(2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)
        if forget_bias:  # a positive forget-gate bias keeps memories from the start
            with torch.no_grad():
                self.lstm.bias_ih_l0[hidden:2 * hidden].fill_(forget_bias)
                self.lstm.bias_hh_l0[hidden:2 * hidden].zero_()

    def forward(self, x):
        _, (h_n, _) = self.lstm(x)
        return self.head(h_n[-1]).squeeze(-1)


def evaluate(model, x, y):
    model.eval()
    with torch.no_grad():
        mse = nn.functional.mse_loss(model(x), y).item()
    model.train()
    return mse


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--length", type=int, default=200, help="sequence length T")
    p.add_argument("--steps", type=int, default=4000,
                   help="most optimizer steps (it stops early once the target is met)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip")
    p.add_argument("--forget-bias", type=float, default=2.0,
                   help="initial forget-gate bias (gate order i, f, g, o)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--target", type=float, default=0.01,
                   help="stop early once the held-out MSE stays below this for 3 evaluations")
    add_common_args(p)
    args = p.parse_args(argv)
    setup_torch(args)

    gen = torch.Generator().manual_seed(args.seed)
    x_test, y_test = make_batch(args.test_size, args.length, torch.Generator().manual_seed(10**6))
    model = Adder(args.hidden, args.forget_bias)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    print(f"adding problem: T={args.length}, hidden {args.hidden}, batch {args.batch}, "
          f"Adam lr {args.lr}, up to {args.steps} steps; baseline MSE {BASELINE:.3f}")
    print(describe_backend())

    curve = [(0, evaluate(model, x_test, y_test))]
    train_losses = []
    bar = Progress(args.steps, "adding", enabled=not args.no_progress)
    below = 0
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = make_batch(args.batch, args.length, gen)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        train_losses.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            curve.append((step, evaluate(model, x_test, y_test)))
            below = below + 1 if curve[-1][1] < args.target else 0
            bar.log(f"  step {step}: held-out MSE {curve[-1][1]:.5f} "
                    f"({time.perf_counter() - start:.1f}s)")
        bar.update(loss=train_losses[-1], test_mse=curve[-1][1])
        if below >= 3:
            break
    bar.close()
    elapsed = time.perf_counter() - start
    final = curve[-1][1]
    print(f"final held-out MSE {final:.5f} after {step} steps ({elapsed:.1f}s, "
          f"{1000 * elapsed / step:.0f} ms/step) vs baseline {BASELINE:.3f} "
          f"({BASELINE / max(final, 1e-12):.0f}x lower)")

    def draw(plt):
        steps, mses = zip(*curve)
        plt.plot(range(1, len(train_losses) + 1), train_losses, alpha=0.3, label="training batch")
        plt.plot(steps, mses, marker=".", label="held-out")
        plt.axhline(BASELINE, color="gray", linestyle="--", label="always 1 (0.167)")
        plt.yscale("log")
        plt.xlabel("step")
        plt.ylabel("MSE")
        plt.title(f"Adding problem, T={args.length}: FusedLSTM (hidden {args.hidden})")
        plt.legend()

    plot = save_plot(args.out, "adding_mse.png", draw, enabled=not args.no_plot)
    return {"final_mse": final, "baseline": BASELINE, "steps": step, "time": elapsed,
            "curve": curve, "plot": plot}


if __name__ == "__main__":
    main(sys.argv[1:])
