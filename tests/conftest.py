"""Fixtures the test files share: the device a test runs on, CUDA's routes, CPU threads.

A test that takes `device` runs once on the CPU and once on CUDA (skipped without a GPU,
or without the CUDA kernels in the build); one that takes `routed_device` runs on the
CPU and on each route of CUDA's time loop (fused step kernels, or a cuBLAS GEMM per
step: csrc/cuda/cuda_plan.cpp), forced through FUSED_LSTM_CUDA_STEP. Tests that compare
numbers take `routed_device`; tests of shapes, errors and bookkeeping take `device`.
The test ids name the device ("cpu", "cuda", "cuda-fused", "cuda-gemm"), so
`pytest -k cuda` selects every CUDA case.
"""

import pytest
import torch

import fused_lstm

CUDA_READY = torch.cuda.is_available() and fused_lstm.cuda_available()
needs_cuda = pytest.mark.skipif(
    not CUDA_READY, reason="no CUDA device, or fused_lstm built without its CUDA kernels")

CUDA_ROUTES = ["fused", "gemm"]


# session scope: hypothesis tests take it too, and they refuse function-scoped fixtures
@pytest.fixture(scope="session", params=["cpu", pytest.param("cuda", marks=needs_cuda)])
def device(request):
    return request.param


def force_cuda_route(route, monkeypatch):
    """CUDA's time loop on `route` for one test, and full float32 GEMMs on both sides
    (no TF32 in cuBLAS or cuDNN), all restored afterwards."""
    monkeypatch.setenv("FUSED_LSTM_CUDA_STEP", route)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


@pytest.fixture(params=["cpu"] + [pytest.param(f"cuda-{route}", marks=needs_cuda)
                                  for route in CUDA_ROUTES])
def routed_device(request, monkeypatch):
    """"cpu" or "cuda", with CUDA's time loop forced onto one route for the test."""
    device, _, route = request.param.partition("-")
    if route:
        force_cuda_route(route, monkeypatch)
    return device


@pytest.fixture(params=CUDA_ROUTES)
def cuda_route(request, monkeypatch):
    """For tests of CUDA alone (test_cuda.py): each route in turn."""
    force_cuda_route(request.param, monkeypatch)
    return request.param


@pytest.fixture(scope="module")
def one_intra_op_thread():
    """For files of tiny shapes: one intra-op thread is faster there (much faster on a
    busy machine). Use as `pytestmark = pytest.mark.usefixtures("one_intra_op_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
