#!/usr/bin/env bash
# The GPU checks in one command, for a machine with an NVIDIA GPU, nvcc and a CUDA
# build of torch (no network needed): build the extension in place, run every CUDA
# test, then the GPU benchmark and the variants benchmark with the variant op's CUDA
# kernels on (FUSED_LSTM_CUDA_VARIANT_OP=1). Logs and the results files go to OUT.
#
#   bash .ci/cuda_check.sh [OUT]     # OUT defaults to cuda_check
#
# It runs from the repository root (the folder above .ci/), wherever it is called from,
# so a relative OUT is taken from the root.
#
# Each stage has a time limit, so one stuck stage cannot eat the rest. Exit status:
# that of the first stage that failed (0 when all passed).
set -uo pipefail
cd "$(dirname "$0")/.."
out="$(mkdir -p "${1:-cuda_check}" && cd "${1:-cuda_check}" && pwd)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
python="${PYTHON:-python3}"
status=0
start=$(date +%s)
stage() { echo "=== [$(( $(date +%s) - start ))s] $*" | tee -a "$out/log.txt"; }
run() {  # run LIMIT_SECONDS CMD...: log everything, remember the first failure
  local limit=$1; shift
  timeout "$limit" "$@" >>"$out/log.txt" 2>&1
  local rc=$?
  [ "$rc" -ne 0 ] && [ "$status" -eq 0 ] && status=$rc
  return "$rc"
}

stage "build (setup.py build_ext --inplace; log in build.log)"
if ! timeout 900 "$python" setup.py build_ext --inplace >"$out/build.log" 2>&1; then
  grep -n -A8 "error" "$out/build.log" | head -60 | tee -a "$out/log.txt"
  stage "build failed"
  exit 1
fi
run 60 "$python" -m fused_lstm
run 30 "$python" -c "import fused_lstm; assert fused_lstm.cuda_available(), 'no CUDA kernels'" \
  || { stage "the build holds no CUDA kernels"; exit 1; }

stage "tests/test_cuda.py"
run 900 "$python" -m pytest tests/test_cuda.py -q -p no:cacheprovider --tb=short -rfE
stage "CUDA variants of the other test files (the variant op's CUDA kernels in test_variants.py)"
run 600 "$python" -m pytest tests -q -p no:cacheprovider --tb=short -rfE -k cuda \
  --ignore=tests/test_cuda.py
stage "benchmark"
run 1200 "$python" -m fused_lstm.bench --device cuda --out "$out"
stage "variants benchmark, the variant op's CUDA kernels on"
run 1200 env FUSED_LSTM_CUDA_VARIANT_OP=1 "$python" -m fused_lstm.bench.variants --device cuda \
  --out "$out"
stage "done (status $status)"
tail -n 4 "$out/log.txt"
exit "$status"
