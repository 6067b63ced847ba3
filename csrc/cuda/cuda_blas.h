// cuBLAS on raw row-major buffers, for the CUDA time loops: the per-step products and sums
// (no dispatcher, no tensor objects: they would cost more host time than an LSTM step's
// GEMM takes on the GPU). Torch-free; the build links libcublas (setup.py), the same
// library libtorch_cuda loads. Each call is queued on the stream `handle` is bound to and
// returns cuBLAS's status.
#pragma once

#include <cublas_v2.h>

#include <cstdint>

namespace fused_lstm::cuda {

// C[m, n] (ld ldc) = A[m, k] (ld lda) @ op(B) + beta * C. op(B) = B^T for B: [n, k]
// (ld ldb) when b_rows_are_n, else B: [k, n]. float and double. The float32 math mode is
// the handle's (ATen's handle for the current stream follows
// torch.backends.cuda.matmul.allow_tf32, as at::mm does). m == 0 or n == 0 does nothing.
template <typename T>
cublasStatus_t gemm_rows(cublasHandle_t handle, int64_t m, int64_t n, int64_t k, const T* A,
                         int64_t lda, const T* B, int64_t ldb, bool b_rows_are_n, T beta, T* C,
                         int64_t ldc);

// C[m, n] (ld ldc) = A[m, n] (ld lda) + B[m, n] (ld ldb), element by element (cuBLAS's
// geam). float and double. m == 0 or n == 0 does nothing.
template <typename T>
cublasStatus_t add_rows(cublasHandle_t handle, int64_t m, int64_t n, const T* A, int64_t lda,
                        const T* B, int64_t ldb, T* C, int64_t ldc);

// C[m, n] float32 (ld ldc) = A[m, k] @ op(B) + beta * C with A and B 16-bit (bfloat16 when
// bf16, else float16), on tensor cores with float32 sums (CUBLAS_COMPUTE_32F); op(B) and the
// rest as gemm_rows. m == 0 or n == 0 does nothing.
cublasStatus_t gemm_rows_16bit(cublasHandle_t handle, bool bf16, int64_t m, int64_t n,
                               int64_t k, const void* A, int64_t lda, const void* B,
                               int64_t ldb, bool b_rows_are_n, float beta, float* C,
                               int64_t ldc);

// The instantiations, for float and double: FUSED_LSTM_CUDA_BLAS_INSTANCES() in the file
// that defines the templates (cuda_blas.cpp, and the CPU emulation's emulated_blas.cpp).
#define FUSED_LSTM_CUDA_BLAS_INSTANCES_OF(T)                                                \
  template cublasStatus_t gemm_rows<T>(cublasHandle_t, int64_t, int64_t, int64_t, const T*, \
                                       int64_t, const T*, int64_t, bool, T, T*, int64_t);  \
  template cublasStatus_t add_rows<T>(cublasHandle_t, int64_t, int64_t, const T*, int64_t,  \
                                      const T*, int64_t, T*, int64_t);
#define FUSED_LSTM_CUDA_BLAS_INSTANCES()       \
  FUSED_LSTM_CUDA_BLAS_INSTANCES_OF(float)     \
  FUSED_LSTM_CUDA_BLAS_INSTANCES_OF(double)

}  // namespace fused_lstm::cuda
