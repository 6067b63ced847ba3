// The threads of a CPU time loop: how they share a step, the team that meets every step
// (a spinning barrier on two cache lines), and the row split where each thread runs the
// whole loop on its own batch rows. Which one a call uses is decided in cpu_plan.cpp.
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "../lstm_layer_args.h"
#include "cpu_plan.h"
#include "gate_layout.h"

namespace fused_lstm::cpu {

// The part of a step one thread owns: gate chunks [chunk_begin, chunk_end) (hidden units
// [u0, u1), gate columns [g0, g1)), and columns [o0, o1) of an Hout-wide row.
struct Share {
  int64_t chunk_begin, chunk_end, u0, u1, g0, g1, o0, o1;
};

inline Share share_of(int64_t p, int64_t P, int64_t H, int64_t Hout) {
  const int64_t C = chunk_count(H);
  Share s;
  s.chunk_begin = C * p / P;
  s.chunk_end = C * (p + 1) / P;
  s.u0 = std::min(H, s.chunk_begin * kGateChunk);
  s.u1 = std::min(H, s.chunk_end * kGateChunk);
  s.g0 = 4 * s.u0;
  s.g1 = 4 * s.u1;
  // Hout columns in multiples of 16 (one AVX-512 vector of floats).
  const int64_t blocks = (Hout + 15) / 16;
  s.o0 = std::min(Hout, blocks * p / P * 16);
  s.o1 = std::min(Hout, blocks * (p + 1) / P * 16);
  return s;
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
// and a sense flag on cache lines of their own (cheaper than OpenMP's: NOTES.md
// row 25).
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

// A time loop on the threads as `split` says: rows(sub, b0, p) on each thread's batch
// rows, or team(p, P, barrier) on a team that splits the hidden units.
template <typename RowBody, typename TeamBody>
void run_time_loop(const LayerArgs& a, const LoopSplit& split, const RowBody& rows,
                   const TeamBody& team) {
  if (split.by_rows) {
    run_on_row_ranges(a, split.threads, rows);
  } else {
    run_team(split.threads, team);
  }
}

}  // namespace fused_lstm::cpu
