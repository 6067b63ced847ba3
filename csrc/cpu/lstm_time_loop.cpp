#include "lstm_time_loop.h"

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <numeric>
#include <vector>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "cpu_gemm.h"
#include "vector_kernels.h"

namespace fused_lstm::cpu {

namespace {

// Below this many multiply-adds per step, one thread runs the loop: waking a
// second thread and meeting it at a barrier every step costs more than the
// work it would take over. The forward step's GEMM streams w_hh from L2, and
// halving that pays from about 64K multiply-adds (B = 1, H = 128: 185 -> 147 us
// per call); the backward step, whose two threads read the whole of d(gates),
// only from 512K (at B = 1 two threads were 5% slower there).
constexpr int64_t kMinParallelForwardStepMacs = 48 * 1024;
constexpr int64_t kMinParallelBackwardStepMacs = 512 * 1024;

// The part of a step one thread owns: gate chunks [c0, c1) (hidden units
// [u0, u1), gate columns [g0, g1)), and columns [o0, o1) of an Hout-wide row.
struct Share {
  int64_t c0, c1, u0, u1, g0, g1, o0, o1;
};

Share share_of(int64_t p, int64_t P, int64_t H, int64_t Hout) {
  const int64_t C = chunk_count(H);
  Share s;
  s.c0 = C * p / P;
  s.c1 = C * (p + 1) / P;
  s.u0 = std::min(H, s.c0 * kGateChunk);
  s.u1 = std::min(H, s.c1 * kGateChunk);
  s.g0 = 4 * s.u0;
  s.g1 = 4 * s.u1;
  // Hout columns in multiples of 16 (one AVX-512 vector of floats).
  const int64_t blocks = (Hout + 15) / 16;
  s.o0 = std::min(Hout, blocks * p / P * 16);
  s.o1 = std::min(Hout, blocks * (p + 1) / P * 16);
  return s;
}

int64_t threads_for(const LayerArgs& a, int64_t min_macs) {
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), chunk_count(a.H));
  const int64_t macs = a.B * 4 * a.H * a.Hout;
  if (threads <= 1 || macs < min_macs || at::in_parallel_region()) return 1;
  return threads;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#endif
}

// A barrier for the few threads of one time loop, met every step: a counter
// and a sense flag on cache lines of their own, spun on with pause (yielding
// after a while, should a thread have lost its core). Against OpenMP's
// barrier, timed interleaved in one process: B = 1 forward -4%, training -2%.
struct SpinBarrier {
  alignas(64) std::atomic<int> arrived{0};
  alignas(64) std::atomic<int> sense{0};
  void wait(int team, int& local_sense) {
    local_sense ^= 1;
    if (arrived.fetch_add(1, std::memory_order_acq_rel) == team - 1) {
      arrived.store(0, std::memory_order_relaxed);
      sense.store(local_sense, std::memory_order_release);
      return;
    }
    for (int64_t spins = 0; sense.load(std::memory_order_acquire) != local_sense; ++spins) {
      if (spins < (1 << 16)) {
        cpu_relax();
      } else {
        std::this_thread::yield();
      }
    }
  }
};

// Runs body(p, P, barrier) on P threads that live for the whole time loop.
template <typename Body>
void run_team(int64_t P, const Body& body) {
  if (P == 1) {
    body(0, 1, [] {});
    return;
  }
  SpinBarrier barrier;
#pragma omp parallel num_threads(static_cast<int>(P))
  {
    const int64_t p = omp_get_thread_num();
    const int64_t team = omp_get_num_threads();  // the runtime may grant fewer
    int sense = 0;
    body(p, team, [&] { barrier.wait(static_cast<int>(team), sense); });
  }
}

