"""The report: machine info (CPU/GPU, vector ISA, versions, load), the markdown table and
summary lines, and the .json/.md/.png files that --out writes."""

import datetime
import json
import math
import os
import platform
import re
import shlex
from typing import Dict, List, Optional, Sequence

import torch

from .. import __version__, extension_loaded
from .cases import disagreement
from .configs import MODES
from .memory import MEMORY_NOTE


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _loadavg() -> Optional[List[float]]:
    """1/5/15-minute load averages: other work on the machine makes times noisy."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cpu_isa() -> dict:
    """The CPU's vector instruction set as the kernels use it, and the caps that set it."""
    kernels = torch.ops.fused_lstm.cpu_kernels() if extension_loaded() else None
    return {
        "aten": torch.backends.cpu.get_cpu_capability(),  # AVX512, AVX2, DEFAULT...
        "kernels": kernels,  # the ISA and each dtype's GEMM kernel; AVX512_BF16 and AMX
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
        "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }


def cpu_isa_label(isa: dict) -> str:
    """Short name of the instruction sets a CPU run used: 'AVX512+AMX', 'AVX512+AVX512_BF16', 'AVX2', and
    ' (capped)' when an environment variable lowered it below what the CPU has."""
    kernels = isa.get("kernels") or ""
    label = kernels.split(";")[0] if kernels else isa.get("aten", "?")
    if "bfloat16 GEMMs: oneDNN BRGEMM on AMX" in kernels:
        label += "+AMX"
    elif "bfloat16 GEMMs: own AVX512_BF16" in kernels:
        label += "+AVX512_BF16"
    if isa.get("ATEN_CPU_CAPABILITY") or isa.get("ONEDNN_MAX_CPU_ISA"):
        label += " (capped)"
    return label.replace("baseline (no vector ISA)", "no-vector-ISA")


def machine_info(device, argv: Sequence[str]) -> dict:
    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    now = datetime.datetime.now().astimezone()
    return {
        "device": device.type,
        "device_name": gpu or cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_isa": cpu_isa(),
        "gpu_name": gpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": (torch.backends.cudnn.version()
                          if device.type == "cuda" and torch.backends.cudnn.is_available()
                          else None),
        # float32 GEMMs on TF32 tensor cores (CUDA): cuBLAS for FusedLSTM, cuDNN for nn.LSTM
        "tf32": ({"matmul": torch.backends.cuda.matmul.allow_tf32,
                  "cudnn": torch.backends.cudnn.allow_tf32} if device.type == "cuda" else None),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "fused_lstm_version": __version__,
        "extension_loaded": extension_loaded(),
        "date": now.isoformat(timespec="seconds"),
        "loadavg_at_start": _loadavg(),
        "command": "python -m fused_lstm.bench" + ("" if not argv else " " + shlex.join(argv)),
    }


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else (
        f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}")


def _time_cell(stats: dict) -> str:
    return f"{_ms(stats['median_s'])} ({_ms(stats['q1_s'])}-{_ms(stats['q3_s'])})"


def _mib(nbytes: Optional[int]) -> str:
    if nbytes is None:
        return "-"
    mib = nbytes / 2**20
    return f"{mib:.0f}" if mib >= 100 else f"{mib:.1f}" if mib >= 1 else f"{mib:.3f}"


def _gflops(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.3g}" if v < 10 else f"{v:.0f}"


def geomean_ratios(results: Sequence[dict]) -> Dict[str, dict]:
    out = {}
    for mode in MODES:
        rs = [r["modes"][mode]["ratio"] for r in results
              if "modes" in r and mode in r["modes"]]
        if rs:
            out[mode] = {"geomean": math.exp(sum(math.log(x) for x in rs) / len(rs)),
                         "n": len(rs)}
    return out


def summary_line(results: Sequence[dict]) -> str:
    g = geomean_ratios(results)
    parts = [f"{mode} {v['geomean']:.2f}x over {v['n']} config{'s' if v['n'] != 1 else ''}"
             for mode, v in g.items()]
    return ("geometric mean of ratios (nn.LSTM time / FusedLSTM time): "
            + ("; ".join(parts) if parts else "no results"))


def disagreement_lines(results: Sequence[dict]) -> List[str]:
    """One warning line per config whose results disagree with nn.LSTM's."""
    return [f"WARNING: {r['config']}: FusedLSTM differs from nn.LSTM beyond tolerance "
            f"(relative to the largest value): {d}"
            for r in results if "error" not in r and (d := disagreement(r))]


