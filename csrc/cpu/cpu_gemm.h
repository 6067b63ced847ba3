// Row-major GEMMs on raw pointers for the CPU kernels.
//
//   gemm_nn:          C[M, N] (+)= A[M, K] @ B[K, N]                  one thread
//   parallel_gemm_nn: the same, split over the threads of at::parallel_for
//   gemm_nn_panels, parallel_gemm_nn_panels: the same with B in column panels
//   gemm_tn:          C[K, N] (+)= A[R, K]^T @ B[R, N]                one thread
//   parallel_gemm_tn: the same, split over the threads of at::parallel_for
//
// Operands (A, B) are of type In, C of type Acc<In>: float and double multiply
// and accumulate in their own type; bfloat16 operands accumulate in float.
//
// Which kernel runs each dtype is decided in cpu_tuning.cpp. float goes to the
// oneDNN BRGEMM microkernel libtorch exports (at::native::cpublas::brgemm):
// single-threaded and JIT-built for each shape, it reaches several times the
// rate of the BLAS at the skinny shapes of an LSTM step, and we do the
// threading. double goes to our AVX-512 or AVX2 tiles (gemm_kernels.h), or to
// the BLAS libtorch links (MKL's dgemm_) below AVX2. bfloat16 goes to the
// same microkernel on AMX tiles where the CPU has them (pair-packed B is its
// VNNI layout), else to our AVX512_BF16 kernel (gemm_kernels.h); callers check
// tuning().bf16_gemm first. Where the BLAS cannot take a shape,
// at::mm on tensors wrapping the memory. One-row products (batch 1) go to the
// GEMV of vector_kernels.h.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <type_traits>

#include "gemm_kernels.h"

namespace fused_lstm::cpu {

template <typename In>
using Acc = std::conditional_t<std::is_same_v<In, c10::BFloat16>, float, In>;

// In gemm_nn's B operand, bfloat16 is pair-packed (gemm_kernels.h): ldb counts
// words, and column n of B starts kColumnStride elements per column in.
template <typename In>
constexpr int64_t kColumnStride = std::is_same_v<In, c10::BFloat16> ? 2 : 1;

template <typename In>
void gemm_nn(int64_t M, int64_t N, int64_t K, const In* A, int64_t lda, const In* B, int64_t ldb,
             Acc<In>* C, int64_t ldc, bool accumulate);

template <typename In>
void parallel_gemm_nn(int64_t M, int64_t N, int64_t K, const In* A, int64_t lda, const In* B,
                      int64_t ldb, Acc<In>* C, int64_t ldc, bool accumulate);

// Rows of a weight panel (below): K, or K's pairs for pair-packed bfloat16.
template <typename In>
constexpr int64_t panel_rows(int64_t K) {
  return std::is_same_v<In, c10::BFloat16> ? (K + 1) / 2 : K;
}

// C[M, N] (+)= A[M, K] @ B[K, N], one thread, with B in panels of kPanelWidth
// columns (gate_layout.h): panel j, columns [128 j, 128 j + 128), is a
// contiguous [panel_rows(K), 128] block (of pair words for bfloat16), so column
// n of B starts n * panel_rows(K) * kColumnStride elements in. A panel streams
// from memory as one run, where the rows of a plain B sit 4H elements apart.
template <typename In>
void gemm_nn_panels(int64_t M, int64_t N, int64_t K, const In* A, int64_t lda, const In* panels,
                    Acc<In>* C, int64_t ldc, bool accumulate);

// gemm_nn_panels split over the threads of at::parallel_for (by rows, or by
// whole panels when the rows are few).
template <typename In>
void parallel_gemm_nn_panels(int64_t M, int64_t N, int64_t K, const In* A, int64_t lda,
                             const In* panels, Acc<In>* C, int64_t ldc, bool accumulate);

// A and B plain row-major for every type (bfloat16 too).
template <typename In>
void gemm_tn(int64_t R, int64_t K, int64_t N, const In* A, int64_t lda, const In* B, int64_t ldb,
             Acc<In>* C, int64_t ldc, bool accumulate);

template <typename In>
void parallel_gemm_tn(int64_t R, int64_t K, int64_t N, const In* A, int64_t lda, const In* B,
                      int64_t ldb, Acc<In>* C, int64_t ldc, bool accumulate);

}  // namespace fused_lstm::cpu