// Two ways to put a time loop on several threads:
// - split the hidden units: every thread multiplies all rows by its columns
//   of w_hh, and the threads meet at a barrier each step, since the next step
//   needs all of h;
// - split the batch rows: every thread runs the whole loop on its own rows,
//   with all of w_hh, and never waits for another.
// The second needs w_hh in each core's L2 (1 MiB here) and enough rows per
// thread to keep the GEMM tile busy. Timed interleaved in one process, rows
// against units: digits-rows (B = 64, H = 64) inference -3%, training -4%;
// float64 (B = 32, H = 128) inference -7%; long-seq (B = 16, H = 128) +1.5%;
// bfloat16 (B = 32, H = 256) unchanged. While one core ran at half speed
// (this machine does that for minutes at a time) the barrier made the fast
// core wait every step, and rows gained far more: digits-rows -28% and -19%,
// long-seq -13% and -13%.
constexpr int64_t kMaxRowSplitWeightBytes = 512 * 1024;  // w_hh^T, per core
constexpr int64_t kMinRowsPerThread = 8;

// Threads that split the batch rows, or 1 where the hidden units are split
// instead (or nothing is).
int64_t row_split_threads(const LayerArgs& a, int64_t min_macs, int64_t operand_bytes) {
  const int64_t threads = threads_for(a, min_macs);
  const int64_t w_hh_bytes = operand_bytes * a.Hout * 4 * a.H;
  if (threads <= 1 || w_hh_bytes > kMaxRowSplitWeightBytes) return 1;
  return a.B >= kMinRowsPerThread * threads ? threads : 1;
}

// body(sub, b0) on P threads, each given batch rows [b0, b1) as a LayerArgs of
// its own: its step t has rows [offset[t] + b0, offset[t] + min(rows[t], b1))
// (none once a packed batch has shrunk below b0). State buffers ([B, .]) are
// the caller's to offset by b0 rows.
template <typename Body>
void run_on_row_ranges(const LayerArgs& a, int64_t P, const Body& body) {
#pragma omp parallel num_threads(static_cast<int>(P))
  {
    const int64_t p = omp_get_thread_num(), team = omp_get_num_threads();
    const int64_t b0 = a.B * p / team, b1 = a.B * (p + 1) / team;
    LayerArgs sub = a;
    sub.B = b1 - b0;
    for (int64_t t = 0; t < a.T; ++t) {
      sub.rows[t] = std::clamp<int64_t>(a.rows[t] - b0, 0, b1 - b0);
      sub.offset[t] = a.offset[t] + b0;
    }
    body(sub, b0);
  }
}

// A time loop on the threads: rows(sub, b0) on each thread's batch rows where
// row_split_threads allows, else team(p, P, barrier) on the threads_for team.
template <typename RowBody, typename TeamBody>
void run_time_loop(const LayerArgs& a, int64_t min_macs, int64_t operand_bytes,
                   const RowBody& rows, const TeamBody& team) {
  const int64_t P = row_split_threads(a, min_macs, operand_bytes);
  if (P > 1) {
    run_on_row_ranges(a, P, rows);
  } else {
    run_team(threads_for(a, min_macs), team);
  }
}

