#!/usr/bin/env bash
# The GPU checks in one command, for a machine with an NVIDIA GPU, nvcc and a CUDA
# build of torch (no network needed): build the extension in place, run every CUDA
# test, the persistent route's timing (persistent_timing.jsonl), then the GPU benchmark.
# Logs and the results file go to OUT.
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
  timeout -k 10 "$limit" "$@" >>"$out/log.txt" 2>&1  # -k: SIGKILL if SIGTERM is not enough
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

# The persistent route has not run on a GPU yet, and a hung kernel is its main risk: a
# short smoke run first (where it hangs, nothing else of the route runs), then its tests
# and its timing, each in a process of its own under a short limit; the rest of the CUDA
# tests after.
stage "persistent route: smoke run (T=5 B=3 H=32)"
run 90 "$python" .ci/persistent_timing.py 5 3 32 "$out/persistent_timing.jsonl" --reps 3
smoke=$?
if [ "$smoke" -ne 124 ] && [ "$smoke" -ne 137 ]; then
  stage "persistent route: tests/test_cuda.py -k persistent"
  run 240 "$python" -m pytest tests/test_cuda.py -q -p no:cacheprovider --tb=short -rfE \
    -k persistent
  stage "persistent route: forward per step against the default route and cuDNN"
  for shape in "500 16 128" "500 16 256" "50 1 128" "100 8 256"; do
    # shellcheck disable=SC2086  # T B H as three words
    run 120 "$python" .ci/persistent_timing.py $shape "$out/persistent_timing.jsonl"
  done
else
  stage "persistent route: the smoke run hung; its tests and timing skipped"
fi
stage "tests/test_cuda.py (the rest)"
run 900 "$python" -m pytest tests/test_cuda.py -q -p no:cacheprovider --tb=short -rfE \
  -k "not persistent"
stage "CUDA variants of the other test files"
run 600 "$python" -m pytest tests -q -p no:cacheprovider --tb=short -rfE -k cuda \
  --ignore=tests/test_cuda.py
stage "benchmark"
run 1200 "$python" -m fused_lstm.bench --device cuda --out "$out"
stage "done (status $status)"
tail -n 4 "$out/log.txt"
exit "$status"
