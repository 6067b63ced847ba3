// The AVX-512 GEMM kernels of gemm_kernels.h: register tiles of up to 6 rows by 4
// vectors of columns (64 for bfloat16, 32 for float64).
//
// Per step of K (a pair for bfloat16) a full tile loads four vectors of B and
// broadcasts one element (word) of A per row: 24 FMAs (dot products) for 10
// loads, with the 24 accumulators in registers. K runs in blocks whose
// panel of B (32 KiB) stays in L1 across the rows of A.
#include "gemm_kernels.h"
#include "gemm_tiling.h"

#include <algorithm>
#include <cstring>
#include <cstdlib>

namespace fused_lstm::cpu {

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(__clang__)

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,fma")
}  // namespace fused_lstm::cpu
#include <immintrin.h>
namespace fused_lstm::cpu {

namespace {

constexpr int kRows = 6;             // rows of A per tile
constexpr int kVectors = 4;          // vectors of columns of B per tile
constexpr int64_t kStepBlock = 128;  // steps of K per block (32 KiB of B per panel)

inline __m512i broadcast_word(const char* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

inline __m512i broadcast_low_half(const char* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return _mm512_set1_epi32(v);
}

// C[MR, 16 * NV] (+)= A[MR, 2 * pairs] @ B[2 * pairs, 16 * NV]; the last vector
// of columns is masked by `last`. half_last: the last pair holds one K only.
template <int MR, int NV>
void tile(int64_t pairs, bool half_last, const char* A, int64_t a_row, int64_t a_pair,
          const uint32_t* B, int64_t ldb, float* C, int64_t ldc, bool accumulate,
          __mmask16 last) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[m][v] = accumulate ? _mm512_maskz_loadu_ps(v == NV - 1 ? last : 0xFFFF,
                                                     C + m * ldc + 16 * v)
                             : _mm512_setzero_ps();
  auto step = [&](int64_t p, bool half) {
    __m512i b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      b[v] = v == NV - 1 ? _mm512_maskz_loadu_epi32(last, B + p * ldb + 16 * v)
                         : _mm512_loadu_si512(B + p * ldb + 16 * v);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const char* ap = A + m * a_row + p * a_pair;
      const __m512i a = half ? broadcast_low_half(ap) : broadcast_word(ap);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        acc[m][v] = _mm512_dpbf16_ps(acc[m][v], (__m512bh)a, (__m512bh)b[v]);
    }
  };
  const int64_t full = half_last ? pairs - 1 : pairs;
  for (int64_t p = 0; p < full; ++p) step(p, false);
  if (half_last) step(full, true);
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      _mm512_mask_storeu_ps(C + m * ldc + 16 * v, v == NV - 1 ? last : 0xFFFF, acc[m][v]);
}

using TileFn = void (*)(int64_t, bool, const char*, int64_t, int64_t, const uint32_t*, int64_t,
                        float*, int64_t, bool, __mmask16);

#define FUSED_LSTM_TILE_ROW(MR) {&tile<MR, 1>, &tile<MR, 2>, &tile<MR, 3>, &tile<MR, 4>}
constexpr TileFn kTiles[kRows][kVectors] = {
    FUSED_LSTM_TILE_ROW(1), FUSED_LSTM_TILE_ROW(2), FUSED_LSTM_TILE_ROW(3),
    FUSED_LSTM_TILE_ROW(4), FUSED_LSTM_TILE_ROW(5), FUSED_LSTM_TILE_ROW(6)};
#undef FUSED_LSTM_TILE_ROW

// C[MR, 8 * NV] (+)= A[MR, K] @ B[K, 8 * NV], float64; the last vector of
// columns is masked by `last`.
template <int MR, int NV>
void tile_f64(int64_t K, const double* A, int64_t lda, const double* B, int64_t ldb, double* C,
              int64_t ldc, bool accumulate, __mmask8 last) {
  __m512d acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[m][v] = accumulate ? _mm512_maskz_loadu_pd(v == NV - 1 ? last : 0xFF, C + m * ldc + 8 * v)
                             : _mm512_setzero_pd();
  for (int64_t k = 0; k < K; ++k) {
    __m512d b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      b[v] = v == NV - 1 ? _mm512_maskz_loadu_pd(last, B + k * ldb + 8 * v)
                         : _mm512_loadu_pd(B + k * ldb + 8 * v);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m512d a = _mm512_set1_pd(A[m * lda + k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_fmadd_pd(a, b[v], acc[m][v]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      _mm512_mask_storeu_pd(C + m * ldc + 8 * v, v == NV - 1 ? last : 0xFF, acc[m][v]);
}

using TileF64 = void (*)(int64_t, const double*, int64_t, const double*, int64_t, double*, int64_t,
                         bool, __mmask8);

#define FUSED_LSTM_TILE_ROW(MR) {&tile_f64<MR, 1>, &tile_f64<MR, 2>, &tile_f64<MR, 3>, &tile_f64<MR, 4>}
constexpr TileF64 kTilesF64[kRows][kVectors] = {
    FUSED_LSTM_TILE_ROW(1), FUSED_LSTM_TILE_ROW(2), FUSED_LSTM_TILE_ROW(3),
    FUSED_LSTM_TILE_ROW(4), FUSED_LSTM_TILE_ROW(5), FUSED_LSTM_TILE_ROW(6)};
#undef FUSED_LSTM_TILE_ROW

}  // namespace

void gemm_bf16(int64_t M, int64_t N, int64_t K, const void* A, int64_t a_row, int64_t a_pair,
               const uint32_t* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate) zero_rows(C, M, N, ldc);
    return;
  }
  const char* a = static_cast<const char*>(A);
  run_tiles<kRows, kVectors, kStepBlock>(M, N, (K + 1) / 2, 16, accumulate,
            [&](int64_t m0, int mr, int64_t n0, int nv, int64_t tail, int64_t p0, int64_t np,
                bool acc, bool last_block) {
              const __mmask16 last = static_cast<__mmask16>((1u << tail) - 1);
              kTiles[mr - 1][nv - 1](np, last_block && (K & 1), a + m0 * a_row + p0 * a_pair,
                                     a_row, a_pair, B + p0 * ldb + n0, ldb, C + m0 * ldc + n0,
                                     ldc, acc, last);
            });
}

void gemm_f64_avx512(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
              int64_t ldb, double* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate) zero_rows(C, M, N, ldc);
    return;
  }
  run_tiles<kRows, kVectors, kStepBlock>(M, N, K, 8, accumulate,
            [&](int64_t m0, int mr, int64_t n0, int nv, int64_t tail, int64_t k0, int64_t nk,
                bool acc, bool) {
              const __mmask8 last = static_cast<__mmask8>((1u << tail) - 1);
              kTilesF64[mr - 1][nv - 1](nk, A + m0 * lda + k0, lda, B + k0 * ldb + n0, ldb,
                                        C + m0 * ldc + n0, ldc, acc, last);
            });
}

