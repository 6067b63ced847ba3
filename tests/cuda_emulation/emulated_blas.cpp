// csrc/cuda/cuda_blas.h's routines for the CPU emulation of the CUDA code: the same
// row-major contracts as cuBLAS's calls there, on host memory, each element's sum in double
// in order of k (the emulation checks the loops' indexing, not cuBLAS's rounding).
#include "../../csrc/cuda/cuda_blas.h"

namespace fused_lstm::cuda {

template <typename T>
cublasStatus_t gemm_rows(cublasHandle_t, int64_t m, int64_t n, int64_t k, const T* A,
                         int64_t lda, const T* B, int64_t ldb, bool b_rows_are_n, T beta, T* C,
                         int64_t ldc) {
  if (beta != T(0) && beta != T(1)) return CUBLAS_STATUS_INVALID_VALUE;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0;
      for (int64_t p = 0; p < k; ++p) {
        const T b = b_rows_are_n ? B[j * ldb + p] : B[p * ldb + j];
        sum += static_cast<double>(A[i * lda + p]) * static_cast<double>(b);
      }
      T* c = C + i * ldc + j;
      *c = beta == T(0) ? static_cast<T>(sum) : static_cast<T>(static_cast<double>(*c) + sum);
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

template <typename T>
cublasStatus_t add_rows(cublasHandle_t, int64_t m, int64_t n, const T* A, int64_t lda,
                        const T* B, int64_t ldb, T* C, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) C[i * ldc + j] = A[i * lda + j] + B[i * ldb + j];
  }
  return CUBLAS_STATUS_SUCCESS;
}

FUSED_LSTM_CUDA_BLAS_INSTANCES()

}  // namespace fused_lstm::cuda
