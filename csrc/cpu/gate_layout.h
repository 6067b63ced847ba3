// The blocked gate-column order of the CPU kernels, and the weight copies into
// and out of it.
//
// The 4H gate columns are kept in a blocked order: hidden units are grouped in
// chunks of kGateChunk, and each chunk's i, f, g, o columns sit side by side
// ([i_c | f_c | g_c | o_c] for chunk c, each as wide as the chunk). A thread
// that owns a run of chunks then computes its gate columns with one GEMM and
// runs the cell update for exactly those units (see forward_loop.cpp).
// nn.LSTM's natural order is [i; f; g; o], each H wide.
#pragma once

#include <cstdint>

namespace fused_lstm::cpu {

constexpr int64_t kGateChunk = 32;

inline int64_t chunk_count(int64_t H) { return (H + kGateChunk - 1) / kGateChunk; }
inline int64_t chunk_width(int64_t H, int64_t c) {
  return H - c * kGateChunk < kGateChunk ? H - c * kGateChunk : kGateChunk;
}

// The natural gate row (in [0, 4H)) that blocked column `col` holds.
inline int64_t natural_gate_row(int64_t H, int64_t col) {
  const int64_t c = col / (4 * kGateChunk);
  const int64_t w = chunk_width(H, c);
  const int64_t r = col - 4 * kGateChunk * c;
  return (r / w) * H + c * kGateChunk + r % w;
}

// The blocked column holding gate `gate` (0..3 for i, f, g, o) of hidden unit j.
inline int64_t blocked_gate_column(int64_t H, int64_t gate, int64_t j) {
  const int64_t c = j / kGateChunk;
  return 4 * kGateChunk * c + gate * chunk_width(H, c) + (j - c * kGateChunk);
}

// w: [4H, K] natural rows  ->  out: [4H, K] blocked rows.
template <typename T>
void gate_rows_to_blocked(const T* w, int64_t H, int64_t K, T* out);

// w: [4H, K] natural rows  ->  out: [chunk_count(H), K, kPanelWidth]: w^T in
// blocked columns, each chunk's 4 x 32 columns a contiguous panel (row stride
// kPanelWidth; a narrower last chunk leaves its panel's tail unused). Column
// col of w^T, in chunk col / kPanelWidth, starts at out + col * K.
constexpr int64_t kPanelWidth = 4 * kGateChunk;
template <typename T>
void gate_rows_to_panels(const T* w, int64_t H, int64_t K, T* out);

// w: [rows, K]  ->  out: [ceil(rows / kPanelWidth), K, kPanelWidth]: w^T in its own
// column order, as panels of kPanelWidth columns (the variant op's w_hh^T).
template <typename T>
void rows_to_panels(const T* w, int64_t rows, int64_t K, T* out);

// g: [K, 4H] blocked columns  ->  out: [4H, K] natural rows (g^T, reordered).
template <typename T>
void blocked_transposed_to_gate_rows(const T* g, int64_t H, int64_t K, T* out);

}  // namespace fused_lstm::cpu
