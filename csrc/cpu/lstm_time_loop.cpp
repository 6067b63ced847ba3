#include "lstm_time_loop.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "cpu_blas.h"
#include "lstm_pointwise.h"

namespace fused_lstm::cpu {

namespace {

// Below this many cells a step's pointwise pass runs on one thread: waking the
// pool costs more than the work.
constexpr int64_t kMinParallelCells = 8192;
// Column blocks handed to threads when a step has fewer rows than threads.
constexpr int64_t kColumnBlock = 64;

// Runs fn(r0, r1, j0, j1) over rows [0, rows) x hidden columns [0, H) of one
// step, split across threads by rows, or by columns when rows are few.
template <typename Fn>
void parallel_step(int64_t rows, int64_t H, const Fn& fn) {
  const int64_t threads = at::get_num_threads();
  if (threads == 1 || rows * H < kMinParallelCells || at::in_parallel_region()) {
    fn(0, rows, 0, H);
  } else if (rows >= threads) {
    at::parallel_for(0, rows, 1, [&](int64_t r0, int64_t r1) { fn(r0, r1, 0, H); });
  } else {
    const int64_t blocks = (H + kColumnBlock - 1) / kColumnBlock;
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      fn(0, rows, b0 * kColumnBlock, std::min(H, b1 * kColumnBlock));
    });
  }
}

template <typename T>
T* rows_at(T* p, int64_t row, int64_t ld) {
  return p ? p + row * ld : nullptr;
}

}  // namespace

template <typename T>
void lstm_forward_loop(const LayerArgs& a, bool reverse, const ForwardLoop<T>& f) {
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;
  const bool proj = f.w_hr != nullptr;
  const bool save = f.cells != nullptr;
  const auto& kernels = pointwise_kernels<T>();
  for (int64_t k = 0; k < a.T; ++k) {
    const int64_t t = step_time(a, reverse, k);
    const int64_t off = a.offset[t], rows = a.rows[t];
    T* gates = f.gates + off * G;  // gates: [rows, 4H]
    // gates += h[0:rows] @ w_hh^T
    gemm<T>(false, true, rows, G, Hout, T(1), f.h, Hout, f.w_hh, Hout, T(1), gates, G);
    T* y = f.y + off * Hout;  // y: [rows, Hout]
    parallel_step(rows, H, [&](int64_t r0, int64_t r1, int64_t j0, int64_t j1) {
      ForwardStep<T> s{rows_at(gates, r0, G), G,
                       rows_at(f.c, r0, H), H,
                       rows_at(save ? f.cells + off * H : nullptr, r0, H), H,
                       proj ? rows_at(f.h_raw, r0, H) : rows_at(y, r0, Hout), proj ? H : Hout,
                       proj ? nullptr : rows_at(f.h, r0, Hout), Hout,
                       save};
      kernels.forward(s, r1 - r0, H, j0, j1);
    });
    if (proj) {
      // y = h_raw @ w_hr^T, which is also the state carried to the next step.
      gemm<T>(false, true, rows, Hout, H, T(1), f.h_raw, H, f.w_hr, H, T(0), y, Hout);
      std::memcpy(f.h, y, sizeof(T) * rows * Hout);
    }
  }
}

template <typename T>
void lstm_backward_loop(const LayerArgs& a, bool reverse, const BackwardLoop<T>& b) {
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;
  const bool proj = b.w_hr != nullptr;
  const auto& kernels = pointwise_kernels<T>();
  for (int64_t k = a.T - 1; k >= 0; --k) {
    const int64_t t = step_time(a, reverse, k);
    const int64_t off = a.offset[t], rows = a.rows[t];
    // The previous step (in this direction's order) holds c_prev for its rows;
    // rows it lacked (packed, reverse) started from c0.
    const int64_t t_prev = k > 0 ? step_time(a, reverse, k - 1) : -1;
    const int64_t rows_prev = k > 0 ? std::min(rows, a.rows[t_prev]) : 0;
    const T* c_prev = k > 0 ? b.cells + a.offset[t_prev] * H : nullptr;

    const T* dh = b.dh;
    const T* dh2 = b.grad_y + off * Hout;
    if (proj) {
      // dh_total = dh + grad_y; dh_raw = dh_total @ w_hr
      T* dht = b.dh_total + off * Hout;
      for (int64_t i = 0; i < rows * Hout; ++i) dht[i] = b.dh[i] + dh2[i];
      gemm<T>(false, false, rows, H, Hout, T(1), dht, Hout, b.w_hr, H, T(0), b.dh_raw, H);
      dh = b.dh_raw;
      dh2 = nullptr;
    }
    const int64_t dh_ld = proj ? H : Hout;
    T* dgates = b.dgates + off * G;  // dgates: [rows, 4H]
    parallel_step(rows, H, [&](int64_t r0, int64_t r1, int64_t j0, int64_t j1) {
      // Rows below rows_prev take c_prev from the previous step, the rest from c0.
      const int64_t split = std::clamp(rows_prev, r0, r1);
      for (int part = 0; part < 2; ++part) {
        const int64_t p0 = part == 0 ? r0 : split, p1 = part == 0 ? split : r1;
        if (p0 >= p1) continue;
        const T* cp = part == 0 ? rows_at(c_prev, p0, H) : rows_at(b.c0, p0, H);
        BackwardStep<T> s{rows_at(b.gates + off * G, p0, G), G,
                          rows_at(b.cells + off * H, p0, H), H,
                          cp, H,
                          rows_at(dh, p0, dh_ld), dh_ld,
                          rows_at(dh2, p0, Hout), Hout,
                          rows_at(b.dc, p0, H), H,
                          rows_at(dgates, p0, G), G};
        kernels.backward(s, p1 - p0, H, j0, j1);
      }
    });
    // dh[0:rows] = dgates @ w_hh: the gradient reaching h_prev.
    gemm<T>(false, false, rows, Hout, G, T(1), dgates, G, b.w_hh, Hout, T(0), b.dh, Hout);
  }
}

template void lstm_forward_loop<float>(const LayerArgs&, bool, const ForwardLoop<float>&);
template void lstm_forward_loop<double>(const LayerArgs&, bool, const ForwardLoop<double>&);
template void lstm_backward_loop<float>(const LayerArgs&, bool, const BackwardLoop<float>&);
template void lstm_backward_loop<double>(const LayerArgs&, bool, const BackwardLoop<double>&);

}  // namespace fused_lstm::cpu
