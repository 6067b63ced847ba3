"""Handwritten digits, read row by row: FusedLSTM and nn.LSTM trained side by side.

scikit-learn's bundled 8x8 digits (offline, 1797 images) become sequences of 8 steps with
8 features (one pixel row per step). A 1-layer LSTM reads them and a Linear layer classifies
the last hidden state. The same model is trained twice from the same initial weights on the
same batches: once with FusedLSTM, once with torch.nn.LSTM. Prints test accuracy and wall time
of both, and plots their loss curves.

    python examples/digits.py [--epochs 30] [--hidden 128] [--out examples/out]
"""

import argparse
import copy
import sys
import time

import torch
from torch import nn

from _common import Progress, add_common_args, describe_backend, save_plot, setup_torch


class Classifier(nn.Module):
    def __init__(self, lstm_cls, hidden, classes=10, features=8):
        super().__init__()
        self.lstm = lstm_cls(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        _, (h_n, _) = self.lstm(x)
        return self.head(h_n[-1])


def load_data(seed, test_fraction=0.2):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    y = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(x) * test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def batches(n, batch_size, epochs, seed):
    """The same shuffled mini-batch order for both runs."""
    g = torch.Generator().manual_seed(seed)
    return [idx for _ in range(epochs) for idx in torch.randperm(n, generator=g).split(batch_size)]


def train(model, name, data, order, lr, progress):
    x_tr, y_tr, x_te, y_te = data
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=len(order))
    losses = []
    bar = Progress(len(order), name, enabled=progress)
    start = time.perf_counter()
    model.train()
    for idx in order:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.update(loss=losses[-1])
    bar.close()
    train_time = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_te).argmax(-1) == y_te).float().mean().item()
    return {"losses": losses, "accuracy": accuracy, "time": train_time}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--steps", type=int, default=0,
                   help="stop after this many optimizer steps in all (0: no limit)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    add_common_args(p)
    args = p.parse_args(argv)
    setup_torch(args)

    from fused_lstm import FusedLSTM

    data = load_data(args.seed)
    order = batches(len(data[0]), args.batch, args.epochs, args.seed)
    if args.steps:
        order = order[:args.steps]
    print(f"digits: {len(data[0])} train / {len(data[2])} test sequences of 8 steps x 8 features, "
          f"hidden {args.hidden}, {args.epochs} epochs ({len(order)} steps), batch {args.batch}")
    print(describe_backend())

    torch.manual_seed(args.seed)
    fused_model = Classifier(FusedLSTM, args.hidden)
    ref_model = copy.deepcopy(fused_model)  # then swap in an nn.LSTM holding the same weights
    ref_model.lstm = nn.LSTM(8, args.hidden, batch_first=True)
    ref_model.lstm.load_state_dict(fused_model.lstm.state_dict())

    results = {}
    for name, model in (("FusedLSTM", fused_model), ("nn.LSTM", ref_model)):
        results[name] = train(model, name, data, order, args.lr, not args.no_progress)
        r = results[name]
        print(f"{name:>9}: test accuracy {100 * r['accuracy']:.2f}%  final loss "
              f"{r['losses'][-1]:.4f}  train time {r['time']:.2f}s")
    f, r = results["FusedLSTM"], results["nn.LSTM"]
    gap = max(abs(a - b) for a, b in zip(f["losses"], r["losses"]))
    print(f"loss curves: largest difference between the two runs {gap:.2e} "
          f"(losses start at {f['losses'][0]:.2f})")
    print(f"speed-up of FusedLSTM over nn.LSTM (whole training loop): {r['time'] / f['time']:.2f}x")

    def draw(plt):
        for name, res in results.items():
            plt.plot(res["losses"], label=f"{name} (test acc. {100 * res['accuracy']:.1f}%)",
                     alpha=0.8, linestyle="-" if name == "FusedLSTM" else "--")
        plt.yscale("log")
        plt.xlabel("step")
        plt.ylabel("training cross-entropy")
        plt.title("8x8 digits, row by row: FusedLSTM vs nn.LSTM, same init and batches")
        plt.legend()

    results["plot"] = save_plot(args.out, "digits_loss.png", draw, enabled=not args.no_plot)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
