#include "gate_layout.h"

#include <algorithm>
#include <cstring>

namespace fused_lstm::cpu {

namespace {
constexpr int64_t kTile = 16;  // square tiles for the transposing copies
}

template <typename T>
void gate_rows_to_blocked(const T* w, int64_t H, int64_t K, T* out) {
  for (int64_t col = 0; col < 4 * H; ++col)
    std::memcpy(out + col * K, w + natural_gate_row(H, col) * K, sizeof(T) * K);
}

template <typename T>
void gate_rows_to_blocked_transposed(const T* w, int64_t H, int64_t K, T* out) {
  const int64_t G = 4 * H;
  for (int64_t c0 = 0; c0 < G; c0 += kTile) {
    const int64_t c1 = std::min(G, c0 + kTile);
    int64_t rows[kTile];
    for (int64_t c = c0; c < c1; ++c) rows[c - c0] = natural_gate_row(H, c);
    // Each output row gets a contiguous run of kTile columns, gathered from
    // kTile source rows that stay in L1 across k.
    for (int64_t k = 0; k < K; ++k) {
      T* dst = out + k * G;
      for (int64_t c = c0; c < c1; ++c) dst[c] = w[rows[c - c0] * K + k];
    }
  }
}

template <typename T>
void blocked_transposed_to_gate_rows(const T* g, int64_t H, int64_t K, T* out) {
  const int64_t G = 4 * H;
  for (int64_t c0 = 0; c0 < G; c0 += kTile) {
    const int64_t c1 = std::min(G, c0 + kTile);
    int64_t rows[kTile];
    for (int64_t c = c0; c < c1; ++c) rows[c - c0] = natural_gate_row(H, c);
    for (int64_t k = 0; k < K; ++k) {
      const T* src = g + k * G;
      for (int64_t c = c0; c < c1; ++c) out[rows[c - c0] * K + k] = src[c];
    }
  }
}

#define FUSED_LSTM_INSTANTIATE(T)                                                          \
  template void gate_rows_to_blocked<T>(const T*, int64_t, int64_t, T*);                   \
  template void gate_rows_to_blocked_transposed<T>(const T*, int64_t, int64_t, T*);        \
  template void blocked_transposed_to_gate_rows<T>(const T*, int64_t, int64_t, T*);
FUSED_LSTM_INSTANTIATE(float)
FUSED_LSTM_INSTANTIATE(double)
#undef FUSED_LSTM_INSTANTIATE

}  // namespace fused_lstm::cpu
