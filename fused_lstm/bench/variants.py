"""FusedLSTM's options beyond nn.LSTM against plain FusedLSTM and the code users write today.

    python -m fused_lstm.bench.variants [--device cpu] [--reps 10] [--shapes fastrnns,sentiment]
        [--threads N] [--quick] [--out FILE.json | DIR]

For each shape (configs.py names; default fastrnns and sentiment) and each variant
(VARIANTS), three modules on the same weights and input, timed interleaved in one process
(timing.time_interleaved), medians:

  plain      FusedLSTM with no options
  variant    FusedLSTM with the variant's options
  user       the same model as users write it today (UserLSTM, WeightDropLSTM below)

in training (train mode, forward and backward of output.sum(), plus cells.sum() where the
variant returns the cell sequence; gradients reset to None before each step, the input
requires grad) and inference (eval mode, torch.no_grad()). Reported: ms per step, cost =
variant / plain, speedup = user / variant, and the targets (TARGETS): speedup >= 3x in
training; cost <= 1.3x (1.6x for variants with layer_norm) in both modes.

The user's code, chosen to be what a user would write and not a straw man:
  - layer_norm (and the combined variant): a LayerNorm-LSTM cell of nn.Linear and
    nn.LayerNorm, stepped in a Python loop; its input part (Linear, LayerNorm, bias) is
    computed for the whole sequence before the loop, which is cheaper than per step.
  - zoneout, recurrent_dropout, return_cell_sequence: nn.LSTMCell stepped in a Python loop;
    zoneout keeps units with torch.where on a fresh random mask each step, recurrent
    dropout multiplies h by one mask per sequence and layer direction.
  - weight_drop: no loop. AWD-LSTM's way: an nn.LSTM called through
    torch.func.functional_call with F.dropout applied to every weight_hh, once per call
    (nn.LSTM's own fused kernels run the sequence). Its speedup target is shown, but is
    not what the 3x target was written for.
Several layers and both directions: a cell per layer direction, the reverse one walking
the sequence backwards, the layer's output the two directions concatenated.

Check: in eval mode the variant FusedLSTM and the user's module, on the same weights (layer
norm parameters set to random values, not the 1/0 default), agree on output, h_n, c_n (and
cells): the largest absolute difference in float32 (CHECK_TOLERANCE, 1e-4) and in float64
copies of both (CHECK_TOLERANCE_64; this one decides, and fails the command), with each
float32 result's error against the float64 one, printed where float32 is over 1e-4. Variants that
are deterministic in training (layer_norm, return_cell_sequence) also compare the input's
gradient of one training step (printed, relative to its largest value).
"""

import argparse
import copy
import dataclasses
import json
import os
import shlex
import sys
import time
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .. import FusedLSTM
from .configs import CONFIGS, Config
from .report import _loadavg, _slug, cpu_isa_label, machine_info
from .timing import summarize, time_interleaved

# (name, FusedLSTM keyword options)
VARIANTS = [
    ("layer_norm", dict(layer_norm=True)),
    ("layer_norm_cell=state", dict(layer_norm=True, layer_norm_cell="state")),
    ("zoneout=0.1", dict(zoneout=0.1)),
    ("recurrent_dropout=0.25", dict(recurrent_dropout=0.25)),
    ("weight_drop=0.5", dict(weight_drop=0.5)),
    ("return_cell_sequence", dict(return_cell_sequence=True)),
    ("layer_norm+zoneout+recurrent_dropout",
     dict(layer_norm=True, zoneout=0.1, recurrent_dropout=0.25)),
]
DEFAULT_SHAPES = ["fastrnns", "sentiment"]
# tiny with two layers, both directions: every path of the user's loop
QUICK_SHAPES = [dataclasses.replace(CONFIGS["tiny"], name="tiny-bidir", num_layers=2,
                                    bidirectional=True)]
