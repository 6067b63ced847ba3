// A padded batch cut into independent segments, for `lengths=` and `reset=` of FusedLSTM
// (fused_lstm/segments.py draws the layout): row b from its start (step 0, or a step where
// its state is reset) to its next reset or its end. The maps let the layer ops run the
// segments as one packed batch, columns longest first. Torch-free: the binding
// (segment_layout_op.cpp) checks the values and makes the tensors.
#pragma once

#include <cstdint>
#include <vector>

namespace fused_lstm {

struct SegmentMaps {
  std::vector<int64_t> batch_sizes;  // [T'] packed columns alive at each step (T': longest)
  std::vector<int64_t> rows;         // [N] padded row (t * B + b) behind each packed row
  std::vector<int64_t> initial;      // [B'] caller row whose initial state each segment
                                     // takes; B for zeros (a segment after a reset)
  std::vector<int64_t> final_index;  // [B] index into [packed h_n (B' columns); initial
                                     // states (B)] of h_n[b]
};

// ends: [B] each row's length, 0 to T; reset: [T, B] row-major (true where the state is
// zeroed before step t), or null for none.
SegmentMaps segment_maps(const int64_t* ends, const bool* reset, int64_t T, int64_t B);

}  // namespace fused_lstm
