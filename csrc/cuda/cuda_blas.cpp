#include "cuda_blas.h"

namespace fused_lstm::cuda {

namespace {

cublasStatus_t gemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m,
                    int n, int k, const float* alpha, const float* A, int lda, const float* B,
                    int ldb, const float* beta, float* C, int ldc) {
  return cublasSgemm(handle, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
cublasStatus_t gemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m,
                    int n, int k, const double* alpha, const double* A, int lda,
                    const double* B, int ldb, const double* beta, double* C, int ldc) {
  return cublasDgemm(handle, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
cublasStatus_t geam(cublasHandle_t handle, int m, int n, const float* alpha, const float* A,
                    int lda, const float* beta, const float* B, int ldb, float* C, int ldc) {
  return cublasSgeam(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, alpha, A, lda, beta, B, ldb, C,
                     ldc);
}
cublasStatus_t geam(cublasHandle_t handle, int m, int n, const double* alpha, const double* A,
                    int lda, const double* beta, const double* B, int ldb, double* C,
                    int ldc) {
  return cublasDgeam(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, alpha, A, lda, beta, B, ldb, C,
                     ldc);
}

}  // namespace

template <typename T>
cublasStatus_t gemm_rows(cublasHandle_t handle, int64_t m, int64_t n, int64_t k, const T* A,
                         int64_t lda, const T* B, int64_t ldb, bool b_rows_are_n, T beta, T* C,
                         int64_t ldc) {
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const T one = 1;
  // cuBLAS is column-major: C^T [n, m] = op(B)^T [n, k] @ A^T [k, m]. With k == 0 (C =
  // beta * C) a leading dimension of 0 would be refused: cuBLAS wants at least 1.
  const auto ld = [](int64_t v) { return static_cast<int>(v > 0 ? v : 1); };
  return gemm(handle, b_rows_are_n ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N,
              static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &one, B, ld(ldb), A,
              ld(lda), &beta, C, ld(ldc));
}

cublasStatus_t gemm_rows_16bit(cublasHandle_t handle, bool bf16, int64_t m, int64_t n,
                               int64_t k, const void* A, int64_t lda, const void* B,
                               int64_t ldb, bool b_rows_are_n, float beta, float* C,
                               int64_t ldc) {
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const float one = 1;
  const cudaDataType_t type = bf16 ? CUDA_R_16BF : CUDA_R_16F;
  const auto ld = [](int64_t v) { return static_cast<int>(v > 0 ? v : 1); };
  // Column-major, as gemm_rows: C^T [n, m] = op(B)^T [n, k] @ A^T [k, m].
  return cublasGemmEx(handle, b_rows_are_n ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N,
                      static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &one, B,
                      type, ld(ldb), A, type, ld(lda), &beta, C, CUDA_R_32F, ld(ldc),
                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

template <typename T>
cublasStatus_t add_rows(cublasHandle_t handle, int64_t m, int64_t n, const T* A, int64_t lda,
                        const T* B, int64_t ldb, T* C, int64_t ldc) {
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const T one = 1;
  // Column-major again: C^T [n, m] = A^T + B^T.
  return geam(handle, static_cast<int>(n), static_cast<int>(m), &one, A,
              static_cast<int>(lda), &one, B, static_cast<int>(ldb), C,
              static_cast<int>(ldc));
}

FUSED_LSTM_CUDA_BLAS_INSTANCES()

}  // namespace fused_lstm::cuda