MODES = ("training", "inference")
# The targets: speedup over the user's code in training, cost over plain FusedLSTM.
TARGETS = {"speedup_training": 3.0, "cost": 1.3, "cost_layer_norm": 1.6}
CHECK_TOLERANCE = 1e-4  # float32, largest absolute difference in eval mode
# The same check in float64. Layer norm divides by the spread of the gates, so float32
# rounding grows along the sequence: at fastrnns and sentiment both float32 results sit
# 1e-4 to 1e-3 from the float64 one (the printed errors), and the float32 check alone
# cannot tell a different formula from rounding; float64 can.
CHECK_TOLERANCE_64 = 1e-9


class LayerNormLSTMCell(nn.Module):
    """A LayerNorm-LSTM cell as users write it (lstm_variant_reference's formula):

        gates = LN_ih(x W_ih^T) + LN_hh(h W_hh^T) + bias;  c' = f c + i g
        h' = o tanh(LN_c(c'));  the state carries c' (norm_state=False) or LN_c(c')

    input_gates(x) is the input part for a whole sequence, forward one step."""

    def __init__(self, input_size: int, hidden_size: int, eps: float = 1e-5,
                 norm_state: bool = False):
        super().__init__()
        self.ih = nn.Linear(input_size, 4 * hidden_size, bias=False)
        self.hh = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.ln_ih = nn.LayerNorm(4 * hidden_size, eps=eps)
        self.ln_hh = nn.LayerNorm(4 * hidden_size, eps=eps)
        self.ln_c = nn.LayerNorm(hidden_size, eps=eps)
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))
        self.norm_state = norm_state

    def input_gates(self, x):
        return self.ln_ih(self.ih(x)) + self.bias

    def forward(self, gx, state):
        h, c = state
        i, f, g, o = (gx + self.ln_hh(self.hh(h))).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        n = self.ln_c(c)
        return torch.sigmoid(o) * torch.tanh(n), (n if self.norm_state else c)


