// Our own GEMM kernels, for what libtorch's exported microkernel and BLAS do not
// serve well on these CPUs (which one runs is decided in cpu_tuning.cpp):
//
//   gemm_bf16: bfloat16 operands, float accumulation, on the AVX512_BF16
//     dot-product instruction (vdpbf16ps: 16 lanes, each adding the products of
//     two bfloat16 pairs to a float), about twice the float FMA rate.
//   gemm_f64_avx512, gemm_f64_avx2: float64, plain row-major, on vfmadd231pd;
//     the BLAS libtorch links (MKL) takes a slow path on AMD CPUs.
//
// bfloat16 operands:
//
// vdpbf16ps multiplies pairs of consecutive K, so both operands are read as
// 32-bit words holding two bfloat16 values, the lower K in the low half:
//
//   B is "pair-packed": B[K, N] is stored as ceil(K/2) rows of ldb words, word
//     (p, n) = (B[2p, n], B[2p+1, n]), the second half zero past K.
//   A(m, p), the word of row m and pair p, is the 32 bits at byte offset
//     m * a_row + p * a_pair of A: a row-major bfloat16 A[M, K] has a_row =
//     2 * lda and a_pair = 4; a pair-packed A^T (words [ceil(K/2), M]) has
//     a_row = 4 and a_pair = 4 * M. When K is odd, the last pair's word is read
//     as its low 16 bits only, so nothing past a row of A is touched.
//
// Torch-free: plain pointers and sizes. Each is built for its own instruction
// set and must only be called where tuning() picked it (cpu_tuning.h).
#pragma once

#include <cstdint>

namespace fused_lstm::cpu {

// C[M, N] (+)= A[M, K] @ B[K, N], one thread, all row-major float64.
void gemm_f64_avx512(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda,
                     const double* B, int64_t ldb, double* C, int64_t ldc, bool accumulate);
void gemm_f64_avx2(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda,
                   const double* B, int64_t ldb, double* C, int64_t ldc, bool accumulate);

// C[M, N] (+)= A[M, K] @ B[K, N], one thread. A, B as above; C float, row-major.
void gemm_bf16(int64_t M, int64_t N, int64_t K, const void* A, int64_t a_row, int64_t a_pair,
               const uint32_t* B, int64_t ldb, float* C, int64_t ldc, bool accumulate);

// dst: [ceil(R/2), N] words (row stride ldd words) <- src: [R, N] bfloat16 bits
// (row stride lds), pairing rows 2p and 2p+1 (zero past R).
void pack_row_pairs(const uint16_t* src, int64_t lds, int64_t R, int64_t N, uint32_t* dst,
                    int64_t ldd);

}  // namespace fused_lstm::cpu
