"""The CPU kernels' switchable routes, each in a fresh process (the choice is made once per process).

By default float32 GEMMs run on oneDNN's BRGEMM microkernel, float64 on our own tiles,
and bfloat16 on the microkernel's AMX tiles where the CPU has them, else on our own
tiles. The switches README names give the alternatives: the BLAS for every GEMM,
bfloat16 in float32, bfloat16 on our own tiles on an AMX CPU, and one-step calls split
by hidden units at every batch size or never. Each must pass the parity, threaded-route
and bfloat16 suites.
(The lower instruction sets, AVX2-only and none, are run by .ci/lower_isa_tests.sh over
the whole CPU suite.)
"""

import functools
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
    # on CPUs with AMX, bfloat16 runs on AMX tiles by default; this is the other kernel
    "bf16-own-tiles": {"FUSED_LSTM_CPU_AMX": "0"},
    # one-step calls: split by hidden units (tasks of 16) at every batch size, or never
    "one-step-by-units": {"FUSED_LSTM_CPU_UNIT_STEP": "16"},
    "one-step-aten-gemms": {"FUSED_LSTM_CPU_UNIT_STEP": "0"},
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_parity_on_route(route):
    if route == "bf16-own-tiles" and "AMX: yes" not in kernels_under():
        pytest.skip("no AMX on this CPU: the default route is this one")
    env = dict(os.environ, **ROUTES[route])
    # the parity grid, the threaded routes at their hand-picked sizes, and bfloat16
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           str(TESTS / "test_parity.py"), str(TESTS / "test_bfloat16.py"),
           str(TESTS / "test_threaded_routes.py"), "-k", "not drawn"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                          cwd=str(TESTS.parent))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


@functools.lru_cache(maxsize=None)
def kernels_under(env_items=()):
    """What the kernels report (torch.ops.fused_lstm.cpu_kernels) in a process with the
    environment variables of env_items ((name, value) pairs) added."""
    env = dict(env_items)
    code = "import torch, fused_lstm; print(torch.ops.fused_lstm.cpu_kernels())"
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize("env, isa", [
    ({"ATEN_CPU_CAPABILITY": "avx2"}, "AVX2;"),
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "AVX2;"),
    ({"ONEDNN_MAX_CPU_ISA": "avx2_vnni"}, "AVX2;"),
    ({"ATEN_CPU_CAPABILITY": "default"}, "baseline"),
    ({"ONEDNN_MAX_CPU_ISA": "SSE41"}, "baseline"),
], ids=["aten-avx2", "onednn-avx2", "onednn-avx2-lowercase", "aten-default", "onednn-sse41"])
def test_dispatch_honours_isa_caps(env, isa):
    """Both ISA caps reach our own kernel choice: nothing above the cap runs, so a run
    capped at AVX2 on an AVX-512 machine is what an AVX2-only machine runs."""
    uncapped = kernels_under()
    if uncapped.startswith("baseline") and isa != "baseline":
        pytest.skip(f"this CPU has no {isa.rstrip(';')} to cap at")
    if uncapped.startswith("AVX2;") and isa == "AVX2;":
        pytest.skip("this CPU is AVX2-only already")  # the cap then changes nothing
    got = kernels_under(tuple(env.items()))
    assert got.startswith(isa), got
    assert "bfloat16 GEMMs: in float32" in got, got  # AVX512_BF16 is above every such cap
    if isa == "baseline":
        assert "float32 GEMMs: BLAS" in got and "float64 GEMMs: BLAS" in got, got
    else:
        assert "float32 GEMMs: oneDNN BRGEMM" in got and "own AVX2 tiles" in got, got


def test_onednn_bf16_cap():
    """ONEDNN_MAX_CPU_ISA=AVX512_CORE keeps AVX-512 but not AVX512_BF16."""
    if "CPU has AVX512_BF16: yes" not in kernels_under():
        pytest.skip("this CPU has no AVX512_BF16")
    if not kernels_under().startswith("AVX512;"):
        pytest.skip("ATen does not run AVX-512 here")
    got = kernels_under((("ONEDNN_MAX_CPU_ISA", "AVX512_CORE"),))
    assert got.startswith("AVX512;") and "bfloat16 GEMMs: in float32" in got, got
    got = kernels_under((("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16"),))
    assert "bfloat16 GEMMs: own AVX512_BF16 tiles" in got, got


def test_amx_route_and_its_caps():
    """bfloat16 on AMX tiles where the CPU has them, unless a cap or the switch says no."""
    if "AMX: yes" not in kernels_under() or not kernels_under().startswith("AVX512;"):
        pytest.skip("this CPU has no AMX, or ATen does not run AVX-512 here")
    amx = "bfloat16 GEMMs: oneDNN BRGEMM on AMX tiles"
    assert amx in kernels_under()
    assert amx in kernels_under((("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX"),))
    for env in [("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16"), ("FUSED_LSTM_CPU_AMX", "0")]:
        got = kernels_under((env,))
        assert "bfloat16 GEMMs: own AVX512_BF16 tiles" in got, (env, got)


@pytest.mark.parametrize("value", ["abc", "-3", "99999999999", "1.5"])
def test_a_unit_step_switch_not_understood_is_named_and_ignored(value):
    """FUSED_LSTM_CPU_UNIT_STEP takes a whole number of units; anything else warns, naming
    the value, and leaves the plan's choice (a one-step call still runs, and right)."""
    code = ("import torch, fused_lstm\n"
            "m = fused_lstm.FusedLSTM(5, 20); ref = m.to_lstm()\n"
            "x = torch.randn(1, 16, 5)\n"
            "torch.testing.assert_close(m(x)[0], ref(x)[0], rtol=1e-5, atol=1e-6)\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code],
                          env=dict(os.environ, FUSED_LSTM_CPU_UNIT_STEP=value),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
    assert "FUSED_LSTM_CPU_UNIT_STEP must be a whole number" in done.stderr
    assert f"got '{value}'" in done.stderr
