"""Builds the CUDA code of both ops for the CPU (opt-in tests: FUSED_LSTM_CUDA_EMULATION=1):
the kernels of csrc/cuda/*.cu with each `kernel<<<config>>>(args)` rewritten as a call of
the emulated launch (cuda_runtime.h beside this file), the torch-free time loops and the
impls, cuBLAS's calls emulated (emulated_blas.cpp), all registered as the ops of
torch.ops.fused_lstm_emulated (emulated_layer_op.cpp, emulated_variant_op.cpp). One
extension, built once per process (a minute or two the first time, cached after)."""

import functools
import re
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"

# Each .cu file and the number of launches it has (a changed count fails loudly here
# rather than leaving a launch un-emulated).
KERNEL_FILES = {"lstm_cuda_kernels.cu": 6, "variant_cuda_kernels.cu": 9}


def emulated_kernels_source(build: Path, name: str, launches: int) -> Path:
    """csrc/cuda/<name> with each launch rewritten, as a C++ file in `build` (rewritten only
    when it changes, so the extension's build cache holds)."""
    src = (CSRC / "cuda" / name).read_text()
    out, n = re.subn(r"(\w+<[\w, ]+>)<<<(.*?)>>>\(", r"fused_lstm_emulate_launch(\2, \1, ", src,
                     flags=re.S)
    assert n == launches, f"expected the {launches} launches of {name}, rewrote {n}"
    path = build / (Path(name).stem + "_emulated.cpp")
    if not path.exists() or path.read_text() != out:
        path.write_text(out)
    return path


@functools.lru_cache(maxsize=None)
def emulated_ops():
    """torch.ops.fused_lstm_emulated, built on first use."""
    from torch.utils.cpp_extension import load

    build = Path(tempfile.gettempdir()) / "fused_lstm_cuda_emulation"
    build.mkdir(exist_ok=True)
    cuda = CSRC / "cuda"
    sources = [emulated_kernels_source(build, name, n) for name, n in KERNEL_FILES.items()]
    sources += [cuda / "lstm_cuda_forward_loop.cpp", cuda / "lstm_cuda_backward_loop.cpp",
                cuda / "lstm_cuda_forward.cpp", cuda / "lstm_cuda_backward.cpp",
                cuda / "cuda_plan.cpp", cuda / "cuda_tuning.cpp", cuda / "variant_cuda_loops.cpp",
                cuda / "variant_cuda_impl.cpp", CSRC / "lstm_variant_args.cpp",
                CSRC / "lstm_layer_args.cpp", CSRC / "lstm_layer_directions.cpp",
                HERE / "emulated_blas.cpp", HERE / "emulated_persistent.cpp",
                HERE / "emulated_layer_op.cpp", HERE / "emulated_variant_op.cpp"]
    load(name="fused_lstm_cuda_emulation", sources=[str(s) for s in sources],
         extra_include_paths=[str(HERE), str(cuda), str(CSRC)],
         extra_cflags=["-O1", "-std=c++20"], build_directory=str(build),
         is_python_module=False, verbose=False)
    return torch.ops.fused_lstm_emulated
