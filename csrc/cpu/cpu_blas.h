// Row-major GEMM on raw pointers for the CPU time loop.
//
//   C[M, N] = alpha * op(A)[M, K] @ op(B)[K, N] + beta * C
//
// Calls the BLAS that libtorch itself links (MKL's sgemm_/dgemm_, found once at
// load time), so a per-step GEMM costs no dispatcher round trip. Where that
// symbol is absent or a size does not fit a BLAS int, it falls back to
// at::addmm_out on tensors wrapping the same memory.
#pragma once

#include <cstdint>

namespace fused_lstm::cpu {

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// Which GEMM route is in use ("blas" or "aten"), for diagnostics.
const char* gemm_backend();

}  // namespace fused_lstm::cpu
