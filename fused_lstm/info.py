"""What this fused_lstm build is and what it runs on.

    python -m fused_lstm          (or: python -m fused_lstm.info [--json])
"""

import argparse
import glob
import json
import os
import sys
from typing import Dict


def _extension_file():
    from . import _extension

    if _extension._C is not None:
        return getattr(_extension._C, "__file__", None)
    # Not loaded: point at what is there (if anything), to help explain why.
    here = os.path.dirname(os.path.abspath(__file__))
    found = sorted(glob.glob(os.path.join(here, "_C*.so"))
                   + glob.glob(os.path.join(here, "_C*.pyd")))
    return found[0] if found else None


def collect() -> Dict[str, object]:
    """The build facts, as a flat dict of JSON-friendly values."""
    import torch

    import fused_lstm
    from . import _extension

    gpu = torch.cuda.is_available()
    variant_kernels = variant_on = False
    if fused_lstm.extension_loaded():
        from . import ops

        variant_kernels, variant_on = ops._CUDA_VARIANT_KERNELS, ops._CUDA_VARIANT_OP
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if gpu else []
    error = _extension.load_error
    return {
        "fused_lstm": fused_lstm.__version__,
        "fused_lstm_path": os.path.dirname(os.path.abspath(fused_lstm.__file__)),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "cpu_kernels": fused_lstm.extension_loaded(),
        "fallback_reason": None if error is None else f"{type(error).__name__}: {error}",
        "cuda_kernels": fused_lstm.cuda_available(),
        "cuda_variant_kernels": variant_kernels,
        "cuda_variant_op_on": variant_kernels and variant_on,
        "cuda_16bit_gemm_on": os.environ.get("FUSED_LSTM_CUDA_16BIT_GEMM") == "1",
        "gpu_visible": gpu,
        "gpus": gpus,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_kernel_isa": (torch.ops.fused_lstm.cpu_kernels() if fused_lstm.extension_loaded()
                           else None),
        "num_threads": torch.get_num_threads(),
        "extension_file": _extension_file(),
    }


def variant_route(info: Dict[str, object]) -> str:
    """What runs the variant options (layer norm, zoneout, ...) on CUDA."""
    if info.get("cuda_variant_op_on"):
        return "the variant op's CUDA kernels (FUSED_LSTM_CUDA_VARIANT_OP=1; not yet run on a GPU)"
    if info.get("cuda_variant_kernels"):
        return ("the plain-PyTorch reference (FUSED_LSTM_CUDA_VARIANT_OP=1 runs the variant "
                "op's CUDA kernels, not yet run on a GPU)")
    return "the plain-PyTorch reference"


def gemm_16bit_route(info: Dict[str, object]) -> str:
    """How float16/bfloat16 layers multiply on CUDA."""
    if not info.get("cuda_kernels"):
        return "-"
    if info.get("cuda_16bit_gemm_on"):
        return ("16-bit operands on tensor cores in the forward (FUSED_LSTM_CUDA_16BIT_GEMM=1; "
                "not yet run on a GPU)")
    return ("float32 GEMMs (FUSED_LSTM_CUDA_16BIT_GEMM=1 puts the forward's on tensor cores, "
            "not yet run on a GPU)")


def format_info(info: Dict[str, object]) -> str:
    def yes(flag):
        return "yes" if flag else "no"

    if info["cpu_kernels"]:
        cpu = "yes (compiled C++ kernels in use)"
    else:
        cpu = ("no, using the slow plain-PyTorch reference fallback"
               + (f" ({info['fallback_reason']})" if info["fallback_reason"] else ""))
    gpu = yes(info["gpu_visible"])
    if info["gpus"]:
        gpu += f" ({len(info['gpus'])}: {', '.join(info['gpus'])})"
    rows = [
        ("fused_lstm", f"{info['fused_lstm']} ({info['fused_lstm_path']})"),
        ("torch", info["torch"]),
        ("torch built with CUDA", info["torch_cuda"] or "no (CPU-only torch)"),
        ("python", info["python"]),
        ("compiled CPU kernels", cpu),
        ("CUDA kernels in build", yes(info["cuda_kernels"])),
        ("variants on CUDA run", variant_route(info)),
        ("16-bit layers on CUDA", gemm_16bit_route(info)),
        ("GPU visible", gpu),
        ("CPU vector ISA (ATen)", info["cpu_capability"]),
        ("CPU kernels run", info["cpu_kernel_isa"] or "-"),
        ("OpenMP threads", info["num_threads"]),
        ("extension file", info["extension_file"] or "not found"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fused_lstm",
                                description="Print what this fused_lstm build is and runs on.")
    p.add_argument("--json", action="store_true", help="print the facts as one JSON object")
    args = p.parse_args(argv)
    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
