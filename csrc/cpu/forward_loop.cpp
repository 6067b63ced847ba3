// The CPU forward time loop of one layer direction (lstm_time_loop.h): each step's GEMMs
// and pointwise pass, on the threads the plan gives it.
#include <algorithm>
#include <cstring>

#include "cpu_gemm.h"
#include "lstm_time_loop.h"
#include "thread_team.h"
#include "vector_kernels.h"

namespace fused_lstm::cpu {

namespace {

// Thread p of P's part of every forward step: its gate chunks (all of them
// when P = 1), meeting the others at barrier() where a step needs all of h.
template <typename In, typename Barrier>
void forward_steps(const LayerArgs& a, bool reverse, const ForwardLoop<In>& f, int64_t p,
                   int64_t P, const Barrier& barrier) {
  using AccT = Acc<In>;
  constexpr int64_t cs = kColumnStride<In>;
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;
  const bool proj = f.w_hr_t != nullptr;
  const bool save = f.cells != nullptr;
  const auto& kernels = vector_kernels<AccT>();
  const Share s = share_of(p, P, H, Hout);
  // C[:, g0:g1] (+)= A[m, K] @ W[:, g0:g1], W being w_ih^AccT or w_hh^AccT (K rows, in panels).
  const auto weight_gemm = [&](int64_t m, int64_t K, const In* A, int64_t lda, const In* W, AccT* C,
                               bool accumulate) {
    gemm_nn_panels<In>(m, s.g1 - s.g0, K, A, lda, W + cs * panel_rows<In>(K) * s.g0, C + s.g0,
                       G, accumulate);
  };
  for (int64_t k = 0; k < a.T; ++k) {
    const int64_t t = step_time(a, reverse, k);
    const int64_t off = a.offset[t], rows = a.rows[t];
    AccT* gates = f.gates + (f.gates_all_steps ? off * G : 0);  // gates: [rows, 4H]
    In* y = f.y + off * Hout;                                // y: [rows, Hout]
    if (f.x) {
      // gates[:, g0:g1] = x_t @ w_ih^AccT[:, g0:g1]
      weight_gemm(rows, a.I, f.x + off * a.I, a.I, f.w_ih_t, gates, false);
    }
    // gates[:, g0:g1] += h_prev @ w_hh^AccT[:, g0:g1]; h_prev is y of the previous
    // step for the rows it had, h0 for rows that start here.
    const int64_t from_prev = k > 0 ? std::min(rows, a.rows[step_time(a, reverse, k - 1)]) : 0;
    if (from_prev > 0) {
      const In* y_prev = f.y + a.offset[step_time(a, reverse, k - 1)] * Hout;
      weight_gemm(from_prev, Hout, y_prev, Hout, f.w_hh_t, gates, true);
    }
    weight_gemm(rows - from_prev, Hout, f.h0 + from_prev * Hout, Hout, f.w_hh_t,
                gates + from_prev * G, true);
    for (int64_t chunk = s.chunk_begin; chunk < s.chunk_end; ++chunk) {
      const int64_t u = chunk * kGateChunk, w = chunk_width(H, chunk);
      ForwardStep<AccT> st{gates + 4 * u, G,
                        f.bias ? f.bias + 4 * u : nullptr,
                        f.c + u, H,
                        save ? f.cells + off * H + u : nullptr, H,
                        nullptr, proj ? H : Hout,
                        save};
      if constexpr (std::is_same_v<In, AccT>) {
        st.h = proj ? f.h_raw + u : y + u;
      } else {
        st.h_bf16 = y + u;
      }
      kernels.forward(st, rows, w, 0, w);
    }
    if constexpr (std::is_same_v<In, AccT>) {
      if (proj) {
        barrier();
        // y[:, o0:o1] = h_raw @ w_hr^AccT[:, o0:o1]
        gemm_nn<AccT>(rows, s.o1 - s.o0, H, f.h_raw, H, f.w_hr_t + s.o0, Hout, y + s.o0, Hout,
                   false);
      }
    }
    barrier();
  }
}

}  // namespace

template <typename In>
void lstm_forward_loop(const LayerArgs& a, bool reverse, const LoopSplit& split,
                       const ForwardLoop<In>& f) {
  run_time_loop(
      a, split,
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

template <typename T>
void gather_last_rows(const LayerArgs& a, bool reverse, const T* seq, int64_t width, T* out) {
  // Walking back from the last step processed, each step's rows beyond those
  // already filled ended there.
  int64_t filled = 0;
  for (int64_t k = a.T - 1; k >= 0 && filled < a.B; --k) {
    const int64_t t = step_time(a, reverse, k);
    const int64_t rows = a.rows[t];
    if (rows > filled) {
      std::memcpy(out + filled * width, seq + (a.offset[t] + filled) * width,
                  sizeof(T) * (rows - filled) * width);
      filled = rows;
    }
  }
}

#define FUSED_LSTM_INSTANTIATE(T)                                                          \
  template void lstm_forward_loop<T>(const LayerArgs&, bool, const LoopSplit&,             \
                                     const ForwardLoop<T>&);                               \
  template void gather_last_rows<T>(const LayerArgs&, bool, const T*, int64_t, T*);
FUSED_LSTM_INSTANTIATE(float)
FUSED_LSTM_INSTANTIATE(double)
FUSED_LSTM_INSTANTIATE(c10::BFloat16)
#undef FUSED_LSTM_INSTANTIATE

}  // namespace fused_lstm::cpu
