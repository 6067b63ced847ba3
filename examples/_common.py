"""Small helpers shared by the examples: progress bars, plots, timing, output folder."""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "out")


def add_common_args(parser):
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="folder for the plot (default: examples/out/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 0 keeps torch's default (one per core). The "
                        "models here are small, so one thread is about as fast, and it does not "
                        "slow to a crawl when other processes share the cores (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-plot", action="store_true", help="do not save a plot")
    return parser


class Progress:
    """A tqdm bar when tqdm is installed (and wanted); otherwise a line every so often."""

    def __init__(self, total, desc, enabled=True, every=None):
        self.total, self.desc, self.n = total, desc, 0
        self.every = every or max(1, total // 10)
        self.postfix = ""
        self.start = time.perf_counter()
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
        self.plain = enabled and self.bar is None

    def update(self, **postfix):
        self.n += 1
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in postfix.items())
        if self.bar is not None:
            self.bar.update(1)
            if text:
                self.bar.set_postfix_str(text, refresh=False)
        elif self.plain and (self.n % self.every == 0 or self.n == self.total):
            elapsed = time.perf_counter() - self.start
            print(f"  {self.desc}: {self.n}/{self.total} {text} ({elapsed:.1f}s)", flush=True)

    def log(self, message):
        """Print a line without breaking the bar."""
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def save_plot(out_dir, name, draw, enabled=True):
    """Call draw(plt) and save the figure as out_dir/name; None if matplotlib is missing."""
    if not enabled:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot saved (pip install matplotlib)")
        return None
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    fig = plt.figure(figsize=(7, 4.5))
    draw(plt)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    shown = os.path.relpath(path)
    print(f"plot saved to {path if shown.startswith('..') else shown}")
    return path


def setup_torch(args):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def describe_backend():
    import torch

    import fused_lstm
    kernels = "compiled kernels" if fused_lstm.extension_loaded() else "REFERENCE FALLBACK (slow)"
    return (f"torch {torch.__version__}, fused_lstm {fused_lstm.__version__} ({kernels}), "
            f"{torch.get_num_threads()} threads, python {sys.version.split()[0]}")
