// How the register-tile GEMM kernels (gemm_kernels*.cpp) walk C: no intrinsics here, so
// each instruction set's file instantiates it under its own target.
#pragma once

#include <algorithm>
#include <cstdint>

namespace fused_lstm::cpu {

// Runs C[M, N] over blocks of kStepBlock steps of K (`steps` in all), panels of kVectors
// vectors of `lanes` columns, and ceil(M / kRows) row tiles of near-equal height (32 rows
// in tiles of 6: 6,6,5,5,5,5; a short last tile would load B for few rows).
// tile(m0, mr, n0, nv, lanes_in_last_vector, s0, ns, accumulate, last_block).
template <int kRows, int kVectors, int64_t kStepBlock, typename Tile>
void run_tiles(int64_t M, int64_t N, int64_t steps, int64_t lanes, bool accumulate,
               const Tile& tile) {
  for (int64_t s0 = 0; s0 < steps; s0 += kStepBlock) {
    const int64_t ns = std::min(kStepBlock, steps - s0);
    for (int64_t n0 = 0; n0 < N; n0 += lanes * kVectors) {
      const int64_t width = std::min<int64_t>(lanes * kVectors, N - n0);
      const int nv = static_cast<int>((width + lanes - 1) / lanes);
      const int64_t tail = width - lanes * (nv - 1);
      const int64_t tiles = (M + kRows - 1) / kRows, base = M / tiles, taller = M % tiles;
      for (int64_t i = 0, m0 = 0; i < tiles; ++i) {
        const int mr = static_cast<int>(base + (i < taller ? 1 : 0));
        tile(m0, mr, n0, nv, tail, s0, ns, accumulate || s0 > 0, s0 + ns == steps);
        m0 += mr;
      }
    }
  }
}

// C[M, N] = 0 (row stride ldc).
template <typename T>
void zero_rows(T* C, int64_t M, int64_t N, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
}

}  // namespace fused_lstm::cpu