class UserLSTM(nn.Module):
    """A multi-layer, optionally bidirectional LSTM as a Python loop over steps, with
    layer norm (LayerNormLSTMCell, else nn.LSTMCell), zoneout, recurrent dropout and the
    last layer's cell sequence. Input [T, B, I]; returns y, (h_n, c_n) and, with
    return_cells, the cells [T, B, D*H]."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, layer_norm: bool = False,
                 layer_norm_eps: float = 1e-5, layer_norm_cell: str = "hidden",
                 zoneout=0.0, recurrent_dropout: float = 0.0,
                 return_cell_sequence: bool = False):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.directions = 2 if bidirectional else 1
        self.layer_norm = layer_norm
        self.zoneout = zoneout if isinstance(zoneout, (tuple, list)) else (zoneout, zoneout)
        self.recurrent_dropout = recurrent_dropout
        self.return_cells = return_cell_sequence
        self.cells = nn.ModuleList()
        for layer in range(num_layers):
            size = input_size if layer == 0 else hidden_size * self.directions
            for _ in range(self.directions):
                self.cells.append(
                    LayerNormLSTMCell(size, hidden_size, layer_norm_eps,
                                      layer_norm_cell == "state")
                    if layer_norm else nn.LSTMCell(size, hidden_size))

    def _direction(self, cell, x, reverse: bool):
        T, B = x.shape[0], x.shape[1]
        h = c = x.new_zeros(B, self.hidden_size)
        inputs = cell.input_gates(x) if self.layer_norm else x
        p = self.recurrent_dropout
        keep = (h.new_empty(B, self.hidden_size).bernoulli_(1 - p) / (1 - p)
                if self.training and p > 0 else None)
        p_h, p_c = self.zoneout
        ys, cs = [None] * T, [None] * T
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            h_new, c_new = cell(inputs[t], (h if keep is None else h * keep, c))
            if self.training:
                h = torch.where(torch.rand_like(h) < p_h, h, h_new) if p_h > 0 else h_new
                c = torch.where(torch.rand_like(c) < p_c, c, c_new) if p_c > 0 else c_new
            else:
                h = p_h * h + (1 - p_h) * h_new if p_h > 0 else h_new
                c = p_c * c + (1 - p_c) * c_new if p_c > 0 else c_new
            ys[t], cs[t] = h, c
        return torch.stack(ys), h, c, torch.stack(cs)

    def forward(self, x):
        hs, cs = [], []
        for layer in range(self.num_layers):
            outs = [self._direction(self.cells[layer * self.directions + d], x, d == 1)
                    for d in range(self.directions)]
            x = torch.cat([o[0] for o in outs], -1)
            hs += [o[1] for o in outs]
            cs += [o[2] for o in outs]
        result = (x, (torch.stack(hs), torch.stack(cs)))
        if self.return_cells:
            result += (torch.cat([o[3] for o in outs], -1),)
        return result


class WeightDropLSTM(nn.Module):
    """AWD-LSTM's weight drop as users write it: nn.LSTM called through functional_call
    with F.dropout(weight_hh, p) in place of each weight_hh, drawn once per call."""

    def __init__(self, lstm: nn.LSTM, p: float):
        super().__init__()
        self.lstm, self.p = lstm, p

    def forward(self, x):
        dropped = {name: F.dropout(w, self.p, self.training)
                   for name, w in self.lstm.named_parameters() if name.startswith("weight_hh")}
        return functional_call(self.lstm, dropped, (x,))


def _suffixes(cfg: Config) -> List[str]:
    """FusedLSTM's (nn.LSTM's) parameter name suffix of each layer direction, in order."""
    return [f"_l{layer}{'_reverse' if d else ''}" for layer in range(cfg.num_layers)
            for d in range(2 if cfg.bidirectional else 1)]


def user_module(cfg: Config, options: dict, fused: FusedLSTM) -> nn.Module:
    """The user's module for a variant, holding copies of `fused`'s weights."""
    if "weight_drop" in options:
        return WeightDropLSTM(_lstm_copy(fused), options["weight_drop"])
    user = UserLSTM(cfg.I, cfg.H, cfg.num_layers, cfg.bidirectional, **options)
    user.to(fused.weight_ih_l0)  # fused's device and dtype
    with torch.no_grad():
        for cell, sfx in zip(user.cells, _suffixes(cfg)):
            w = {k: getattr(fused, k + sfx) for k in ("weight_ih", "weight_hh", "bias_ih",
                                                      "bias_hh")}
            if user.layer_norm:
                cell.ih.weight.copy_(w["weight_ih"])
                cell.hh.weight.copy_(w["weight_hh"])
                cell.bias.copy_(w["bias_ih"] + w["bias_hh"])
                for mine, theirs in (("ln_ih", "layer_norm_ih"), ("ln_hh", "layer_norm_hh"),
                                     ("ln_c", "layer_norm_c")):
                    getattr(cell, mine).load_state_dict(getattr(fused, theirs + sfx).state_dict())
            else:
                for k, v in w.items():
                    getattr(cell, k).copy_(v)
    return user


def _lstm_copy(fused: FusedLSTM) -> nn.LSTM:
    """An nn.LSTM with copies of fused's weights (to_lstm shares them; the user's module
    gets its own, as the other variants' do)."""
    lstm = nn.LSTM(fused.input_size, fused.hidden_size, num_layers=fused.num_layers,
                   bidirectional=fused.bidirectional).to(fused.weight_ih_l0)
    lstm.load_state_dict(fused.state_dict())
    return lstm


def _modules(cfg: Config, options: dict, plain: FusedLSTM, seed: int = 1):
    """The variant FusedLSTM (plain's weights; layer norm parameters random) and the
    user's module on the same weights."""
    device = plain.weight_ih_l0.device
    variant = FusedLSTM(cfg.I, cfg.H, num_layers=cfg.num_layers,
                        bidirectional=cfg.bidirectional, **options).to(device)
    missing, unexpected = variant.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("layer_norm_") for k in missing), missing
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k in missing:  # LayerNorm weights about 1, biases about 0
            p = getattr(variant, k.rsplit(".", 1)[0]).get_parameter(k.rsplit(".", 1)[1])
            noise = 0.1 * torch.randn(p.shape, generator=gen).to(device)
            p.copy_((1.0 if k.endswith("weight") else 0.0) + noise)
    return variant, user_module(cfg, options, variant)


