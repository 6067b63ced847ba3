// cuBLAS's GEMMs for the CUDA binding, called straight on raw pointers: the per-step
// products of the time loops (no dispatcher, no tensor objects: they would cost more host
// time than an LSTM step's GEMM takes on the GPU).
#pragma once

#include <ATen/cuda/CUDAContext.h>

#include <cstdint>

namespace fused_lstm::cuda {

// Whether cuBLAS's GEMM entry points were found in the libcublas libtorch_cuda loaded
// (without them the per-step GEMMs go through ATen: StepRoute::aten).
bool cublas_gemm_found();

// Row-major C[m, n] (ld ldc) = A[m, k] (ld lda) @ op(B) + beta * C, on `handle` (ATen's
// handle for the current stream, whose float32 math mode follows
// torch.backends.cuda.matmul.allow_tf32, as at::mm does). op(B) = B^T for B: [n, k]
// (ld ldb) when b_rows_are_n, else B: [k, n]. float and double; call only where
// cublas_gemm_found().
template <typename T>
void gemm_rows(cublasHandle_t handle, int64_t m, int64_t n, int64_t k, const T* A, int64_t lda,
               const T* B, int64_t ldb, bool b_rows_are_n, T beta, T* C, int64_t ldc);

}  // namespace fused_lstm::cuda
