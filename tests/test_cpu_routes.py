"""The CPU kernels' other routes, each in a fresh process (the choice is made once per process).

By default float32 GEMMs run on oneDNN's BRGEMM microkernel, float64 and bfloat16 on
our AVX-512 tiles, and the pointwise kernels at ATen's instruction set. The
alternatives are what other CPUs (or the switches README names) get: the BLAS for
every GEMM, bfloat16 in float32, and the AVX2 and baseline pointwise kernels. Each
must pass the parity and bfloat16 suites.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fused_lstm

pytestmark = pytest.mark.skipif(not fused_lstm.extension_loaded(),
                                reason="compiled extension not built")

TESTS = Path(__file__).parent
ROUTES = {
    "blas": {"FUSED_LSTM_CPU_GEMM": "blas"},
    "bf16-in-float32": {"FUSED_LSTM_CPU_BF16": "0"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "baseline": {"ATEN_CPU_CAPABILITY": "default", "FUSED_LSTM_CPU_BF16": "0"},
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_parity_on_route(route):
    env = dict(os.environ, **ROUTES[route])
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           str(TESTS / "test_parity.py"), str(TESTS / "test_bfloat16.py")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                          cwd=str(TESTS.parent))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
