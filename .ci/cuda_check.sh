#!/usr/bin/env bash
# The GPU checks, for a machine with an NVIDIA GPU, nvcc and a CUDA build of torch (no
# network needed). A lent GPU gives about 15 minutes in all and at most 10 per command, so
# the checks come in three parts, each under a time budget, the routes that have never run
# on a GPU first:
#
#   bash .ci/cuda_check.sh OUT new    # build; the layer op's loops as moved on 2026-12-03
#                                     # (test_ops.py -k cuda: both step routes, gradcheck,
#                                     # opcheck) and the 16-bit GEMMs on tensor cores
#                                     # (FUSED_LSTM_CUDA_16BIT_GEMM=1, test_cuda.py -k
#                                     # 16bit-gemms); the persistent route (smoke run, tests,
#                                     # per-step timing); the variant op's CUDA kernels
#                                     # (tests, then the variants benchmark with them on)
#   bash .ci/cuda_check.sh OUT rest   # the rest of test_cuda.py, then the GPU benchmark
#   bash .ci/cuda_check.sh OUT more   # the CUDA cases of the other test files (~800), then
#                                     # the segments benchmark (lengths=, reset=, one step)
#   bash .ci/cuda_check.sh OUT        # all three, one after the other
#
# The build is kept in place between the parts (setup.py build_ext --inplace; a later
# call rebuilds nothing) as long as the machine is: call the next part as soon as one
# returns (a lent machine goes back after 30 s idle, and a fresh one rebuilds).
# CUDA_CHECK_BUDGET_S (default 540) bounds each call: every stage's time limit is cut to
# what is left, and a stage that no longer has 30 s is skipped and said so. Logs and
# results go to OUT (default cuda_check), relative to the repository root. Exit status: that of the first stage that failed (0 when all passed).
set -uo pipefail
cd "$(dirname "$0")/.."
out="$(mkdir -p "${1:-cuda_check}" && cd "${1:-cuda_check}" && pwd)"
part="${2:-all}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"  # the lent GPU is an H200
python="${PYTHON:-python3}"
budget="${CUDA_CHECK_BUDGET_S:-540}"
status=0
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
stage() { echo "=== [$(( $(date +%s) - start ))s] $*" | tee -a "$out/log.txt"; }
run() {  # run LIMIT_SECONDS CMD...: log everything, remember the first failure
  local limit=$1; shift
  local room; room=$(left)
  if [ "$room" -lt 30 ]; then
    stage "skipped for lack of time: $*"
    [ "$status" -eq 0 ] && status=124
    return 124
  fi
  [ "$limit" -gt "$room" ] && limit=$room
  # SIGINT at the limit, not SIGTERM: pytest then still prints its summary (the failures
  # so far, -rfE) and Python a traceback of where it was; -k: SIGKILL 10 s later (a hung
  # kernel). The status is 124 either way (137 after the SIGKILL).
  timeout -s INT -k 10 "$limit" "$@" >>"$out/log.txt" 2>&1
  local rc=$?
  [ "$rc" -ne 0 ] && [ "$status" -eq 0 ] && status=$rc
  return "$rc"
}
pytest_run() {  # pytest_run LIMIT ARGS...
  local limit=$1; shift
  run "$limit" "$python" -m pytest -q -p no:cacheprovider --tb=short -rfE "$@"
}

stage "build (setup.py build_ext --inplace, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST; log in build.log)"
if ! timeout "$(left)" "$python" setup.py build_ext --inplace >"$out/build.log" 2>&1; then
  grep -n -A8 "error" "$out/build.log" | head -60 | tee -a "$out/log.txt"
  stage "build failed"
  exit 1
fi
run 60 "$python" -m fused_lstm
run 30 "$python" -c "import fused_lstm; assert fused_lstm.cuda_available(), 'no CUDA kernels'" \
  || { stage "the build holds no CUDA kernels"; exit 1; }

if [ "$part" = "new" ] || [ "$part" = "all" ]; then
  # The layer op's time loops moved out of the ATen files into torch-free sources with
  # direct cuBLAS calls (benchmarks/NOTES.md, "The CUDA layer op's loops, torch-free"):
  # both step routes against the reference, gradcheck and opcheck, before anything else.
  stage "layer op, both step routes: tests/test_ops.py -k cuda"
  pytest_run 120 tests/test_ops.py -k cuda
  # float16/bfloat16 operands on tensor cores (FUSED_LSTM_CUDA_16BIT_GEMM=1, off by
  # default): their error against float64 next to cuDNN's.
  stage "16-bit GEMMs on tensor cores: tests/test_cuda.py -k 16bit-gemms"
  pytest_run 90 tests/test_cuda.py -k 16bit-gemms
  # Two things have never run on a GPU: the persistent route and the variant op's CUDA
  # kernels. Correctness of both first, then their timings. A hung kernel is the persistent
  # route's main risk: a short smoke run first (where it hangs, nothing else of the route
  # runs), and every part in a process of its own under a short limit.
  stage "persistent route: smoke run (T=5 B=3 H=32)"
  run 90 "$python" .ci/persistent_timing.py 5 3 32 "$out/persistent_timing.jsonl" --reps 3
  smoke=$?
  persistent_ok=0
  if [ "$smoke" -ne 124 ] && [ "$smoke" -ne 137 ]; then
    persistent_ok=1
    stage "persistent route: tests/test_cuda.py -k persistent"
    pytest_run 180 tests/test_cuda.py -k persistent
  else
    stage "persistent route: the smoke run hung; its tests and timing skipped"
  fi
  # The variant op's tests turn FUSED_LSTM_CUDA_VARIANT_OP on for themselves.
  stage "variant op on CUDA: tests/test_variants.py -k cuda"
  pytest_run 180 tests/test_variants.py -k cuda
  if [ "$persistent_ok" -eq 1 ]; then
    stage "persistent route: forward per step against the default route and cuDNN"
    for shape in "500 16 128" "500 16 256" "50 1 128" "100 8 256"; do
      # shellcheck disable=SC2086  # T B H as three words
      run 60 "$python" .ci/persistent_timing.py $shape "$out/persistent_timing.jsonl"
    done
  fi
  stage "variants benchmark, the variant op's CUDA kernels on"
  run 150 env FUSED_LSTM_CUDA_VARIANT_OP=1 "$python" -m fused_lstm.bench.variants --device cuda \
    --reps 5 --out "$out"
fi

if [ "$part" = "rest" ] || [ "$part" = "all" ]; then
  stage "tests/test_cuda.py (the rest)"
  pytest_run 200 tests/test_cuda.py -k "not persistent"
  stage "benchmark"
  run 300 "$python" -m fused_lstm.bench --device cuda --out "$out"
fi

if [ "$part" = "more" ] || [ "$part" = "all" ]; then
  # About 800 CUDA cases of the CPU-side test files (parity, gradchecks, edges, segments):
  # what ran on the GPU before, again.
  stage "CUDA variants of the other test files"
  pytest_run 420 tests -k cuda --ignore=tests/test_cuda.py --ignore=tests/test_variants.py
  # lengths=, reset= and one-step calls against the ways users run them today, on the GPU
  stage "segments benchmark (lengths=, reset=, one-step calls)"
  run 100 "$python" -m fused_lstm.bench.segments --device cuda --reps 5
fi
stage "done (status $status)"
tail -n 4 "$out/log.txt"
exit "$status"
