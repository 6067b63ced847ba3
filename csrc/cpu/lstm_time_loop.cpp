#include "lstm_time_loop.h"

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

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

// Spins until done() holds: with pause, yielding after a while should the
// thread it waits for have lost its core.
template <typename Done>
void spin_until(const Done& done) {
  for (int64_t spins = 0; !done(); ++spins) {
    if (spins < (1 << 16)) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

// A barrier for the few threads of one time loop, met every step: a counter
// and a sense flag on cache lines of their own. Against OpenMP's barrier,
// timed interleaved in one process: B = 1 forward -4%, training -2%.
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
    spin_until([&] { return sense.load(std::memory_order_acquire) == local_sense; });
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

// body(sub, b0, p) for p < P on P threads, range p given batch rows [b0, b1)
// as a LayerArgs of its own: its step t has rows [offset[t] + b0,
// offset[t] + min(rows[t], b1)) (none once a packed batch has shrunk below
// b0). State buffers ([B, .]) are the caller's to offset by b0 rows. Should the
// runtime grant fewer threads, each takes several ranges in turn.
template <typename Body>
void run_on_row_ranges(const LayerArgs& a, int64_t P, const Body& body) {
#pragma omp parallel num_threads(static_cast<int>(P))
  {
    for (int64_t p = omp_get_thread_num(); p < P; p += omp_get_num_threads()) {
      const int64_t b0 = a.B * p / P, b1 = a.B * (p + 1) / P;
      LayerArgs sub = a;
      sub.B = b1 - b0;
      for (int64_t t = 0; t < a.T; ++t) {
        sub.rows[t] = std::clamp<int64_t>(a.rows[t] - b0, 0, b1 - b0);
        sub.offset[t] = a.offset[t] + b0;
      }
      body(sub, b0, p);
    }
  }
}

// A time loop on the threads: rows(sub, b0, p) on each thread's batch rows where
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
  // C[:, g0:g1] (+)= A[m, K] @ W[:, g0:g1], W being w_ih^T or w_hh^T (K rows, in panels).
  const auto weight_gemm = [&](int64_t m, int64_t K, const In* A, int64_t lda, const In* W, T* C,
                               bool accumulate) {
    gemm_nn_panels<In>(m, s.g1 - s.g0, K, A, lda, W + cs * panel_rows<In>(K) * s.g0, C + s.g0,
                       G, accumulate);
  };
  for (int64_t k = 0; k < a.T; ++k) {
    const int64_t t = step_time(a, reverse, k);
    const int64_t off = a.offset[t], rows = a.rows[t];
    T* gates = f.gates + (f.gates_all_steps ? off * G : 0);  // gates: [rows, 4H]
    In* y = f.y + off * Hout;                                // y: [rows, Hout]
    if (f.x) {
      // gates[:, g0:g1] = x_t @ w_ih^T[:, g0:g1]
      weight_gemm(rows, a.I, f.x + off * a.I, a.I, f.w_ih_t, gates, false);
    }
    // gates[:, g0:g1] += h_prev @ w_hh^T[:, g0:g1]; h_prev is y of the previous
    // step for the rows it had, h0 for rows that start here.
    const int64_t from_prev = k > 0 ? std::min(rows, a.rows[step_time(a, reverse, k - 1)]) : 0;
    if (from_prev > 0) {
      const In* y_prev = f.y + a.offset[step_time(a, reverse, k - 1)] * Hout;
      weight_gemm(from_prev, Hout, y_prev, Hout, f.w_hh_t, gates, true);
    }
    weight_gemm(rows - from_prev, Hout, f.h0 + from_prev * Hout, Hout, f.w_hh_t,
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
      [&](const LayerArgs& sub, int64_t b0, int64_t) {
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

// The backward loop of steps k_end - 1 .. k_begin on all the threads it
// warrants (the row split or the unit split, as forward).
template <typename In>
void backward_loop(const LayerArgs& a, bool reverse, const BackwardLoop<In>& b, int64_t k_begin,
                   int64_t k_end) {
  run_time_loop(
      a, kMinParallelBackwardStepMacs, sizeof(In),
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
  using T = Acc<In>;
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
    for (int64_t col = c_lo; col < c_hi; ++col) g.grad_bias[col] += static_cast<T>(row[col]);
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

// Each thread's own weight gradients ([I + Hout, 4H] in the accumulation type)
// are read and written once per block; past this size they no longer sit in
// L2 next to the block, and the whole-block GEMMs on all threads win.
constexpr int64_t kMaxOwnWeightGradientBytes = 512 * 1024;

// Route 1, where the batch rows are split between the threads: each runs the
// steps on its own rows and turns its d(gates) into its rows of grad_x and
// weight gradients of its own, block by block with no barrier; those are
// added up at the end. Returns false, having done nothing, elsewhere.
//
// Timed interleaved in one process against the loop on split rows followed by
// whole-block GEMMs on all threads (each in a parallel region of its own, on
// rows the other core wrote): digits-rows (B = 64, I = 28, H = 64) training
// -6%, its backward op 540 -> 495 us; long-seq (B = 16, I = 64, H = 128)
// training -5%. float64 (I = H = 128) and bfloat16 (I = H = 256), whose own
// gradients take 1 and 2 MiB per thread, ran 2% and 4% slower: hence the limit
// (with one core slowed they were 11% and 5% faster).
template <typename In>
bool backward_by_rows(const LayerArgs& a, bool reverse, const BackwardLoop<In>& b,
                      const BackwardGradients<In>& g, int64_t block_rows) {
  using T = Acc<In>;
  const int64_t P = row_split_threads(a, kMinParallelBackwardStepMacs, sizeof(In));
  const int64_t G = 4 * a.H, I = a.I, Hout = a.Hout, W = I + Hout;
  if (P <= 1 || W * G * int64_t(sizeof(T)) > kMaxOwnWeightGradientBytes) return false;
  // Range p's block buffers: d(gates), x, h_prev ([cap, .] of In) and grad_x
  // rows ([cap, I] of T), in place_block's order; then its own weight
  // gradients ([I + Hout, 4H], w_ih's rows first) and column sums ([4H]).
  const int64_t cap = std::max(block_rows / P, (a.B + P - 1) / P);
  const int64_t in_size = cap * (G + I + Hout), acc_size = cap * I + W * G + G;
  const at::Tensor in_buffers = scratch<In>(P * in_size);
  const at::Tensor acc_buffers = scratch<T>(P * acc_size);
  const auto own_sums = [&](int64_t p) {
    return acc_buffers.data_ptr<T>() + p * acc_size + cap * I;
  };
  run_on_row_ranges(a, P, [&](const LayerArgs& sub, int64_t b0, int64_t p) {
    In* dgates = in_buffers.data_ptr<In>() + p * in_size;
    In* xs = dgates + cap * G;
    In* hs = xs + cap * I;
    T* dx = acc_buffers.data_ptr<T>() + p * acc_size;
    T* w_ih_sum = own_sums(p);
    T* w_hh_sum = w_ih_sum + I * G;
    T* bias = w_ih_sum + W * G;
    std::fill(w_ih_sum, bias + G, T(0));  // stays so where the range has no steps
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
        std::memcpy(g.grad_x + sub.offset[t] * I, dx + block_row[t] * I, sizeof(T) * n * I);
        std::memcpy(xs + block_row[t] * I, g.x + sub.offset[t] * I, sizeof(In) * n * I);
      }
      gather_h_prev<In>(sub, reverse, g.y, g.h0 + b0 * Hout, hs, block_row.data(), k_begin,
                        k_end);
      gemm_tn<In>(rows, I, G, xs, I, dgates, G, w_ih_sum, G, true);
      gemm_tn<In>(rows, Hout, G, hs, Hout, dgates, G, w_hh_sum, G, true);
      for (int64_t r = 0; r < (g.grad_bias ? rows : 0); ++r)
        for (int64_t col = 0; col < G; ++col) bias[col] += static_cast<T>(dgates[r * G + col]);
      k_end = k_begin;
    }
  });
  // The outputs: the sums of all ranges.
  at::parallel_for(0, W + 1, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* out = r < I   ? g.grad_w_ih_t + r * G
               : r < W ? g.grad_w_hh_t + (r - I) * G
                       : g.grad_bias;
      if (!out) continue;  // no bias
      std::fill(out, out + G, T(0));
      for (int64_t p = 0; p < P; ++p) {
        const T* add = own_sums(p) + r * G;
        for (int64_t col = 0; col < G; ++col) out[col] += add[col];
      }
    }
  });
  return true;
}

// Rows of a chunk of route 2: kOverlapChunkSteps steps' rows, and at least
// kOverlapChunkRows. Fixed chunks (earlier: whatever the loop had passed, at
// least 16 rows) sum the gradients in the same order on every call. Timed
// interleaved against those, backward op: T=50 B=1 I=H=128 -1%, T=200 B=1 -3%,
// float64 B=1 -6%, bfloat16 B=1 0%, B=4 I=H=64 +4%, B=1 I=H=64 +5%; fixed
// chunks of 16 rows lost 12-15% on bfloat16 B=1 and B=4.
constexpr int64_t kOverlapChunkRows = 32;
constexpr int64_t kOverlapChunkSteps = 16;
// Route 2 from this many multiply-adds in the gradient GEMMs of a call.
constexpr int64_t kMinOverlapMacs = 1024 * 1024;

// Route 2 applies where the loop runs on one thread of several (small batch
// and hidden size: a step too short to share, as at batch 1): in each block
// one thread runs the steps, and another turns each chunk of them into
// gradients as soon as it is done, on its own core, instead of the threads
// sharing the block's GEMMs after the loop.
//
// Timed interleaved in one process against route 3 (the loop, then the
// block's GEMMs on two threads), backward op: T=50 B=1 I=H=128 -4% (the
// training step -3%), T=200 B=1 -22%, T=50 B=1 I=H=64 -13%, B=32 I=H=32
// -13%, B=4 I=H=64 -7%. With w_hh^T past L2 (B=1 I=H=256) it lost 5-13%: the
// GEMM thread's weights then compete with the loop's for L3, hence the limit.
template <typename In>
bool overlap_applies(const LayerArgs& a) {
  const int64_t G = 4 * a.H;
  return at::get_num_threads() >= 2 && !at::in_parallel_region() &&
         threads_for(a, kMinParallelBackwardStepMacs) == 1 &&
         int64_t(sizeof(In)) * G * a.Hout <= kMaxRowSplitWeightBytes &&
         a.N * G * (a.I + 2 * a.Hout) >= kMinOverlapMacs;
}

// Route 2's block: steps k_end - 1 .. k_begin on one thread, their gradients
// on another, chunk by chunk. The last chunk waits for the loop to end, and
// the two threads share it: each takes half its rows of grad_x and half the
// weight-gradient columns. A chunk with fewer steps left after it than it
// holds joins them into the last one; otherwise the loop's thread sat idle
// while the other worked through one more full chunk (at T=50 B=1 I=H=128 the
// loop ended at 109 us, the gradients at 143 us; now at 131 us).
//
// Timed interleaved in one process against the last chunk on one thread,
// backward op: T=50 B=1 I=H=128 -8%, T=50 B=4 I=H=64 -15%, T=50 B=1 I=H=64 -3%,
// T=200 B=1 -1.5%; bfloat16 T=50 B=1 I=H=128 -6%, float64 -15%.
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
      const int64_t chunk_rows = std::max(kOverlapChunkRows, kOverlapChunkSteps * a.B);
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

// Routes 2 and 3, block by block; route 3: the loop on all the threads it
// warrants, then the block's gradient GEMMs split over all threads.
template <typename In>
void backward_in_blocks(const LayerArgs& a, bool reverse, const BackwardLoop<In>& b,
                        const BackwardGradients<In>& g, int64_t block_rows) {
  const bool overlap = overlap_applies<In>(a);
  const int64_t G = 4 * a.H;
  const int64_t cap = std::min(std::max(block_rows, a.B), a.N);
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
      backward_loop(a, reverse, loop, k_begin, k_end);
      steps_gradients<In>(a, reverse, g, loop.dgates, h_prev.data_ptr<In>(), block_row.data(),
                          k_begin, k_end, k_end != a.T, true);
    }
    k_end = k_begin;
  }
}

}  // namespace

template <typename In>
void lstm_backward(const LayerArgs& a, bool reverse, const BackwardLoop<In>& b,
                   const BackwardGradients<In>& g, int64_t block_rows) {
  if (!backward_by_rows(a, reverse, b, g, block_rows)) {
    backward_in_blocks(a, reverse, b, g, block_rows);
  }
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

#define FUSED_LSTM_INSTANTIATE(T)                                                        \
  template void lstm_forward_loop<T>(const LayerArgs&, bool, const ForwardLoop<T>&);     \
  template void lstm_backward<T>(const LayerArgs&, bool, const BackwardLoop<T>&,         \
                                 const BackwardGradients<T>&, int64_t);                  \
  template void gather_final_hidden<T>(const LayerArgs&, bool, const T*, T*);
FUSED_LSTM_INSTANTIATE(float)
FUSED_LSTM_INSTANTIATE(double)
FUSED_LSTM_INSTANTIATE(c10::BFloat16)
#undef FUSED_LSTM_INSTANTIATE

}  // namespace fused_lstm::cpu
