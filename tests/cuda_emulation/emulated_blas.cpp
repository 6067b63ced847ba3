// csrc/cuda/cuda_blas.h's routines for the CPU emulation of the CUDA code: the same
// row-major contracts as cuBLAS's calls there, on host memory, each element's sum in double
// in order of k (the emulation checks the loops' indexing, not cuBLAS's rounding); 16-bit
// operands are c10::Half / c10::BFloat16 (the stand-ins' __half / __nv_bfloat16).
#include "../../csrc/cuda/cuda_blas.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <atomic>

namespace {

// How many 16-bit GEMMs ran (fused_lstm_emulated::count_16bit_gemms), so that a test can
// tell the tensor-core path from the float32 one.
std::atomic<int64_t> gemms_16bit{0};

template <typename Half>
double value_16bit(const void* base, int64_t i) {
  return static_cast<double>(static_cast<float>(static_cast<const Half*>(base)[i]));
}

}  // namespace

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

cublasStatus_t gemm_rows_16bit(cublasHandle_t, bool bf16, int64_t m, int64_t n, int64_t k,
                               const void* A, int64_t lda, const void* B, int64_t ldb,
                               bool b_rows_are_n, float beta, float* C, int64_t ldc) {
  if (beta != 0.0f && beta != 1.0f) return CUBLAS_STATUS_INVALID_VALUE;
  const auto at = bf16 ? value_16bit<c10::BFloat16> : value_16bit<c10::Half>;
  ++gemms_16bit;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0;
      for (int64_t p = 0; p < k; ++p) {
        sum += at(A, i * lda + p) * at(B, b_rows_are_n ? j * ldb + p : p * ldb + j);
      }
      float* c = C + i * ldc + j;
      *c = beta == 0.0f ? static_cast<float>(sum) : static_cast<float>(*c + sum);
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

FUSED_LSTM_CUDA_BLAS_INSTANCES()

}  // namespace fused_lstm::cuda

TORCH_LIBRARY_FRAGMENT(fused_lstm_emulated, m) {
  m.def("count_16bit_gemms() -> int", [] { return gemms_16bit.load(); });
}
