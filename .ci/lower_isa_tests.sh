#!/usr/bin/env bash
# Runs the CPU-path tests as on CPUs of a lower level than this one, so a CI machine
# with AVX-512 catches what an AVX2-only machine (or one without any vector ISA) would
# hit: once as AVX2 (no AVX-512, no AVX512_BF16), once at no vector ISA at all.
#
# ATEN_CPU_CAPABILITY caps ATen (and with it fused_lstm's vector kernels), and
# ONEDNN_MAX_CPU_ISA caps oneDNN (nn.LSTM's kernels, and the BRGEMM microkernel behind
# fused_lstm's float32 GEMMs; fused_lstm's own dispatch honours it too), so nn.LSTM,
# the reference of most tests, runs as on such a CPU as well. Each level gets an empty
# inductor cache: torch's cache keeps code generated for one vector width and would
# compile it for another.
#
# Left out, as they exercise no ISA-dependent kernel path beyond what the rest covers:
# test_packaging.py (builds wheels), test_cpu_routes.py (runs its own switches in
# subprocesses), test_cuda.py (GPU only), test_onnx_export.py (onnxruntime's kernels),
# test_pytorch_utilities.py (module-level Python), test_distributed.py (gloo),
# test_examples.py and test_bench_smoke.py (the scripts around the module).
# Usage: bash .ci/lower_isa_tests.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

run_level() {
  local aten="$1" onednn="$2"
  shift 2
  local cache
  cache="$(mktemp -d)"
  echo "lower_isa_tests: ATEN_CPU_CAPABILITY=$aten ONEDNN_MAX_CPU_ISA=$onednn"
  ATEN_CPU_CAPABILITY="$aten" ONEDNN_MAX_CPU_ISA="$onednn" TORCHINDUCTOR_CACHE_DIR="$cache" \
    python -c "import torch, fused_lstm; print('lower_isa_tests: kernels:', torch.ops.fused_lstm.cpu_kernels())"
  ATEN_CPU_CAPABILITY="$aten" ONEDNN_MAX_CPU_ISA="$onednn" TORCHINDUCTOR_CACHE_DIR="$cache" \
    python -m pytest tests -q -p no:cacheprovider \
      --ignore=tests/test_packaging.py --ignore=tests/test_cpu_routes.py \
      --ignore=tests/test_cuda.py --ignore=tests/test_onnx_export.py \
      --ignore=tests/test_pytorch_utilities.py --ignore=tests/test_distributed.py \
      --ignore=tests/test_examples.py --ignore=tests/test_bench_smoke.py "$@"
  rm -rf "$cache"
}

run_level avx2 AVX2 "$@"
run_level default SSE41 "$@"
