// The bfloat16 GEMM of bf16_gemm.h: a 6 x 64 register tile of vdpbf16ps.
//
// Per pair of K a full tile loads four vectors of B (64 columns) and broadcasts one
// word of A per row: 24 dot products (1,536 multiply-adds) for 10 loads, with
// the 24 accumulators in registers. K runs in blocks of 256 so a 64-column panel
// of B (32 KiB) stays in L1 across the rows of A.
#include "bf16_gemm.h"

#include <algorithm>
#include <cstring>
#include <cstdlib>
#include <string>

namespace fused_lstm::cpu {

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(__clang__)

bool bf16_gemm_supported() {
  // FUSED_LSTM_CPU_BF16=0 keeps bfloat16 on the float32 route (for comparison).
  static const bool ok = [] {
    const char* env = std::getenv("FUSED_LSTM_CPU_BF16");
    if (env && std::string(env) == "0") return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
  }();
  return ok;
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16")
}  // namespace fused_lstm::cpu
#include <immintrin.h>
namespace fused_lstm::cpu {

namespace {

constexpr int kRows = 6;            // rows of A per tile
constexpr int kVectors = 4;         // 16-column vectors of B per tile
constexpr int64_t kPairBlock = 128;  // pairs of K per block

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

}  // namespace

void gemm_bf16(int64_t M, int64_t N, int64_t K, const void* A, int64_t a_row, int64_t a_pair,
               const uint32_t* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.f);
    return;
  }
  const char* a = static_cast<const char*>(A);
  const int64_t pairs = (K + 1) / 2;
  for (int64_t p0 = 0; p0 < pairs; p0 += kPairBlock) {
    const int64_t np = std::min(kPairBlock, pairs - p0);
    const bool half_last = (K & 1) && p0 + np == pairs;
    const bool acc = accumulate || p0 > 0;
    for (int64_t n0 = 0; n0 < N; n0 += 16 * kVectors) {
      const int64_t width = std::min<int64_t>(16 * kVectors, N - n0);
      const int nv = static_cast<int>((width + 15) / 16);
      const int64_t tail = width - 16 * (nv - 1);
      const __mmask16 last = tail == 16 ? 0xFFFF : static_cast<__mmask16>((1u << tail) - 1);
      // Rows in ceil(M / 6) tiles of near-equal height (32 rows: 6,6,5,5,5,5):
      // a short last tile would load B for few rows.
      const int64_t tiles = (M + kRows - 1) / kRows, base = M / tiles, taller = M % tiles;
      for (int64_t i = 0, m0 = 0; i < tiles; ++i) {
        const int mr = static_cast<int>(base + (i < taller ? 1 : 0));
        kTiles[mr - 1][nv - 1](np, half_last, a + m0 * a_row + p0 * a_pair, a_row, a_pair,
                               B + p0 * ldb + n0, ldb, C + m0 * ldc + n0, ldc, acc, last);
        m0 += mr;
      }
    }
  }
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

#else  // no AVX512_BF16 kernels in this build

bool bf16_gemm_supported() { return false; }
void gemm_bf16(int64_t, int64_t, int64_t, const void*, int64_t, int64_t, const uint32_t*, int64_t,
               float*, int64_t, bool) {
  std::abort();  // unreachable: bf16_gemm_supported() is false
}
void pack_row_pairs(const uint16_t*, int64_t, int64_t, int64_t, uint32_t*, int64_t) {
  std::abort();
}

#endif

}  // namespace fused_lstm::cpu