// Thread p of P's part of every forward step: its gate chunks (all of them
// when P = 1), meeting the others at barrier() where a step needs all of h.
template <typename In, typename Barrier>
void forward_steps(const LayerArgs& a, bool reverse, const ForwardLoop<In>& f, int64_t p,
                   int64_t P, const Barrier& barrier) {
  using T = Acc<In>;
  constexpr int64_t cs = kColumnStride<In>;
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;
  const bool proj = f.w_hr_t != nullptr;
  const bool save = f.cells != nullptr;
  const auto& kernels = vector_kernels<T>();
  const Share s = share_of(p, P, H, Hout);
  // C[:, g0:g1] (+)= A[m, K] @ W[:, g0:g1], W being w_ih^T or w_hh^T (K rows).
  const auto weight_gemm = [&](int64_t m, int64_t K, const In* A, int64_t lda, const In* W,
                               bool in_panels, T* C, bool accumulate) {
    if (in_panels) {
      gemm_nn_panels<In>(m, s.g1 - s.g0, K, A, lda, W + cs * panel_rows<In>(K) * s.g0,
                         C + s.g0, G, accumulate);
    } else {
      gemm_nn<In>(m, s.g1 - s.g0, K, A, lda, W + cs * s.g0, G, C + s.g0, G, accumulate);
    }
  };
  for (int64_t k = 0; k < a.T; ++k) {
    const int64_t t = step_time(a, reverse, k);
    const int64_t off = a.offset[t], rows = a.rows[t];
    T* gates = f.gates + (f.gates_all_steps ? off * G : 0);  // gates: [rows, 4H]
    In* y = f.y + off * Hout;                                // y: [rows, Hout]
    if (f.x) {
      // gates[:, g0:g1] = x_t @ w_ih^T[:, g0:g1]
      weight_gemm(rows, a.I, f.x + off * a.I, a.I, f.w_ih_t, f.w_ih_panels, gates, false);
    }
    // gates[:, g0:g1] += h_prev @ w_hh^T[:, g0:g1]; h_prev is y of the previous
    // step for the rows it had, h0 for rows that start here.
    const int64_t from_prev = k > 0 ? std::min(rows, a.rows[step_time(a, reverse, k - 1)]) : 0;
    if (from_prev > 0) {
      const In* y_prev = f.y + a.offset[step_time(a, reverse, k - 1)] * Hout;
      weight_gemm(from_prev, Hout, y_prev, Hout, f.w_hh_t, true, gates, true);
    }
    weight_gemm(rows - from_prev, Hout, f.h0 + from_prev * Hout, Hout, f.w_hh_t, true,
                gates + from_prev * G, true);
    for (int64_t c = s.c0; c < s.c1; ++c) {
      const int64_t u = c * kGateChunk, w = chunk_width(H, c);
      ForwardStep<T> st{gates + 4 * u, G,
                        f.bias ? f.bias + 4 * u : nullptr,
                        f.c + u, H,
                        save ? f.cells + off * H + u : nullptr, H,
                        nullptr, proj ? H : Hout,
                        save};
      if constexpr (std::is_same_v<In, T>) {
        st.h = proj ? f.h_raw + u : y + u;
      } else {
        st.h_bf16 = y + u;
      }
      kernels.forward(st, rows, w, 0, w);
    }
    if constexpr (std::is_same_v<In, T>) {
      if (proj) {
        barrier();
        // y[:, o0:o1] = h_raw @ w_hr^T[:, o0:o1]
        gemm_nn<T>(rows, s.o1 - s.o0, H, f.h_raw, H, f.w_hr_t + s.o0, Hout, y + s.o0, Hout,
                   false);
      }
    }
    barrier();
  }
}

}  // namespace

template <typename In>
void lstm_forward_loop(const LayerArgs& a, bool reverse, const ForwardLoop<In>& f) {
  run_time_loop(
      a, kMinParallelForwardStepMacs, sizeof(In),
      [&](const LayerArgs& sub, int64_t b0) {
        ForwardLoop<In> g = f;  // the [B, .] buffers from this thread's first row
        g.h0 += b0 * a.Hout;
        g.c += b0 * a.H;
        if (g.h_raw) g.h_raw += b0 * a.H;
        if (!g.gates_all_steps) g.gates += b0 * 4 * a.H;
        forward_steps(sub, reverse, g, 0, 1, [] {});
      },
      [&](int64_t p, int64_t P, const auto& barrier) {
        forward_steps(a, reverse, f, p, P, barrier);
      });
}