def _outputs(module, x) -> List[torch.Tensor]:
    """y, h_n, c_n (and cells) of one call, as a flat list."""
    out = module(x)
    return [out[0], *out[1]] + list(out[2:])


def _loss(outputs: Sequence[torch.Tensor], cells: bool) -> torch.Tensor:
    return outputs[0].sum() + outputs[3].sum() if cells else outputs[0].sum()


def _timed_step(module: nn.Module, x: torch.Tensor, mode: str, cells: bool):
    """One step of `module`: training (forward, backward of the loss; gradients reset to
    None first) or inference (no_grad). The caller sets train/eval mode."""
    params = list(module.parameters())
    if mode == "inference":
        def step():
            with torch.no_grad():
                module(x)
    else:
        def step():
            for p in params:
                p.grad = None
            x.grad = None
            _loss(_outputs(module, x), cells).backward()
    return step


def check(variant: nn.Module, user: nn.Module, x: torch.Tensor, options: dict,
          make_user) -> dict:
    """Eval mode: the largest absolute difference between the two modules' outputs (float32,
    and float64: a float64 copy of variant, make_user(it) the user's module on it); for
    variants deterministic in training, the input gradients' largest difference relative
    to their largest value."""
    variant.eval()
    user.eval()
    with torch.no_grad():
        fused32, user32 = _outputs(variant, x), _outputs(user, x)
        # float64 copies: the same formula agrees there to far below float32 rounding
        variant64 = copy.deepcopy(variant).double()
        x64 = x.detach().double()
        fused64, user64 = _outputs(variant64, x64), _outputs(make_user(variant64).eval(), x64)

    def diff(a, b):
        return max((u.double() - v.double()).abs().max().item() for u, v in zip(a, b))

    result = {"max_abs_diff": diff(fused32, user32), "max_abs_diff_float64": diff(fused64, user64),
              # each float32 result against the user's module in float64
              "fused_float32_error": diff(fused32, user64),
              "user_float32_error": diff(user32, user64)}
    random = {"zoneout", "recurrent_dropout", "weight_drop"}
    if not random & set(options):
        cells = bool(options.get("return_cell_sequence"))
        grads = []
        for module in (variant, user):
            module.train()
            x.grad = None
            _loss(_outputs(module, x), cells).backward()
            grads.append(x.grad.clone())
            module.zero_grad(set_to_none=True)
        x.grad = None
        result["grad_rel_diff"] = ((grads[0] - grads[1]).abs().max()
                                   / grads[1].abs().max()).item()
    return result


def _cost_target(options: dict) -> float:
    return TARGETS["cost_layer_norm"] if options.get("layer_norm") else TARGETS["cost"]


