// Row-major GEMMs on raw pointers for the CPU kernels.
//
//   gemm_nn:          C[M, N] (+)= A[M, K] @ B[K, N]                  one thread
//   parallel_gemm_nn: the same, split over the threads of at::parallel_for
//   parallel_gemm_tn: C[K, N] (+)= A[R, K]^T @ B[R, N]                split over threads
//
// float goes to the oneDNN BRGEMM microkernel libtorch exports
// (at::native::cpublas::brgemm): single-threaded and JIT-built for each shape,
// it reaches several times the rate of the BLAS at the skinny shapes of an LSTM
// step, and we do the threading. double goes to the BLAS libtorch links (MKL's
// dgemm_). Where neither is available, at::mm on tensors wrapping the memory.
#pragma once

#include <cstdint>

namespace fused_lstm::cpu {

template <typename T>
void gemm_nn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
             T* C, int64_t ldc, bool accumulate);

template <typename T>
void parallel_gemm_nn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                      int64_t ldb, T* C, int64_t ldc, bool accumulate);

template <typename T>
void parallel_gemm_tn(int64_t R, int64_t K, int64_t N, const T* A, int64_t lda, const T* B,
                      int64_t ldb, T* C, int64_t ldc, bool accumulate);

// Which GEMM routes are in use, for diagnostics ("brgemm+blas", ...).
const char* gemm_backend();

}  // namespace fused_lstm::cpu
