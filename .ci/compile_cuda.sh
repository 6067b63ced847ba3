#!/usr/bin/env bash
# Compile-only check of the CUDA kernels: builds every csrc/cuda/*.cu for
# sm_80 and sm_90 with warnings as errors, and throws the objects away.
# The kernels include no torch headers, so this needs only the CUDA toolkit; so
# do the variant op's time loops (variant_cuda_loops.cpp, host code), built too.
# The layer op's time loops (lstm_cuda_*_loop.cpp, host code) call cuBLAS: they are
# built where CUBLAS_INCLUDE names a folder with cublas_v2.h (build_cuda_extension.sh
# passes torch's), or the toolkit has it. `--host` builds only the host code.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
nvcc="${NVCC:-nvcc}"

if ! command -v "$nvcc" >/dev/null 2>&1; then
  echo "compile_cuda: nvcc not found; skipping the CUDA compile check."
  exit 0
fi

echo "compile_cuda: $("$nvcc" --version | tail -n 1)"

shopt -s nullglob
sources=("$root"/csrc/cuda/*.cu)
if [ "${#sources[@]}" -eq 0 ]; then
  echo "compile_cuda: no .cu files under csrc/cuda"
  exit 0
fi

out_dir="$(mktemp -d)"
trap 'rm -rf "$out_dir"' EXIT

# The -D flags are the ones torch.utils.cpp_extension passes to nvcc, so the
# kernels must build without implicit half/bfloat16 conversions and operators.
flags=(
  -std=c++17
  -O2
  -gencode arch=compute_80,code=sm_80
  -gencode arch=compute_90,code=sm_90
  --Werror all-warnings
  -Xcompiler -Wall,-Wextra,-Werror,-fPIC
  -D__CUDA_NO_HALF_OPERATORS__
  -D__CUDA_NO_HALF_CONVERSIONS__
  -D__CUDA_NO_BFLOAT16_CONVERSIONS__
  -D__CUDA_NO_HALF2_OPERATORS__
  --expt-relaxed-constexpr
  -I "$root/csrc"
)

if [ "${1:-}" = "--host" ]; then
  sources=()
fi
for src in "${sources[@]}"; do
  rel="${src#"$root"/}"
  echo "compile_cuda: nvcc -c $rel (sm_80, sm_90)"
  "$nvcc" "${flags[@]}" -c "$src" -o "$out_dir/$(basename "$src").o"
done

# Host code without torch headers: compiled by nvcc's host compiler with the same
# warnings.
host_sources=("$root"/csrc/cuda/variant_cuda_loops.cpp)
host_flags=(-std=c++17 -O2 -Xcompiler -Wall,-Wextra,-Werror,-fPIC -I "$root/csrc")
toolkit_include="$(dirname "$(command -v "$nvcc")")/../include"
if [ -n "${CUBLAS_INCLUDE:-}" ] && [ -f "$CUBLAS_INCLUDE/cublas_v2.h" ]; then
  host_flags+=(-I "$CUBLAS_INCLUDE")
  host_sources+=("$root"/csrc/cuda/lstm_cuda_*_loop.cpp "$root"/csrc/cuda/cuda_blas.cpp)
elif [ -f "$toolkit_include/cublas_v2.h" ]; then
  host_sources+=("$root"/csrc/cuda/lstm_cuda_*_loop.cpp "$root"/csrc/cuda/cuda_blas.cpp)
else
  echo "compile_cuda: no cublas_v2.h (set CUBLAS_INCLUDE); the layer op's loops are left to" \
    "build_cuda_extension.sh"
fi
for src in "${host_sources[@]}"; do
  rel="${src#"$root"/}"
  echo "compile_cuda: nvcc -c $rel (host code)"
  "$nvcc" "${host_flags[@]}" -c "$src" -o "$out_dir/$(basename "$src").o"
done

echo "compile_cuda: OK (${#sources[@]} .cu file(s), ${#host_sources[@]} host file(s))"
