#include "segment_maps.h"

#include <algorithm>

namespace fused_lstm {

namespace {

struct Segment {
  int64_t row, start, length, initial;
};

}  // namespace

SegmentMaps segment_maps(const int64_t* ends, const bool* reset, int64_t T, int64_t B) {
  const auto reset_at = [&](int64_t t, int64_t b) { return reset != nullptr && reset[t * B + b]; };
  // Segments by row, then by step; a row's last one is its final state.
  std::vector<Segment> segments;
  std::vector<int64_t> last_of_row(B, -1);  // index in `segments`, then in the sorted order
  for (int64_t b = 0; b < B; ++b) {
    const int64_t end = ends[b];
    int64_t start = 0;
    for (int64_t t = 1; t <= end; ++t) {
      if (t == end || reset_at(t, b)) {
        const int64_t initial = start == 0 && !reset_at(0, b) ? b : B;
        last_of_row[b] = static_cast<int64_t>(segments.size());
        segments.push_back({b, start, t - start, initial});
        start = t;
      }
    }
  }
  const int64_t count = static_cast<int64_t>(segments.size());
  // Packed columns longest first; ties keep row, then step order.
  std::vector<int64_t> order(count);
  for (int64_t j = 0; j < count; ++j) order[j] = j;
  std::stable_sort(order.begin(), order.end(), [&](int64_t p, int64_t q) {
    return segments[p].length > segments[q].length;
  });
  std::vector<int64_t> column_of(count);
  for (int64_t j = 0; j < count; ++j) column_of[order[j]] = j;

  SegmentMaps maps;
  maps.initial.resize(count);
  for (int64_t j = 0; j < count; ++j) maps.initial[j] = segments[order[j]].initial;
  maps.final_index.resize(B);
  for (int64_t b = 0; b < B; ++b) {
    maps.final_index[b] = last_of_row[b] >= 0 ? column_of[last_of_row[b]] : count + b;
  }
  const int64_t longest = count > 0 ? segments[order[0]].length : 0;
  maps.batch_sizes.resize(longest);
  int64_t alive = count;
  for (int64_t t = 0; t < longest; ++t) {
    while (alive > 0 && segments[order[alive - 1]].length <= t) --alive;
    maps.batch_sizes[t] = alive;
    for (int64_t j = 0; j < alive; ++j) {
      const Segment& s = segments[order[j]];
      maps.rows.push_back((s.start + t) * B + s.row);
    }
  }
  return maps;
}

}  // namespace fused_lstm
