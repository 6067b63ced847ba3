// The AVX2 GEMM kernel of gemm_kernels.h: float64 register tiles of up to 6 rows by 2
// vectors of 4 columns (12 accumulators, 2 vectors of B and a broadcast of A: 15 of the
// 16 registers). Per step of K a full tile loads two vectors of B and broadcasts one
// element of A per row: 12 FMAs for 8 loads. K runs in blocks whose panel of B
// (256 steps x 8 columns, 16 KiB) stays in L1 across the rows of A.
#include "gemm_kernels.h"
#include "gemm_tiling.h"

#include <cstdlib>

namespace fused_lstm::cpu {

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(__clang__)

#pragma GCC push_options
#pragma GCC target("avx2,fma")
}  // namespace fused_lstm::cpu
#include <immintrin.h>
namespace fused_lstm::cpu {

namespace {

constexpr int kRows = 6;
constexpr int kVectors = 2;
constexpr int64_t kStepBlock = 256;

// The first `lanes` (1..4) of 4 doubles, as maskload/maskstore want it.
inline __m256i lane_mask(int64_t lanes) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(lanes), _mm256_setr_epi64x(0, 1, 2, 3));
}

// C[MR, 4 * NV] (+)= A[MR, K] @ B[K, 4 * NV]; the last vector of columns is masked by
// `last` (all lanes when it is full).
template <int MR, int NV>
void tile_f64(int64_t K, const double* A, int64_t lda, const double* B, int64_t ldb, double* C,
              int64_t ldc, bool accumulate, __m256i last) {
  __m256d acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
      acc[m][v] = accumulate ? (v == NV - 1 ? _mm256_maskload_pd(C + m * ldc + 4 * v, last)
                                            : _mm256_loadu_pd(C + m * ldc + 4 * v))
                             : _mm256_setzero_pd();
  for (int64_t k = 0; k < K; ++k) {
    __m256d b[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
      b[v] = v == NV - 1 ? _mm256_maskload_pd(B + k * ldb + 4 * v, last)
                         : _mm256_loadu_pd(B + k * ldb + 4 * v);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m256d a = _mm256_broadcast_sd(A + m * lda + k);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[m][v] = _mm256_fmadd_pd(a, b[v], acc[m][v]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      if (v == NV - 1) {
        _mm256_maskstore_pd(C + m * ldc + 4 * v, last, acc[m][v]);
      } else {
        _mm256_storeu_pd(C + m * ldc + 4 * v, acc[m][v]);
      }
    }
}

using TileF64 = void (*)(int64_t, const double*, int64_t, const double*, int64_t, double*, int64_t,
                         bool, __m256i);

#define FUSED_LSTM_TILE_ROW(MR) {&tile_f64<MR, 1>, &tile_f64<MR, 2>}
constexpr TileF64 kTilesF64[kRows][kVectors] = {
    FUSED_LSTM_TILE_ROW(1), FUSED_LSTM_TILE_ROW(2), FUSED_LSTM_TILE_ROW(3),
    FUSED_LSTM_TILE_ROW(4), FUSED_LSTM_TILE_ROW(5), FUSED_LSTM_TILE_ROW(6)};
#undef FUSED_LSTM_TILE_ROW

}  // namespace

void gemm_f64_avx2(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda,
                   const double* B, int64_t ldb, double* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate) zero_rows(C, M, N, ldc);
    return;
  }
  run_tiles<kRows, kVectors, kStepBlock>(
      M, N, K, 4, accumulate,
      [&](int64_t m0, int mr, int64_t n0, int nv, int64_t tail, int64_t k0, int64_t nk,
          bool acc, bool) {
        kTilesF64[mr - 1][nv - 1](nk, A + m0 * lda + k0, lda, B + k0 * ldb + n0, ldb,
                                  C + m0 * ldc + n0, ldc, acc, lane_mask(tail));
      });
}

#pragma GCC pop_options

#else  // no AVX2 kernels in this build (cpu_tuning.cpp never picks them)

void gemm_f64_avx2(int64_t, int64_t, int64_t, const double*, int64_t, const double*, int64_t,
                   double*, int64_t, bool) {
  std::abort();
}

#endif

}  // namespace fused_lstm::cpu
