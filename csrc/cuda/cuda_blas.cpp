#include "cuda_blas.h"

#include <dlfcn.h>

namespace fused_lstm::cuda {

namespace {

// cuBLAS's own GEMM entry points, found in the libcublas that libtorch_cuda
// loaded (ATen's typed wrappers around them are not exported). Null where they
// cannot be found; the per-step GEMMs then go through ATen.
void* cublas_symbol(const char* name) {
  if (void* p = dlsym(RTLD_DEFAULT, name)) return p;
  // libcublas came in as a dependency of libtorch_cuda, maybe with local scope:
  // ask the loaded copy itself (RTLD_NOLOAD never loads a second one).
  for (const char* lib : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
    if (void* handle = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD)) {
      if (void* p = dlsym(handle, name)) return p;
    }
  }
  return nullptr;
}
using SgemmFn = decltype(&cublasSgemm_v2);
using DgemmFn = decltype(&cublasDgemm_v2);
const SgemmFn cublas_sgemm = reinterpret_cast<SgemmFn>(cublas_symbol("cublasSgemm_v2"));
const DgemmFn cublas_dgemm = reinterpret_cast<DgemmFn>(cublas_symbol("cublasDgemm_v2"));

cublasStatus_t cublas_gemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb,
                           int m, int n, int k, const float* alpha, const float* A, int lda,
                           const float* B, int ldb, const float* beta, float* C, int ldc) {
  return cublas_sgemm(handle, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
cublasStatus_t cublas_gemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb,
                           int m, int n, int k, const double* alpha, const double* A, int lda,
                           const double* B, int ldb, const double* beta, double* C, int ldc) {
  return cublas_dgemm(handle, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace

bool cublas_gemm_found() { return cublas_sgemm != nullptr && cublas_dgemm != nullptr; }

template <typename T>
void gemm_rows(cublasHandle_t handle, int64_t m, int64_t n, int64_t k, const T* A, int64_t lda,
               const T* B, int64_t ldb, bool b_rows_are_n, T beta, T* C, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const T one = 1;
  // cuBLAS is column-major: C^T [n, m] = op(B)^T [n, k] @ A^T [k, m].
  const cublasStatus_t status = cublas_gemm(
      handle, b_rows_are_n ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n),
      static_cast<int>(m), static_cast<int>(k), &one, B, static_cast<int>(ldb), A,
      static_cast<int>(lda), &beta, C, static_cast<int>(ldc));
  TORCH_CHECK(status == CUBLAS_STATUS_SUCCESS, "fused_lstm: cuBLAS GEMM failed with status ",
              static_cast<int>(status));
}

template void gemm_rows<float>(cublasHandle_t, int64_t, int64_t, int64_t, const float*, int64_t,
                               const float*, int64_t, bool, float, float*, int64_t);
template void gemm_rows<double>(cublasHandle_t, int64_t, int64_t, int64_t, const double*,
                                int64_t, const double*, int64_t, bool, double, double*, int64_t);

}  // namespace fused_lstm::cuda
