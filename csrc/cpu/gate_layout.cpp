#include "gate_layout.h"

#include "cpu_tuning.h"
#include "vector_kernels.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstring>

namespace fused_lstm::cpu {

template <typename T>
void gate_rows_to_blocked(const T* w, int64_t H, int64_t K, T* out) {
  // Each (chunk, gate) block is a run of contiguous natural rows: one copy
  // each, not one per row (NOTES.md row 37).
  for (int64_t c = 0; c < chunk_count(H); ++c) {
    const int64_t u0 = c * kGateChunk, width = chunk_width(H, c);
    for (int64_t gate = 0; gate < 4; ++gate)
      std::memcpy(out + (kPanelWidth * c + gate * width) * K, w + (gate * H + u0) * K,
                  sizeof(T) * width * K);
  }
}

// The weight transposes run once per call; from this many elements the chunks are
// shared out to the threads.
constexpr int64_t kMinParallelTransposeElements = Tuning::kMinParallelTransposeElements;

// Runs body(c) for every gate chunk c of H, on several threads when the
// 4H x K transpose is big enough.
template <typename Body>
void for_each_chunk(int64_t H, int64_t K, const Body& body) {
  const int64_t chunks = chunk_count(H);
  const int64_t grain = 4 * H * K >= kMinParallelTransposeElements ? 1 : chunks;
  at::parallel_for(0, chunks, grain, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) body(c);
  });
}

// In the blocked order, gate `gate` of chunk c covers natural rows
// [gate * H + u0, gate * H + u0 + w) and sits gate * w columns into the chunk:
// each (chunk, gate) block is a plain transpose of w contiguous rows, into
// chunk c's panel (row stride kPanelWidth).
template <typename T>
void gate_rows_to_panels(const T* w, int64_t H, int64_t K, T* out) {
  const auto& kernels = vector_kernels<T>();
  for_each_chunk(H, K, [&](int64_t c) {
    const int64_t u0 = c * kGateChunk, width = chunk_width(H, c);
    for (int64_t gate = 0; gate < 4; ++gate) {
      kernels.transpose(w + (gate * H + u0) * K, K, out + c * K * kPanelWidth + gate * width,
                        kPanelWidth, width, K);
    }
  });
}

template <typename T>
void rows_to_panels(const T* w, int64_t rows, int64_t K, T* out) {
  const auto& kernels = vector_kernels<T>();
  for (int64_t r0 = 0; r0 < rows; r0 += kPanelWidth) {
    kernels.transpose(w + r0 * K, K, out + r0 * K, kPanelWidth,
                      std::min(kPanelWidth, rows - r0), K);
  }
}

template <typename T>
void blocked_transposed_to_gate_rows(const T* g, int64_t H, int64_t K, T* out) {
  const auto& kernels = vector_kernels<T>();
  const int64_t G = 4 * H;
  for_each_chunk(H, K, [&](int64_t c) {
    const int64_t u0 = c * kGateChunk, width = chunk_width(H, c);
    for (int64_t gate = 0; gate < 4; ++gate) {
      kernels.transpose(g + blocked_gate_column(H, gate, u0), G, out + (gate * H + u0) * K, K, K,
                        width);
    }
  });
}

#define FUSED_LSTM_INSTANTIATE(T)                                                          \
  template void gate_rows_to_blocked<T>(const T*, int64_t, int64_t, T*);                   \
  template void gate_rows_to_panels<T>(const T*, int64_t, int64_t, T*);                    \
  template void rows_to_panels<T>(const T*, int64_t, int64_t, T*);                         \
  template void blocked_transposed_to_gate_rows<T>(const T*, int64_t, int64_t, T*);
FUSED_LSTM_INSTANTIATE(float)
FUSED_LSTM_INSTANTIATE(double)
#undef FUSED_LSTM_INSTANTIATE
// bfloat16 weights are reordered by rows only (then pair-packed, see lstm_cpu.cpp).
template void gate_rows_to_blocked<c10::BFloat16>(const c10::BFloat16*, int64_t, int64_t,
                                                  c10::BFloat16*);

}  // namespace fused_lstm::cpu