def run_shape(cfg: Config, device, reps: int, warmup: int, modes=MODES,
              variants=VARIANTS, log=print, on_row=None) -> List[dict]:
    """Every variant on one shape: a result dict per variant (each also passed to on_row
    as it is done)."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ref = nn.LSTM(cfg.I, cfg.H, num_layers=cfg.num_layers, bidirectional=cfg.bidirectional)
    plain = FusedLSTM.from_lstm(ref.to(device))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.T, cfg.B, cfg.I, generator=gen).to(device).requires_grad_()
    rows = []
    for name, options in variants:
        t0 = time.perf_counter()
        variant, user = _modules(cfg, options, plain)
        row = {"shape": cfg.name, "describe": cfg.describe(), "variant": name,
               "options": options, "user_code": type(user).__name__,
               "check": check(variant, user, x, options,
                              lambda v: user_module(cfg, options, v)), "modes": {}}
        row["check"]["ok"] = row["check"]["max_abs_diff"] < CHECK_TOLERANCE
        row["check"]["ok_float64"] = row["check"]["max_abs_diff_float64"] < CHECK_TOLERANCE_64
        cells = bool(options.get("return_cell_sequence"))
        for mode in modes:
            for module in (plain, variant, user):
                module.train(mode == "training")
            steps = [_timed_step(plain, x, mode, False), _timed_step(variant, x, mode, cells),
                     _timed_step(user, x, mode, cells)]
            times = time_interleaved(steps, reps, warmup, device)
            stats = dict(zip(("plain", "variant", "user"), map(summarize, times)))
            med = {k: s["median_s"] for k, s in stats.items()}
            e = dict(stats, cost=med["variant"] / med["plain"],
                     speedup=med["user"] / med["variant"])
            e["targets"] = {"cost": e["cost"] <= _cost_target(options)}
            if mode == "training":
                e["targets"]["speedup"] = e["speedup"] >= TARGETS["speedup_training"]
            row["modes"][mode] = e
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if on_row is not None:
            on_row(row)
        log(f"  {cfg.name} {name}: " + "; ".join(
            f"{m} {e['cost']:.2f}x cost, {e['speedup']:.2f}x speedup"
            for m, e in row["modes"].items()) + f"  [{row['seconds']:.1f}s]", flush=True)
    return rows


def _ok(flag: Optional[bool]) -> str:
    return "-" if flag is None else "yes" if flag else "NO"


def table(rows: Sequence[dict]) -> str:
    head = ["shape", "variant", "mode", "plain ms", "variant ms", "user ms",
            "cost (variant/plain)", "speedup (user/variant)", "cost target", "speedup >= 3x",
            "check: max abs diff float32 / float64"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        for mode, e in r["modes"].items():
            limit = _cost_target(r["options"])
            c = r["check"]
            check_cell = (f"{c['max_abs_diff']:.1e}" + ("" if c["ok"] else " (> 1e-4)")
                          + f" / {c['max_abs_diff_float64']:.0e}"
                          + ("" if c["ok_float64"] else " FAILED"))
            lines.append("| " + " | ".join([
                f"{r['shape']}", r["variant"], mode,
                *(f"{e[k]['median_s'] * 1e3:.3g}" for k in ("plain", "variant", "user")),
                f"{e['cost']:.2f}x", f"{e['speedup']:.2f}x",
                f"<= {limit}x: {_ok(e['targets']['cost'])}",
                _ok(e["targets"].get("speedup")), check_cell]) + " |")
    return "\n".join(lines)


def missed_targets(rows: Sequence[dict]) -> List[str]:
    return [f"{r['shape']} {r['variant']} {mode} {name}"
            for r in rows for mode, e in r["modes"].items()
            for name, held in e["targets"].items() if not held]


def default_out_name(machine: dict) -> str:
    """variants-<CPU model>-<vector ISA>-<date>.json (the GPU name on CUDA), as the main
    bench names its results."""
    name = machine["device_name"]
    if machine["device"] == "cpu":
        name += "-" + cpu_isa_label(machine.get("cpu_isa") or {})
    return f"variants-{_slug(name)}-{machine['date'][:10]}.json"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fused_lstm.bench.variants",
                                description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, help="timed rounds (default 10; 2 with --quick)")
    p.add_argument("--warmup", type=int, help="untimed rounds first (default 2; 1 with --quick)")
    p.add_argument("--shapes", help="comma-separated configs.py names (default "
                   + ",".join(DEFAULT_SHAPES) + ")")
    p.add_argument("--threads", type=int)
    p.add_argument("--quick", action="store_true", help="tiny shapes, few repetitions (smoke test)")
    p.add_argument("--out", metavar="FILE.json|DIR", help="write the results as JSON; a "
                   "directory gets variants-<device name>-<date>.json")
    a = p.parse_args(argv)
    if a.shapes:
        names = [s.strip() for s in a.shapes.split(",") if s.strip()]
        unknown = [n for n in names if n not in CONFIGS]
        if unknown:
            p.error(f"unknown shape(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
        a.shapes = [CONFIGS[n] for n in names]
    else:
        a.shapes = QUICK_SHAPES if a.quick else [CONFIGS[n] for n in DEFAULT_SHAPES]
    bad = [c.name for c in a.shapes if c.dtype != torch.float32 or c.proj_size]
    if bad:
        p.error(f"float32 shapes without projection only: {', '.join(bad)}")
    a.reps = a.reps if a.reps is not None else 2 if a.quick else 10
    a.warmup = a.warmup if a.warmup is not None else 1 if a.quick else 2
    if a.reps < 1 or a.warmup < 0:
        p.error("--reps must be >= 1 and --warmup >= 0")
    return a


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run, print progress and the table, write --out; return the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    machine = machine_info(torch.device(a.device), argv)
    machine["command"] = "python -m fused_lstm.bench.variants" + (
        " " + shlex.join(argv) if argv else "")
    isa = cpu_isa_label(machine.get("cpu_isa") or {}) if machine["device"] == "cpu" else ""
    print(f"# FusedLSTM variants on {machine['device_name']}" + (f" ({isa})" if isa else ""))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, reps {a.reps}, "
          f"warmup {a.warmup}, medians in ms; load average {machine['loadavg_at_start']}",
          flush=True)
    t_start = time.perf_counter()
    rows = []
    report = {"machine": machine, "reps": a.reps, "warmup": a.warmup,
              "shapes": [c.as_dict() for c in a.shapes], "targets": TARGETS,
              "check_tolerance": CHECK_TOLERANCE, "results": rows, "complete": False,
              "notes": __doc__}
    path = a.out
    if path and (os.path.isdir(path) or path.endswith(os.sep)):
        path = os.path.join(path, default_out_name(machine))

    def save():  # after every variant, so that an interrupted run keeps what it measured
        if path:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w") as f:
                json.dump(report, f, indent=2, default=str)
                f.write("\n")

    for cfg in a.shapes:
        print(f"{cfg.name} ({cfg.describe()})", flush=True)
        run_shape(cfg, a.device, a.reps, a.warmup, on_row=lambda r: (rows.append(r), save()))
    total = time.perf_counter() - t_start
    print()
    print(table(rows))
    missed = missed_targets(rows)
    failed = [f"{r['shape']} {r['variant']}" for r in rows if not r["check"]["ok_float64"]]
    over32 = [f"{r['shape']} {r['variant']} {r['check']['max_abs_diff']:.1e} (float32 errors: "
              f"FusedLSTM {r['check']['fused_float32_error']:.1e}, user "
              f"{r['check']['user_float32_error']:.1e})"
              for r in rows if not r["check"]["ok"]]
    n_targets = sum(len(e["targets"]) for r in rows for e in r["modes"].values())
    print(f"\ntargets: speedup over the user's code >= {TARGETS['speedup_training']}x in "
          f"training; cost over plain FusedLSTM <= {TARGETS['cost']}x "
          f"({TARGETS['cost_layer_norm']}x with layer_norm) in both modes: "
          f"{n_targets - len(missed)} of {n_targets} hold"
          + (". Missed: " + "; ".join(missed) if missed else ""))
    grads = [f"{r['variant']} {r['check']['grad_rel_diff']:.1e}" for r in rows
             if "grad_rel_diff" in r["check"]]
    print(f"check: eval-mode outputs of FusedLSTM and the user's code within "
          f"{CHECK_TOLERANCE_64} in float64 "
          + ("for every variant" if not failed else "FAILED for " + "; ".join(failed))
          + f"; in float32 within {CHECK_TOLERANCE} "
          + ("for every variant" if not over32 else "except " + "; ".join(over32))
          + (f"; training input gradients, relative: {', '.join(grads)}" if grads else ""))
    print(f"total {total:.0f}s", flush=True)
    report.update(complete=True, missed_targets=missed, check_failed=failed,
                  float32_check_over_tolerance=over32,
                  total_seconds=total, loadavg_at_end=_loadavg())
    if path:
        save()
        report["file"] = path
        print(f"wrote {path}", flush=True)
    return report


if __name__ == "__main__":
    sys.exit(1 if main()["check_failed"] else 0)
