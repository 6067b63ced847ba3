// A stand-in for <cublas_v2.h> in the CPU emulation of the CUDA code (cuda_runtime.h beside
// this file): the handle and status types only. The GEMMs themselves are emulated_blas.cpp's.
#pragma once

struct cublasContext;
using cublasHandle_t = cublasContext*;
enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7 };
