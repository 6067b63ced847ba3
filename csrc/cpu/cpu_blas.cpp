#include "cpu_blas.h"

#include <ATen/ATen.h>
#include <dlfcn.h>

#include <climits>

namespace fused_lstm::cpu {

namespace {

// Fortran BLAS interface (column-major, 32-bit integers: MKL LP64).
template <typename T>
using FortranGemm = void (*)(const char*, const char*, const int*, const int*, const int*,
                             const T*, const T*, const int*, const T*, const int*, const T*,
                             T*, const int*);

template <typename T>
FortranGemm<T> find_blas(const char* name) {
  // RTLD_DEFAULT sees libtorch_cpu's exports: torch is loaded before this library.
  return reinterpret_cast<FortranGemm<T>>(dlsym(RTLD_DEFAULT, name));
}

const FortranGemm<float> sgemm = find_blas<float>("sgemm_");
const FortranGemm<double> dgemm = find_blas<double>("dgemm_");

template <typename T> FortranGemm<T> blas();
template <> FortranGemm<float> blas<float>() { return sgemm; }
template <> FortranGemm<double> blas<double>() { return dgemm; }

bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

// View raw row-major memory [rows, cols] with leading dimension ld as a tensor.
template <typename T>
at::Tensor wrap(const T* p, int64_t rows, int64_t cols, int64_t ld) {
  return at::from_blob(const_cast<T*>(p), {rows, cols}, {ld, 1},
                       at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

}  // namespace

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const auto f = blas<T>();
  if (K == 0 || !f || !fits_int(M) || !fits_int(N) || !fits_int(K) || !fits_int(lda) ||
      !fits_int(ldb) || !fits_int(ldc)) {
    at::Tensor a = trans_a ? wrap(A, K, M, lda).t() : wrap(A, M, K, lda);
    at::Tensor b = trans_b ? wrap(B, N, K, ldb).t() : wrap(B, K, N, ldb);
    at::Tensor c = wrap<T>(C, M, N, ldc);
    if (beta == T(0)) c.zero_();
    at::Tensor out = at::empty_like(c);
    at::addmm_out(out, c, a, b, beta, alpha);
    c.copy_(out);
    return;
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
  const char ta = trans_b ? 'T' : 'N';
  const char tb = trans_a ? 'T' : 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  f(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

const char* gemm_backend() { return (sgemm && dgemm) ? "blas" : "aten"; }

}  // namespace fused_lstm::cpu