namespace {

// Thread p of P's part of backward steps k_end - 1 .. k_begin, as forward_steps.
template <typename In, typename Barrier>
void backward_steps(const LayerArgs& a, bool reverse, const BackwardLoop<In>& b,
                    int64_t k_begin, int64_t k_end, int64_t p, int64_t P,
                    const Barrier& barrier) {
  using T = Acc<In>;
  constexpr int64_t cs = kColumnStride<In>;
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;
  const bool proj = b.w_hr != nullptr;
  const auto& kernels = vector_kernels<T>();
  const Share s = share_of(p, P, H, Hout);
  for (int64_t k = k_end - 1; k >= k_begin; --k) {
    const int64_t t = step_time(a, reverse, k);
    const int64_t off = a.offset[t], rows = a.rows[t];
    In* dgates = b.dgates + b.block_row[t] * G;  // dgates: [rows, 4H]
    // The previous step (in this direction's order) holds c_prev for its rows;
    // rows it lacked (packed, reverse) started from c0.
    const int64_t t_prev = k > 0 ? step_time(a, reverse, k - 1) : -1;
    const int64_t from_prev = k > 0 ? std::min(rows, a.rows[t_prev]) : 0;
    const T* c_prev = k > 0 ? b.cells + a.offset[t_prev] * H : nullptr;
    const T* grad_y = b.grad_y + off * Hout;

    const T* dh = b.dh;
    const T* dh2 = grad_y;
    int64_t dh_ld = Hout;
    if (proj) {
      // dh_total = dh + grad_y (columns o0:o1), then dh_raw = dh_total @ w_hr.
      T* dht = b.dh_total + off * Hout;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = s.o0; j < s.o1; ++j)
          dht[r * Hout + j] = b.dh[r * Hout + j] + grad_y[r * Hout + j];
      barrier();
      gemm_nn<T>(rows, s.u1 - s.u0, Hout, dht, Hout, b.w_hr + s.u0, H, b.dh_raw + s.u0, H,
                 false);
      dh = b.dh_raw;
      dh2 = nullptr;
      dh_ld = H;
    }
    for (int64_t c = s.c0; c < s.c1; ++c) {
      const int64_t u = c * kGateChunk, w = chunk_width(H, c);
      // Rows below from_prev take c_prev from the previous step, the rest from c0.
      for (int part = 0; part < 2; ++part) {
        const int64_t r0 = part == 0 ? 0 : from_prev, r1 = part == 0 ? from_prev : rows;
        if (r0 >= r1) continue;
        const T* cp = part == 0 ? c_prev + u : b.c0 + r0 * H + u;
        BackwardStep<T> st{b.gates + (off + r0) * G + 4 * u, G,
                           b.cells + (off + r0) * H + u, H,
                           cp, H,
                           dh + r0 * dh_ld + u, dh_ld,
                           dh2 ? dh2 + r0 * Hout + u : nullptr, Hout,
                           b.dc + r0 * H + u, H,
                           nullptr, G};
        if constexpr (std::is_same_v<In, T>) {
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

// b with its [B, .] state buffers from batch row b0 on: a row-split thread's.
template <typename In>
BackwardLoop<In> from_row(const LayerArgs& a, const BackwardLoop<In>& b, int64_t b0) {
  BackwardLoop<In> g = b;
  g.c0 += b0 * a.H;
  g.dh += b0 * a.Hout;
  g.dc += b0 * a.H;
  if (g.dh_raw) g.dh_raw += b0 * a.H;
  return g;
}

}  // namespace

template <typename In>
void lstm_backward_loop(const LayerArgs& a, bool reverse, const BackwardLoop<In>& b,
                        int64_t k_begin, int64_t k_end) {
  run_time_loop(
      a, kMinParallelBackwardStepMacs, sizeof(In),
      [&](const LayerArgs& sub, int64_t b0) {
        backward_steps(sub, reverse, from_row(a, b, b0), k_begin, k_end, 0, 1, [] {});
      },
      [&](int64_t p, int64_t P, const auto& barrier) {
        backward_steps(a, reverse, b, k_begin, k_end, p, P, barrier);
      });
}

int64_t block_begin(const LayerArgs& a, bool reverse, int64_t k_end, int64_t block_rows) {
  int64_t k_begin = k_end - 1;
  int64_t rows = a.rows[step_time(a, reverse, k_begin)];
  while (k_begin > 0 && rows + a.rows[step_time(a, reverse, k_begin - 1)] <= block_rows) {
    --k_begin;
    rows += a.rows[step_time(a, reverse, k_begin)];
  }
  return k_begin;
}

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

namespace {

template <typename T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

}  // namespace

// Each thread's own weight gradients ([I + Hout, 4H] in the accumulation type)
// are read and written once per block; past this size they no longer sit in
// L2 next to the block, and the whole-block GEMMs on all threads win.
constexpr int64_t kMaxOwnWeightGradientBytes = 512 * 1024;

// Timed interleaved in one process against the loop on split rows followed by
// whole-block GEMMs on all threads (each in a parallel region of its own, on
// rows the other core wrote): digits-rows (B = 64, I = 28, H = 64) training
// -6%, its backward op 540 -> 495 us; long-seq (B = 16, I = 64, H = 128)
// training -5%. float64 (I = H = 128) and bfloat16 (I = H = 256), whose own
// gradients take 1 and 2 MiB per thread, ran 3% and 6% slower: hence the limit.
template <typename In>
bool lstm_backward_by_rows(const LayerArgs& a, bool reverse, const BackwardLoop<In>& b,
                           const BackwardGradients<In>& g, int64_t block_rows) {
  using T = Acc<In>;
  const int64_t P = row_split_threads(a, kMinParallelBackwardStepMacs, sizeof(In));
  const int64_t H = a.H, G = 4 * a.H, I = a.I, Hout = a.Hout;
  if (P <= 1 || (I + Hout) * G * int64_t(sizeof(T)) > kMaxOwnWeightGradientBytes) return false;
  // Thread p's weight gradients ([I + Hout, 4H], w_ih's rows first) and
  // column sums ([4H]); thread 0 writes the outputs themselves.
  std::vector<T*> w_sums(P, nullptr), bias_sums(P, nullptr);
  run_on_row_ranges(a, P, [&](const LayerArgs& sub, int64_t b0) {
    const int64_t p = omp_get_thread_num(), team = omp_get_num_threads();
    const int64_t own_rows = std::accumulate(sub.rows.begin(), sub.rows.end(), int64_t(0));
    const int64_t cap = std::min(std::max(block_rows / team, sub.B), own_rows);
    // This thread's block: d(gates), x, h_prev and grad_x rows, in the order of place_block.
    auto dgates = scratch<In>(cap * G), xs = scratch<In>(cap * I), hs = scratch<In>(cap * Hout);
    auto dx = scratch<T>(cap * I);
    auto own_w = scratch<T>(p == 0 ? 0 : (I + Hout) * G);
    std::vector<T> own_bias(g.grad_bias ? G : 0, T(0));
    T* w_ih_sum = p == 0 ? g.grad_w_ih_t : own_w.get();
    T* w_hh_sum = p == 0 ? g.grad_w_hh_t : own_w.get() + I * G;
    std::vector<int64_t> block_row(a.T, 0);

    BackwardLoop<In> bl = from_row(a, b, b0);
    bl.dgates = dgates.get();
    bl.block_row = block_row.data();
    bool first = true;
    for (int64_t k_end = a.T; k_end > 0;) {
      const int64_t k_begin = block_begin(sub, reverse, k_end, cap);
      const int64_t rows = place_block(sub, reverse, k_begin, k_end, block_row.data());
      backward_steps(sub, reverse, bl, k_begin, k_end, 0, 1, [] {});
      // grad_x rows = dgates @ w_ih; weight gradients += x^T @ dgates, h_prev^T @ dgates.
      gemm_nn<In>(rows, I, G, dgates.get(), G, g.w_ih, I, dx.get(), I, false);
      for (int64_t k = k_begin; k < k_end; ++k) {
        const int64_t t = step_time(sub, reverse, k), n = sub.rows[t];
        std::memcpy(g.grad_x + sub.offset[t] * I, dx.get() + block_row[t] * I, sizeof(T) * n * I);
        std::memcpy(xs.get() + block_row[t] * I, g.x + sub.offset[t] * I, sizeof(In) * n * I);
      }
      gather_h_prev<In>(sub, reverse, g.y, g.h0 + b0 * Hout, hs.get(), block_row.data(),
                        k_begin, k_end);
      gemm_tn<In>(rows, I, G, xs.get(), I, dgates.get(), G, w_ih_sum, G, !first);
      gemm_tn<In>(rows, Hout, G, hs.get(), Hout, dgates.get(), G, w_hh_sum, G, !first);
      for (int64_t r = 0; r < (g.grad_bias ? rows : 0); ++r) {
        const In* row = dgates.get() + r * G;
        for (int64_t col = 0; col < G; ++col) own_bias[col] += static_cast<T>(row[col]);
      }
      first = false;
      k_end = k_begin;
    }
    if (first) {  // no steps: no gradient
      std::fill(w_ih_sum, w_ih_sum + I * G, T(0));
      std::fill(w_hh_sum, w_hh_sum + Hout * G, T(0));
    }
    w_sums[p] = p == 0 ? nullptr : own_w.get();
    bias_sums[p] = own_bias.data();
#pragma omp barrier
    // Add the other threads' sums into thread 0's, each thread a range of rows.
    const int64_t W = I + Hout;
    for (int64_t r = W * p / team; r < W * (p + 1) / team; ++r) {
      T* out = r < I ? g.grad_w_ih_t + r * G : g.grad_w_hh_t + (r - I) * G;
      for (int64_t q = 1; q < team; ++q) {
        const T* add = w_sums[q] + r * G;
        for (int64_t col = 0; col < G; ++col) out[col] += add[col];
      }
    }
    if (p == 0 && g.grad_bias) {
      for (int64_t col = 0; col < G; ++col) {
        T sum = 0;
        for (int64_t q = 0; q < team; ++q) sum += bias_sums[q][col];
        g.grad_bias[col] = sum;
      }
    }
#pragma omp barrier
  });
  return true;
}

template <typename T>
void gather_final_hidden(const LayerArgs& a, bool reverse, const T* y, T* h_n) {
  // Walking back from the last step processed, each step's rows beyond those
  // already filled ended there.
  int64_t filled = 0;
  for (int64_t k = a.T - 1; k >= 0 && filled < a.B; --k) {
    const int64_t t = step_time(a, reverse, k);
    const int64_t rows = a.rows[t];
    if (rows > filled) {
      std::memcpy(h_n + filled * a.Hout, y + (a.offset[t] + filled) * a.Hout,
                  sizeof(T) * (rows - filled) * a.Hout);
      filled = rows;
    }
  }
}

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

#define FUSED_LSTM_INSTANTIATE(T)                                                      \
  template void lstm_forward_loop<T>(const LayerArgs&, bool, const ForwardLoop<T>&);   \
  template void lstm_backward_loop<T>(const LayerArgs&, bool, const BackwardLoop<T>&,   \
                                      int64_t, int64_t);                                 \
  template void gather_final_hidden<T>(const LayerArgs&, bool, const T*, T*);          \
  template void gather_h_prev<T>(const LayerArgs&, bool, const T*, const T*, T*,           \
                                 const int64_t*, int64_t, int64_t);                        \
  template bool lstm_backward_by_rows<T>(const LayerArgs&, bool, const BackwardLoop<T>&,   \
                                         const BackwardGradients<T>&, int64_t);
FUSED_LSTM_INSTANTIATE(float)
FUSED_LSTM_INSTANTIATE(double)
FUSED_LSTM_INSTANTIATE(c10::BFloat16)
#undef FUSED_LSTM_INSTANTIATE

}  // namespace fused_lstm::cpu
