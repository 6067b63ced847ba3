// The CPU backward of one layer direction (lstm_time_loop.h): the backward steps in
// blocks, and the three routes (cpu_plan.h) by which the threads turn each block's
// d(gates) into gradients.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "cpu_gemm.h"
#include "lstm_time_loop.h"
#include "thread_team.h"
#include "vector_kernels.h"

namespace fused_lstm::cpu {

namespace {

// Thread p of P's part of backward steps k_end - 1 .. k_begin, as forward_steps.
template <typename In, typename Barrier>
void backward_steps(const LayerArgs& a, bool reverse, const BackwardLoop<In>& b,
                    int64_t k_begin, int64_t k_end, int64_t p, int64_t P,
                    const Barrier& barrier) {
  using AccT = Acc<In>;
  constexpr int64_t cs = kColumnStride<In>;
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;
  const bool proj = b.w_hr != nullptr;
  const auto& kernels = vector_kernels<AccT>();
  const Share s = share_of(p, P, H, Hout);
  for (int64_t k = k_end - 1; k >= k_begin; --k) {
    const int64_t t = step_time(a, reverse, k);
    const int64_t off = a.offset[t], rows = a.rows[t];
    In* dgates = b.dgates + b.block_row[t] * G;  // dgates: [rows, 4H]
    // The previous step (in this direction's order) holds c_prev for its rows;
    // rows it lacked (packed, reverse) started from c0.
    const int64_t t_prev = k > 0 ? step_time(a, reverse, k - 1) : -1;
    const int64_t from_prev = k > 0 ? std::min(rows, a.rows[t_prev]) : 0;
    const AccT* c_prev = k > 0 ? b.cells + a.offset[t_prev] * H : nullptr;
    const AccT* grad_y = b.grad_y + off * Hout;

    const AccT* dh = b.dh;
    const AccT* dh2 = grad_y;
    int64_t dh_ld = Hout;
    if (proj) {
      // dh_total = dh + grad_y (columns o0:o1), then dh_raw = dh_total @ w_hr.
      AccT* dht = b.dh_total + off * Hout;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = s.o0; j < s.o1; ++j)
          dht[r * Hout + j] = b.dh[r * Hout + j] + grad_y[r * Hout + j];
      barrier();
      gemm_nn<AccT>(rows, s.u1 - s.u0, Hout, dht, Hout, b.w_hr + s.u0, H, b.dh_raw + s.u0, H,
                 false);
      dh = b.dh_raw;
      dh2 = nullptr;
      dh_ld = H;
    }
    for (int64_t chunk = s.chunk_begin; chunk < s.chunk_end; ++chunk) {
      const int64_t u = chunk * kGateChunk, w = chunk_width(H, chunk);
      // Rows below from_prev take c_prev from the previous step, the rest from c0.
      for (int part = 0; part < 2; ++part) {
        const int64_t r0 = part == 0 ? 0 : from_prev, r1 = part == 0 ? from_prev : rows;
        if (r0 >= r1) continue;
        const AccT* cp = part == 0 ? c_prev + u : b.c0 + r0 * H + u;
        BackwardStep<AccT> st{b.gates + (off + r0) * G + 4 * u, G,
                           b.cells + (off + r0) * H + u, H,
                           cp, H,
                           dh + r0 * dh_ld + u, dh_ld,
                           dh2 ? dh2 + r0 * Hout + u : nullptr, Hout,
                           b.dc + r0 * H + u, H,
                           nullptr, G};
        if constexpr (std::is_same_v<In, AccT>) {
          st.dgates = dgates + r0 * G + 4 * u;
        } else {
          st.dgates_bf16 = dgates + r0 * G + 4 * u;
        }
        kernels.backward(st, r1 - r0, w, 0, w);
      }
    }
    barrier();
    // dh[:, cols] = dgates @ w_hh[:, cols], the gradient reaching h_prev. Without
    // a projection each thread's columns are its own hidden units, which only
    // its own pointwise pass reads next, so no barrier is needed after it.
    const int64_t j0 = proj ? s.o0 : s.u0, j1 = proj ? s.o1 : s.u1;
    gemm_nn<In>(rows, j1 - j0, G, dgates, G, b.w_hh + cs * j0, Hout, b.dh + j0, Hout, false);
  }
}

// b as a row-split thread sees it: its [B, .] state buffers from batch row b0
// on, and d(gates) from row b0 of each step's rows in the block (step t's
// rows start at block_row[t]; the thread's sub-LayerArgs counts from b0).
template <typename In>
BackwardLoop<In> from_row(const LayerArgs& a, const BackwardLoop<In>& b, int64_t b0) {
  BackwardLoop<In> g = b;
  g.c0 += b0 * a.H;
  g.dh += b0 * a.Hout;
  g.dc += b0 * a.H;
  if (g.dh_raw) g.dh_raw += b0 * a.H;
  if (g.dgates) g.dgates += b0 * 4 * a.H;
  return g;
}

// The backward loop of steps k_end - 1 .. k_begin on the threads `split` gives it
// (the row split or the unit split, as forward).
template <typename In>
void backward_loop(const LayerArgs& a, bool reverse, const LoopSplit& split,
                   const BackwardLoop<In>& b, int64_t k_begin, int64_t k_end) {
  run_time_loop(
      a, split,
      [&](const LayerArgs& sub, int64_t b0, int64_t) {
        backward_steps(sub, reverse, from_row(a, b, b0), k_begin, k_end, 0, 1, [] {});
      },
      [&](int64_t p, int64_t P, const auto& barrier) {
        backward_steps(a, reverse, b, k_begin, k_end, p, P, barrier);
      });
}

// The block of backward steps that ends at step k_end - 1: it starts at the
// step this returns, and holds at most block_rows rows (or one step).
int64_t block_begin(const LayerArgs& a, bool reverse, int64_t k_end, int64_t block_rows) {
  int64_t k_begin = k_end - 1;
  int64_t rows = a.rows[step_time(a, reverse, k_begin)];
  while (k_begin > 0 && rows + a.rows[step_time(a, reverse, k_begin - 1)] <= block_rows) {
    --k_begin;
    rows += a.rows[step_time(a, reverse, k_begin)];
  }
  return k_begin;
}

// Lays the rows of steps k_begin..k_end-1 out in a block buffer, in time
// order: block_row[t] is the buffer row of step t's first row (block_row is
// indexed by time). Returns the block's row count.
int64_t place_block(const LayerArgs& a, bool reverse, int64_t k_begin, int64_t k_end,
                    int64_t* block_row) {
  const int64_t t0 = std::min(step_time(a, reverse, k_begin), step_time(a, reverse, k_end - 1));
  int64_t rows = 0;
  for (int64_t t = t0; t < t0 + (k_end - k_begin); ++t) {
    block_row[t] = rows;
    rows += a.rows[t];
  }
  return rows;
}

// h_prev: the state each row of steps k_begin..k_end-1 started from (y of the
// previous step in this direction's order, or h0 where the row starts fresh),
// step t's rows from row block_row[t] on.
template <typename T>
void gather_h_prev(const LayerArgs& a, bool reverse, const T* y, const T* h0, T* h_prev,
                   const int64_t* block_row, int64_t k_begin, int64_t k_end) {
  const int64_t Hout = a.Hout;
  for (int64_t k = k_begin; k < k_end; ++k) {
    const int64_t t = step_time(a, reverse, k);
    const int64_t rows = a.rows[t];
    int64_t from_prev = 0;
    T* dst = h_prev + block_row[t] * Hout;
    if (k > 0) {
      const int64_t tp = step_time(a, reverse, k - 1);
      from_prev = std::min(rows, a.rows[tp]);
      std::memcpy(dst, y + a.offset[tp] * Hout, sizeof(T) * from_prev * Hout);
    }
    std::memcpy(dst + from_prev * Hout, h0 + from_prev * Hout,
                sizeof(T) * (rows - from_prev) * Hout);
  }
}

// The rows of steps k_begin..k_end-1 in x and grad_x (contiguous there), and in
// the block buffers `dgates` and `h_prev` (as place_block lays them out).
struct StepRows {
  int64_t x_row;      // first row in x and grad_x
  int64_t block_row;  // first row in dgates and h_prev
  int64_t count;
};

StepRows step_rows(const LayerArgs& a, bool reverse, const int64_t* block_row, int64_t k_begin,
                   int64_t k_end) {
  const int64_t t0 = std::min(step_time(a, reverse, k_begin), step_time(a, reverse, k_end - 1));
  int64_t rows = 0;
  for (int64_t t = t0; t < t0 + (k_end - k_begin); ++t) rows += a.rows[t];
  return {a.offset[t0], block_row[t0], rows};
}

// Part of the gradients of the steps `s` covers, from their d(gates) and
// gathered h_prev: rows [x_lo, x_hi) of those steps' grad_x = dgates @ w_ih,
// and columns [c_lo, c_hi) of grad_w_ih^T (+)= x^T @ dgates, grad_w_hh^T (+)=
// h_prev^T @ dgates and grad_bias += column sums of dgates. Parts with
// disjoint ranges write disjoint memory, so two threads can share one call's
// work. The GEMMs are split over the threads when `threaded`.
template <typename In>
void part_gradients(const LayerArgs& a, const BackwardGradients<In>& g, const In* dgates,
                    const In* h_prev, const StepRows& s, int64_t x_lo, int64_t x_hi,
                    int64_t c_lo, int64_t c_hi, bool accumulate, bool threaded) {
  using AccT = Acc<In>;
  const int64_t G = 4 * a.H, I = a.I, Hout = a.Hout, N = c_hi - c_lo;
  const In* dg = dgates + s.block_row * G;
  const In* hp = h_prev + s.block_row * Hout;
  const auto nn = threaded ? parallel_gemm_nn<In> : gemm_nn<In>;
  const auto tn = threaded ? parallel_gemm_tn<In> : gemm_tn<In>;
  if (x_hi > x_lo) {
    nn(x_hi - x_lo, I, G, dg + x_lo * G, G, g.w_ih, I, g.grad_x + (s.x_row + x_lo) * I, I,
       false);
  }
  if (N <= 0) return;
  tn(s.count, I, N, g.x + s.x_row * I, I, dg + c_lo, G, g.grad_w_ih_t + c_lo, G, accumulate);
  tn(s.count, Hout, N, hp, Hout, dg + c_lo, G, g.grad_w_hh_t + c_lo, G, accumulate);
  for (int64_t r = 0; r < (g.grad_bias ? s.count : 0); ++r) {
    const In* row = dg + r * G;
    for (int64_t col = c_lo; col < c_hi; ++col) g.grad_bias[col] += static_cast<AccT>(row[col]);
  }
}

// All the gradients of steps k_begin..k_end-1 (see part_gradients).
template <typename In>
void steps_gradients(const LayerArgs& a, bool reverse, const BackwardGradients<In>& g,
                     const In* dgates, In* h_prev, const int64_t* block_row, int64_t k_begin,
                     int64_t k_end, bool accumulate, bool threaded) {
  const StepRows s = step_rows(a, reverse, block_row, k_begin, k_end);
  gather_h_prev<In>(a, reverse, g.y, g.h0, h_prev, block_row, k_begin, k_end);
  part_gradients<In>(a, g, dgates, h_prev, s, 0, s.count, 0, 4 * a.H, accumulate, threaded);
}

template <typename T>
at::Tensor scratch(int64_t n) {
  return at::empty({n}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

// Route 1, on P threads that split the batch rows: each runs the steps on its
// own rows and turns its d(gates) into its rows of grad_x and weight gradients
// of its own, block by block with no barrier; those are added up at the end.
template <typename In>
void own_rows_backward(const LayerArgs& a, bool reverse, int64_t P, const BackwardLoop<In>& b,
                       const BackwardGradients<In>& g, int64_t block_rows) {
  using AccT = Acc<In>;
  const int64_t G = 4 * a.H, I = a.I, Hout = a.Hout, W = I + Hout;
  // Range p's block buffers: d(gates), x, h_prev ([cap, .] of In) and grad_x
  // rows ([cap, I] of AccT), in place_block's order; then its own weight
  // gradients ([I + Hout, 4H], w_ih's rows first) and column sums ([4H]).
  const int64_t cap = std::max(block_rows / P, (a.B + P - 1) / P);
  const int64_t in_size = cap * (G + I + Hout), acc_size = cap * I + W * G + G;
  const at::Tensor in_buffers = scratch<In>(P * in_size);
  const at::Tensor acc_buffers = scratch<AccT>(P * acc_size);
  const auto own_sums = [&](int64_t p) {
    return acc_buffers.data_ptr<AccT>() + p * acc_size + cap * I;
  };
  run_on_row_ranges(a, P, [&](const LayerArgs& sub, int64_t b0, int64_t p) {
    In* dgates = in_buffers.data_ptr<In>() + p * in_size;
    In* xs = dgates + cap * G;
    In* hs = xs + cap * I;
    AccT* dx = acc_buffers.data_ptr<AccT>() + p * acc_size;
    AccT* w_ih_sum = own_sums(p);
    AccT* w_hh_sum = w_ih_sum + I * G;
    AccT* bias = w_ih_sum + W * G;
    std::fill(w_ih_sum, bias + G, AccT(0));  // stays so where the range has no steps
    std::vector<int64_t> block_row(a.T, 0);
    BackwardLoop<In> loop = from_row(a, b, b0);
    loop.dgates = dgates;
    loop.block_row = block_row.data();
    for (int64_t k_end = a.T; k_end > 0;) {
      const int64_t k_begin = block_begin(sub, reverse, k_end, cap);
      const int64_t rows = place_block(sub, reverse, k_begin, k_end, block_row.data());
      backward_steps(sub, reverse, loop, k_begin, k_end, 0, 1, [] {});
      // This range's rows of x and h_prev are one run per step: gathered into
      // the block buffers, and grad_x scattered back from one.
      gemm_nn<In>(rows, I, G, dgates, G, g.w_ih, I, dx, I, false);
      for (int64_t k = k_begin; k < k_end; ++k) {
        const int64_t t = step_time(sub, reverse, k), n = sub.rows[t];
        std::memcpy(g.grad_x + sub.offset[t] * I, dx + block_row[t] * I, sizeof(AccT) * n * I);
        std::memcpy(xs + block_row[t] * I, g.x + sub.offset[t] * I, sizeof(In) * n * I);
      }
      gather_h_prev<In>(sub, reverse, g.y, g.h0 + b0 * Hout, hs, block_row.data(), k_begin,
                        k_end);
      gemm_tn<In>(rows, I, G, xs, I, dgates, G, w_ih_sum, G, true);
      gemm_tn<In>(rows, Hout, G, hs, Hout, dgates, G, w_hh_sum, G, true);
      for (int64_t r = 0; r < (g.grad_bias ? rows : 0); ++r)
        for (int64_t col = 0; col < G; ++col) bias[col] += static_cast<AccT>(dgates[r * G + col]);
      k_end = k_begin;
    }
  });
  // The outputs: the sums of all ranges.
  at::parallel_for(0, W + 1, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      AccT* out = r < I   ? g.grad_w_ih_t + r * G
               : r < W ? g.grad_w_hh_t + (r - I) * G
                       : g.grad_bias;
      if (!out) continue;  // no bias
      std::fill(out, out + G, AccT(0));
      for (int64_t p = 0; p < P; ++p) {
        const AccT* add = own_sums(p) + r * G;
        for (int64_t col = 0; col < G; ++col) out[col] += add[col];
      }
    }
  });
}

// Route 2 (where the loop runs on one thread of several: a step too short to share,
// as at batch 1): in each block one thread runs the steps, and another turns each
// chunk of them into gradients as soon as it is done, on its own core, instead of
// the threads sharing the block's GEMMs after the loop.
//
// Route 2's block: steps k_end - 1 .. k_begin on one thread, their gradients
// on another, chunk by chunk. The last chunk waits for the loop to end, and
// the two threads share it: each takes half its rows of grad_x and half the
// weight-gradient columns. A chunk with fewer steps left after it than it
// holds joins them into the last one, so the loop's thread does not sit idle
// while the other works through one more full chunk (benchmarks/NOTES.md, row 35).
template <typename In>
void overlapped_block(const LayerArgs& a, bool reverse, const BackwardLoop<In>& loop,
                      const BackwardGradients<In>& g, In* h_prev, int64_t k_begin,
                      int64_t k_end) {
  alignas(64) std::atomic<int64_t> done{k_end};  // steps k >= done have their d(gates)
  alignas(64) std::atomic<int64_t> last_hi{-1};  // last chunk [k_begin, last_hi), once gathered
  const int64_t G = 4 * a.H;
  // Columns split at a multiple of 64 (whole register tiles of every GEMM kernel).
  const int64_t c_split = (G / 2) / 64 * 64;
#pragma omp parallel num_threads(2)
  {
    const int64_t team = omp_get_num_threads();
    const bool loop_thread = omp_get_thread_num() == 0;
    if (loop_thread) {
      for (int64_t k = k_end - 1; k >= k_begin; --k) {
        backward_steps(a, reverse, loop, k, k + 1, 0, 1, [] {});
        done.store(k, std::memory_order_release);
      }
    }
    if (omp_get_thread_num() == team - 1) {
      // Chunks of steps [lo, hi), latest first, of chunk_rows rows (or down to
      // the block's first step). Their bounds depend on the sizes alone, never
      // on how far the loop has got, so the gradients are summed in the same
      // order on every call (bitwise-equal results).
      const int64_t chunk_rows =
          std::max(Tuning::kOverlapChunkRows, Tuning::kOverlapChunkSteps * a.B);
      for (int64_t hi = k_end; hi > k_begin;) {
        int64_t lo = std::max(k_begin, block_begin(a, reverse, hi, chunk_rows));
        if (team >= 2 && lo > k_begin && lo - k_begin < hi - lo) lo = k_begin;
        spin_until([&] { return done.load(std::memory_order_acquire) <= lo; });
        if (lo > k_begin || team < 2) {
          steps_gradients<In>(a, reverse, g, loop.dgates, h_prev, loop.block_row, lo, hi,
                              hi != a.T, false);
        } else {
          const StepRows s = step_rows(a, reverse, loop.block_row, lo, hi);
          gather_h_prev<In>(a, reverse, g.y, g.h0, h_prev, loop.block_row, lo, hi);
          last_hi.store(hi, std::memory_order_release);
          part_gradients<In>(a, g, loop.dgates, h_prev, s, s.count / 2, s.count, c_split, G,
                             hi != a.T, false);
        }
        hi = lo;
      }
    }
    if (loop_thread && team >= 2) {
      int64_t hi = -1;
      spin_until([&] { return (hi = last_hi.load(std::memory_order_acquire)) >= 0; });
      const StepRows s = step_rows(a, reverse, loop.block_row, k_begin, hi);
      part_gradients<In>(a, g, loop.dgates, h_prev, s, 0, s.count / 2, 0, c_split, hi != a.T,
                         false);
    }
  }
}

// Routes 2 and 3, block by block; route 3: the loop on the threads the plan
// gives it, then the block's gradient GEMMs split over all threads.
template <typename In>
void backward_in_blocks(const LayerArgs& a, bool reverse, const BackwardPlan& plan,
                        const BackwardLoop<In>& b, const BackwardGradients<In>& g) {
  const bool overlap = plan.route == BackwardRoute::kOverlapped;
  const int64_t G = 4 * a.H;
  const int64_t cap = std::min(std::max(plan.block_rows, a.B), a.N);
  const at::Tensor dgates = scratch<In>(cap * G), h_prev = scratch<In>(cap * a.Hout);
  std::vector<int64_t> block_row(a.T, 0);
  BackwardLoop<In> loop = b;
  loop.dgates = dgates.data_ptr<In>();
  loop.block_row = block_row.data();
  for (int64_t k_end = a.T; k_end > 0;) {
    const int64_t k_begin = block_begin(a, reverse, k_end, cap);
    place_block(a, reverse, k_begin, k_end, block_row.data());
    if (overlap) {
      overlapped_block(a, reverse, loop, g, h_prev.data_ptr<In>(), k_begin, k_end);
    } else {
      backward_loop(a, reverse, plan.split, loop, k_begin, k_end);
      steps_gradients<In>(a, reverse, g, loop.dgates, h_prev.data_ptr<In>(), block_row.data(),
                          k_begin, k_end, k_end != a.T, true);
    }
    k_end = k_begin;
  }
}

}  // namespace

template <typename In>
void lstm_backward(const LayerArgs& a, bool reverse, const BackwardPlan& plan,
                   const BackwardLoop<In>& b, const BackwardGradients<In>& g) {
  if (plan.route == BackwardRoute::kOwnRows) {
    own_rows_backward(a, reverse, plan.split.threads, b, g, plan.block_rows);
  } else {
    backward_in_blocks(a, reverse, plan, b, g);
  }
}

#define FUSED_LSTM_INSTANTIATE(T)                                                   \
  template void lstm_backward<T>(const LayerArgs&, bool, const BackwardPlan&,       \
                                 const BackwardLoop<T>&, const BackwardGradients<T>&);
FUSED_LSTM_INSTANTIATE(float)
FUSED_LSTM_INSTANTIATE(double)
FUSED_LSTM_INSTANTIATE(c10::BFloat16)
#undef FUSED_LSTM_INSTANTIATE

}  // namespace fused_lstm::cpu