def markdown_table(results: Sequence[dict]) -> str:
    head = ["config", "shape", "mode", "nn.LSTM ms (IQR)", "FusedLSTM ms (IQR)", "ratio",
            "nn.LSTM GFLOP/s", "FusedLSTM GFLOP/s", "nn.LSTM peak MiB", "FusedLSTM peak MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['config']} | {r.get('shape', '')} | error: "
                         f"{r['error'].splitlines()[0][:80]} |" + " |" * (len(head) - 3))
            continue
        peaks = r.get("peak_memory_bytes", {})
        for mode, e in r["modes"].items():
            train = mode == "training"
            row = [r["config"], r["shape"], mode, _time_cell(e["nn.LSTM"]),
                   _time_cell(e["FusedLSTM"]), f"{e['ratio']:.2f}",
                   _gflops(e["nn.LSTM"]["gflops"]), _gflops(e["FusedLSTM"]["gflops"]),
                   _mib(peaks.get("nn.LSTM")) if train else "-",
                   _mib(peaks.get("FusedLSTM")) if train else "-"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    m = report["machine"]
    isa = m.get("cpu_isa") or {}
    info = [f"- device: {m['device']} ({m['device_name']})", f"- CPU: {m['cpu_model']}",
            f"- CPU vector ISA: {cpu_isa_label(isa)}; kernels: {isa.get('kernels')}; "
            f"ATEN_CPU_CAPABILITY={isa.get('ATEN_CPU_CAPABILITY')}, "
            f"ONEDNN_MAX_CPU_ISA={isa.get('ONEDNN_MAX_CPU_ISA')}",
            f"- torch {m['torch_version']}, CUDA {m['cuda_version']}, "
            f"{m['threads']} threads, fused_lstm {m['fused_lstm_version']}, compiled "
            f"kernels: {'yes' if m['extension_loaded'] else 'NO (reference fallback)'}",
            f"- date: {m['date']}, load average at start {m.get('loadavg_at_start')}, "
            f"at end {report.get('loadavg_at_end')}", f"- command: `{m['command']}`",
            f"- reps {report['reps']}, warmup {report['warmup']}, interleaved"]
    if m.get("tf32") is not None:
        info.append(f"- float32 GEMMs on TF32 tensor cores: cuBLAS {m['tf32']['matmul']}, "
                    f"cuDNN {m['tf32']['cudnn']}")
    return "\n".join([
        f"# FusedLSTM vs nn.LSTM on {m['device_name']}", "", *info, "",
        markdown_table(report["results"]), "", summary_line(report["results"]), "",
        *[line + "\n" for line in disagreement_lines(report["results"])],
        "ratio = nn.LSTM median time / FusedLSTM median time (above 1: FusedLSTM faster). "
        "Times are medians over the repetitions, with the interquartile range. GFLOP/s = "
        "GEMM FLOPs / median time (training counts 3x forward). " + MEMORY_NOTE, ""])


def _slug(text: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9.\-]+", "_", text)).strip("_.") or "device"


def write_outputs(report: dict, out_dir: str) -> Dict[str, str]:
    """Write the .json, .md and (with matplotlib) .png reports; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    m = report["machine"]
    tf32 = "-tf32" if (m.get("tf32") or {}).get("matmul") else ""
    name = m["device_name"]
    if m["device"] == "cpu":  # the same CPU model comes with different vector ISAs
        name += "-" + cpu_isa_label(m.get("cpu_isa") or {})
    stem = os.path.join(out_dir, f"results-{_slug(name)}-{m['date'][:10]}{tf32}")
    paths = {"json": stem + ".json", "md": stem + ".md"}
    with open(paths["json"], "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    with open(paths["md"], "w") as f:
        f.write(markdown_report(report))
    png = _plot(report, stem + ".png")
    if png:
        paths["png"] = png
    return paths


def _plot(report: dict, path: str) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except Exception:  # optional dependency
        return None
    results = [r for r in report["results"] if "modes" in r]
    if not results:
        return None
    names = [r["config"] for r in results]
    modes = [mode for mode in MODES if any(mode in r["modes"] for r in results)]
    width = 0.8 / len(modes)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4))
    for k, mode in enumerate(modes):
        xs = [i + (k - (len(modes) - 1) / 2) * width for i in range(len(names))]
        ys = [r["modes"][mode]["ratio"] if mode in r["modes"] else 1.0 for r in results]
        # Log scale, bars grow from 1: up where FusedLSTM is faster, down where slower.
        bars = ax.bar(xs, [y - 1.0 for y in ys], width, bottom=1.0, label=mode)
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], fontsize=7)
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("nn.LSTM time / FusedLSTM time")
    m = report["machine"]
    ax.set_title(f"FusedLSTM speed-up, {m['device_name']}, {m['threads']} threads, "
                 f"torch {m['torch_version']}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
