#!/usr/bin/env bash
# Builds, links and imports the whole CUDA extension (kernels and binding) on a machine
# without a GPU: in a venv of its own, against a CUDA build of torch (2.14.1, CUDA 13;
# FUSED_LSTM_CUDA_TORCH overrides the requirement), with cuBLAS's headers from that
# torch's nvidia packages and its libcublas linked (setup.py). Nothing runs on a GPU here;
# this catches what a GPU machine's build would hit (the binding against ATen's CUDA
# headers, the link, missing symbols). First, the torch-free host code that calls cuBLAS
# is compiled with warnings as errors against those headers (compile_cuda.sh --host).
#
# Skipped, with the reason, where that torch cannot be installed or nvcc is missing.
# The build goes to a scratch folder: the checkout's own fused_lstm/_C*.so is untouched.
# Usage: bash .ci/build_cuda_extension.sh [VENV_DIR]   (default: a scratch folder)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
torch_req="${FUSED_LSTM_CUDA_TORCH:-torch==2.14.1}"
nvcc_bin="$(command -v nvcc || true)"
if [ -z "$nvcc_bin" ]; then
  echo "build_cuda_extension: nvcc not found; skipping the CUDA extension build."
  exit 0
fi
# The toolkit root is where the real nvcc lives; the one on the PATH may be a wrapper
# script (exec /path/to/bin/nvcc "$@"), whose own folder is not the toolkit's.
cuda_home="${CUDA_HOME:-}"
if [ -z "$cuda_home" ]; then
  real_nvcc="$(readlink -f "$nvcc_bin")"
  if head -c 2 "$real_nvcc" | grep -q '#!'; then
    real_nvcc="$(grep -o '/[^" ]*/bin/nvcc' "$real_nvcc" | head -n 1)"
  fi
  cuda_home="$(cd "$(dirname "$real_nvcc")/.." && pwd)"
fi
scratch="$(mktemp -d)"
venv="${1:-$scratch/venv}"
trap 'rm -rf "$scratch"' EXIT

if [ ! -x "$venv/bin/python" ]; then
  python -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import torch, sys; sys.exit(torch.version.cuda is None)" 2>/dev/null; then
  echo "build_cuda_extension: installing $torch_req (a CUDA build) into $venv"
  if ! "$venv/bin/pip" install -q "$torch_req" numpy ninja >"$scratch/pip.log" 2>&1; then
    tail -n 5 "$scratch/pip.log"
    echo "build_cuda_extension: $torch_req cannot be installed here; skipping the CUDA extension build."
    exit 0
  fi
fi
site="$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")"
cublas_include="$site/nvidia/cu13/include"
echo "build_cuda_extension: torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)'), CUDA_HOME=$cuda_home"

CUBLAS_INCLUDE="$cublas_include" bash "$root/.ci/compile_cuda.sh" --host

src="$scratch/src"
mkdir -p "$src"
# The sources as committed plus what is being changed, without the checkout's builds.
(cd "$root" && git ls-files -z --cached --others --exclude-standard | \
  xargs -0 -I{} cp --parents {} "$src" 2>/dev/null || true)
cd "$src"
FUSED_LSTM_FORCE_CUDA=1 CUDA_HOME="$cuda_home" CPATH="$cublas_include${CPATH:+:$CPATH}" \
  TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}" MAX_JOBS="${MAX_JOBS:-2}" \
  "$venv/bin/python" setup.py -q build_ext --inplace >"$scratch/build.log" 2>&1 || {
    tail -n 40 "$scratch/build.log"
    echo "build_cuda_extension: FAILED to build the CUDA extension" >&2
    exit 1
  }
# Import it: every symbol resolves, functions too (LD_BIND_NOW: cuBLAS's among them, which the
# build links), and the ops register for CUDA (no GPU needed).
LD_BIND_NOW=1 "$venv/bin/python" - <<'EOF'
import os
import torch
import fused_lstm
assert fused_lstm.extension_loaded(), "the CUDA build of fused_lstm._C did not load"
for name in ("lstm_layer_forward", "lstm_layer_backward", "lstm_variant_forward",
             "lstm_variant_backward"):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fused_lstm::{name}", "CUDA"), name
from fused_lstm import ops
# the variant op's CUDA kernels are in the build, and off unless FUSED_LSTM_CUDA_VARIANT_OP=1
assert ops._CUDA_VARIANT_KERNELS
assert ops._CUDA_VARIANT_OP is (os.environ.get("FUSED_LSTM_CUDA_VARIANT_OP") == "1")
print("build_cuda_extension: OK, the CUDA extension imports and registers its CUDA kernels "
      "(the layer op's and the variant op's)")
EOF
