"""`python -m fused_lstm` reports the build; `pip wheel` builds a wheel holding the kernels."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import fused_lstm

ROOT = Path(__file__).resolve().parents[1]


def run_python(*args, cwd=None, env=None, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def fields(text):
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


@pytest.mark.parametrize("module", ["fused_lstm", "fused_lstm.info"])
def test_python_m_fused_lstm_reports_the_build(module, tmp_path):
    res = run_python("-m", module, cwd=tmp_path)  # away from the source tree
    assert res.returncode == 0, res.stderr
    f = fields(res.stdout)
    assert f["fused_lstm"].startswith(fused_lstm.__version__ + " (")
    assert f["torch"] == torch.__version__
    assert f["torch built with CUDA"] == (torch.version.cuda or "no (CPU-only torch)")
    loaded = fused_lstm.extension_loaded()
    assert f["compiled CPU kernels"].startswith("yes" if loaded else "no")
    assert f["CUDA kernels in build"] == ("yes" if fused_lstm.cuda_available() else "no")
    assert f["GPU visible"].startswith("yes" if torch.cuda.is_available() else "no")
    assert f["CPU vector ISA (ATen)"] == torch.backends.cpu.get_cpu_capability()
    assert int(f["OpenMP threads"]) >= 1
    if loaded:
        ext = Path(f["extension file"])
        assert ext.name.startswith("_C") and ext.exists()
        assert ext.parent == Path(fused_lstm.__file__).parent


def test_json_output():
    res = run_python("-m", "fused_lstm", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["fused_lstm"] == fused_lstm.__version__
    assert info["torch"] == torch.__version__
    assert info["cpu_kernels"] is fused_lstm.extension_loaded()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(info["num_threads"], int) and info["num_threads"] >= 1


def test_reports_the_fallback_reason():
    """With the compiled module unloadable, the report says so and why."""
    code = ("import sys, runpy, warnings; warnings.simplefilter('ignore'); "
            "sys.modules['fused_lstm._C'] = None; "  # makes `from fused_lstm import _C` fail
            "runpy.run_module('fused_lstm', run_name='__main__')")
    res = run_python("-c", code)
    assert res.returncode == 0, res.stderr
    f = fields(res.stdout)
    assert f["compiled CPU kernels"].startswith("no, using the slow plain-PyTorch reference")
    assert "fused_lstm._C" in f["compiled CPU kernels"]  # the reason: load_error's text
    assert f["CUDA kernels in build"] == "no"


def _source_files():
    """The files a checkout holds: tracked ones plus untracked ones git does not ignore."""
    try:
        res = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, text=True, check=True)
        files = [f for f in res.stdout.splitlines() if (ROOT / f).is_file()]
        if files:
            return files
    except (OSError, subprocess.CalledProcessError):
        pass
    skip = {".git", "build", "dist", "__pycache__", ".pytest_cache", ".benchmarks"}
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.endswith(".egg-info")]
        for name in filenames:
            if not name.endswith((".so", ".o", ".pyc")):
                files.append(os.path.relpath(os.path.join(dirpath, name), ROOT))
    return files


def test_pip_wheel_holds_the_compiled_kernels(tmp_path):
    """A real C++ build (about a minute on 2 cores). It runs on a copy of the source tree, so
    the checkout's build/ folder and in-place extension are left alone, and the .so in the
    wheel can only have come from this build."""
    src = tmp_path / "src"
    for rel in _source_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    assert not list((src / "fused_lstm").glob("_C*.so"))
    wheels = tmp_path / "wheels"
    env = dict(os.environ, MAX_JOBS="2", FUSED_LSTM_FORCE_CUDA="0")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation",
                          "--no-deps", "-w", str(wheels), "."], cwd=src, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    built = list(wheels.glob("fused_lstm-*.whl"))
    assert len(built) == 1, list(wheels.iterdir())
    with zipfile.ZipFile(built[0]) as zf:
        names = zf.namelist()
    assert [n for n in names if n.startswith("fused_lstm/_C") and n.endswith(".so")], names
    for py in ("__init__.py", "__main__.py", "info.py", "module.py", "ops.py"):
        assert f"fused_lstm/{py}" in names

    # The wheel's own extension loads against this torch, outside the source tree.
    site = tmp_path / "site"
    with zipfile.ZipFile(built[0]) as zf:
        zf.extractall(site)
    env = dict(os.environ, PYTHONPATH=str(site))
    res = run_python("-m", "fused_lstm", "--json", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["cpu_kernels"] is True, info["fallback_reason"]
    assert info["cuda_kernels"] is False
    assert Path(info["extension_file"]).parent == site / "fused_lstm"
