"""The command line of `python -m fused_lstm.bench`: its arguments, and main, which runs the
configs, prints progress, the table and the summary, and writes the report files."""

import argparse
import os
import sys
import time
from typing import Optional, Sequence

import torch

from .cases import disagreement
from .configs import CONFIGS, MODES, QUICK, default_configs, lstm_flops
from .memory import MEMORY_NOTE
from .report import (_loadavg, _mib, _ms, disagreement_lines, geomean_ratios, machine_info,
                     markdown_table, summary_line, write_outputs)
from .run import run_config


def _progress(i: int, n: int, r: dict, seconds: float) -> str:
    if "error" in r:
        return f"[{i}/{n}] {r['config']}: FAILED: {r['error'].splitlines()[0]}"
    parts = [f"{mode} {_ms(e['nn.LSTM']['median_s'])} / {_ms(e['FusedLSTM']['median_s'])} ms "
             f"= {e['ratio']:.2f}x" for mode, e in r["modes"].items()]
    peaks = r.get("peak_memory_bytes")
    if peaks:
        parts.append(f"peak {_mib(peaks['nn.LSTM'])} / {_mib(peaks['FusedLSTM'])} MiB")
    d = disagreement(r)
    if d:
        parts.append(f"RESULTS DIFFER from nn.LSTM's: {d}")
    return f"[{i}/{n}] {r['config']} ({r['shape']}): " + "; ".join(parts) + \
        f"  [{seconds:.1f}s]"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m fused_lstm.bench",
        description="Time FusedLSTM against nn.LSTM on the same weights and inputs.")
    p.add_argument("--device", choices=["cpu", "cuda"],
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--configs", help="comma-separated names: " + ", ".join(CONFIGS)
                   + " (default: every config for the device; 'tiny' only when named)")
    p.add_argument("--modes", default=",".join(MODES), help="inference,training")
    p.add_argument("--reps", type=int, help="timed repetitions per implementation "
                   "(default 10 on CPU, 30 on CUDA; 5 with --quick)")
    p.add_argument("--warmup", type=int, help="untimed rounds first (default 2; 1 with --quick)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads(N)")
    p.add_argument("--tf32", choices=["off", "on"], default="off",
                   help="CUDA float32 GEMMs: 'off' (default) runs nn.LSTM (cuDNN) and FusedLSTM "
                   "(cuBLAS) in full float32, 'on' lets both use TF32 tensor cores. PyTorch's "
                   "own defaults differ between the two (cuDNN allows TF32, matmul does not), "
                   "so both flags are set alike here")
    p.add_argument("--quick", action="store_true",
                   help="cheaper configs and fewer repetitions (about a minute)")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="skip the peak-memory measurement")
    p.add_argument("--out", metavar="DIR", help="write results-<device>-<date>.json/.md/.png")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device available")
    if a.configs:
        a.configs = [c.strip() for c in a.configs.split(",") if c.strip()]
        unknown = [c for c in a.configs if c not in CONFIGS]
        if unknown:
            p.error(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    else:
        a.configs = QUICK[a.device] if a.quick else default_configs(a.device)
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not a.modes or any(m not in MODES for m in a.modes):
        p.error(f"--modes takes a comma-separated subset of {', '.join(MODES)}")
    if a.reps is None:
        a.reps = 5 if a.quick else (30 if a.device == "cuda" else 10)
    if a.warmup is None:
        a.warmup = 1 if a.quick else 2
    if a.reps < 1 or a.warmup < 0:
        p.error("--reps must be >= 1 and --warmup >= 0")
    if a.threads is not None and a.threads < 1:
        p.error("--threads must be >= 1")
    return a


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the benchmark; print progress, the table and the summary; return the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = a.tf32 == "on"
    machine = machine_info(device, argv)
    print(f"FusedLSTM vs nn.LSTM on {machine['device_name']} ({a.device}), "
          f"{machine['threads']} threads, torch {machine['torch_version']}; "
          f"{len(a.configs)} configs x {','.join(a.modes)}, reps {a.reps}, warmup {a.warmup}",
          flush=True)
    load = machine["loadavg_at_start"]
    if load and load[0] > (os.cpu_count() or 1) * 0.75:
        print(f"note: load average {load[0]:.1f} on {os.cpu_count()} CPUs; other processes "
              "will make the times noisy.", flush=True)
    if not machine["extension_loaded"]:
        print("WARNING: fused_lstm._C is not loaded; FusedLSTM runs the slow reference.",
              flush=True)
    results = []
    t_start = time.perf_counter()
    for i, name in enumerate(a.configs, 1):
        t0 = time.perf_counter()
        cfg = CONFIGS[name]
        try:
            r = run_config(cfg, device, a.modes, a.reps, a.warmup, memory=a.memory)
        except Exception as e:  # e.g. a dtype one implementation lacks on this device
            r = {"config": name, "shape": cfg.describe(), "params": cfg.as_dict(),
                 "error": f"{type(e).__name__}: {e}"}
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results.append(r)
        print(_progress(i, len(a.configs), r, time.perf_counter() - t0), flush=True)
    report = {"machine": machine, "reps": a.reps, "warmup": a.warmup, "modes": a.modes,
              "memory_note": MEMORY_NOTE if a.memory else None,
              "flops_note": lstm_flops.__doc__.strip().splitlines()[0],
              "results": results, "summary": geomean_ratios(results),
              "total_seconds": time.perf_counter() - t_start, "loadavg_at_end": _loadavg()}
    print()
    print(markdown_table(results))
    print()
    print(summary_line(results), flush=True)
    for line in disagreement_lines(results):
        print(line, flush=True)
    if a.out:
        report["files"] = write_outputs(report, a.out)
        print("wrote " + ", ".join(report["files"].values()), flush=True)
    return report