void pack_row_pairs(const uint16_t* src, int64_t lds, int64_t R, int64_t N, uint32_t* dst,
                    int64_t ldd) {
  // permutex2var indices interleaving two rows of 32 bfloat16: low words take
  // columns 0-15 of both rows, high words columns 16-31.
  alignas(64) static const uint16_t kLow[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5,
                                                37, 6, 38, 7, 39, 8, 40, 9, 41, 10, 42,
                                                11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static const uint16_t kHigh[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21,
                                                 53, 22, 54, 23, 55, 24, 56, 25, 57, 26, 58,
                                                 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  const __m512i low = _mm512_load_si512(kLow), high = _mm512_load_si512(kHigh);
  for (int64_t p = 0; p < (R + 1) / 2; ++p) {
    const uint16_t* r0 = src + 2 * p * lds;
    const uint16_t* r1 = 2 * p + 1 < R ? r0 + lds : nullptr;
    uint32_t* out = dst + p * ldd;
    for (int64_t n = 0; n < N; n += 32) {
      const int64_t w = std::min<int64_t>(32, N - n);
      const __mmask32 m = w == 32 ? 0xFFFFFFFFu : static_cast<__mmask32>((1u << w) - 1);
      const __m512i x0 = _mm512_maskz_loadu_epi16(m, r0 + n);
      const __m512i x1 = r1 ? _mm512_maskz_loadu_epi16(m, r1 + n) : _mm512_setzero_si512();
      const __m512i lo = _mm512_permutex2var_epi16(x0, low, x1);
      const __m512i hi = _mm512_permutex2var_epi16(x0, high, x1);
      const int64_t wl = std::min<int64_t>(16, w), wh = w - wl;
      _mm512_mask_storeu_epi32(out + n, static_cast<__mmask16>((1u << wl) - 1), lo);
      if (wh > 0) _mm512_mask_storeu_epi32(out + n + 16, static_cast<__mmask16>((1u << wh) - 1), hi);
    }
  }
}

#pragma GCC pop_options

#else  // no AVX-512 kernels in this build (cpu_tuning.cpp never picks them)

void gemm_f64_avx512(int64_t, int64_t, int64_t, const double*, int64_t, const double*, int64_t,
                     double*, int64_t, bool) {
  std::abort();
}
void gemm_bf16(int64_t, int64_t, int64_t, const void*, int64_t, int64_t, const uint32_t*, int64_t,
               float*, int64_t, bool) {
  std::abort();
}
void pack_row_pairs(const uint16_t*, int64_t, int64_t, int64_t, uint32_t*, int64_t) {
  std::abort();
}

#endif

}  // namespace fused_lstm::cpu
