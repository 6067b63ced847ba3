// The variant op's CPU time loops (variant_loop.h).
#include "variant_loop.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu_gemm.h"
#include "lstm_time_loop.h"
#include "thread_team.h"
#include "vector_kernels.h"

namespace fused_lstm::cpu {

namespace {

// One thread's rows of a step: which of them continue from the previous step (the rest
// start from h0/c0: packed rows joining a reverse walk), and where h_prev and c_prev are.
template <typename T>
struct StepRowsView {
  int64_t t, off, rows, from_prev;
  const T* y_prev;      // [from_prev, Hout] h of the previous step, or null
  const T* cells_prev;  // [from_prev, H] c of the previous step, or null
  // h_prev of the step's row r: the previous step's h, or h0 (this thread's [B, Hout]).
  const T* h_prev(int64_t r, const T* h0, int64_t Hout) const {
    return r < from_prev ? y_prev + r * Hout : h0 + r * Hout;
  }
};

template <typename T>
StepRowsView<T> step_view(const LayerArgs& a, bool reverse, int64_t k, const T* y,
                          const T* cells) {
  StepRowsView<T> v;
  v.t = step_time(a, reverse, k);
  v.off = a.offset[v.t];
  v.rows = a.rows[v.t];
  v.from_prev = 0;
  v.y_prev = v.cells_prev = nullptr;
  if (k > 0) {
    const int64_t tp = step_time(a, reverse, k - 1);
    v.from_prev = std::min(v.rows, a.rows[tp]);
    v.y_prev = y + a.offset[tp] * a.Hout;
    v.cells_prev = cells + a.offset[tp] * a.H;
  }
  return v;
}

// A per-row buffer of the forward: rows of every step (base, saved for backward), or
// the thread's scratch of its own rows, reused every step.
template <typename T>
struct RowBuffer {
  T* base;
  int64_t width;
  std::vector<T> scratch;
  RowBuffer(T* saved, int64_t width_, int64_t rows, bool needed)
      : base(saved), width(width_), scratch(saved || !needed ? 0 : rows * width_) {}
  // The first row of the step whose rows start at row `off` of x.
  T* at(int64_t off) { return base ? base + off * width : scratch.data(); }
};

// The forward steps of one thread's rows (a: its rows; b0: its first batch row).
template <typename T>
void forward_rows(const LayerArgs& a, bool reverse, const VariantState<T>& s,
                  const VariantForward<T>& f, int64_t b0) {
  const auto& kernels = vector_kernels<T>();
  const int64_t H = a.H, G = 4 * H, Hout = a.Hout, B = a.B;
  const bool ln = s.ln_ih_w != nullptr;
  const T* h0 = s.h0 + b0 * Hout;
  const T* c0 = s.c0 + b0 * H;
  const T* mask = s.recurrent_mask ? s.recurrent_mask + b0 * Hout : nullptr;
  RowBuffer<T> gates(f.gates, G, B, true), gx_hat(f.gx_hat, G, B, ln),
      gx_stats(f.gx_stats, 2, B, ln), r_hat(f.r_hat, G, B, ln), r_stats(f.r_stats, 2, B, ln),
      cand(f.cand, H, B, true), c_stats(f.c_stats, 2, B, ln),
      h_raw(f.h_raw, H, B, f.w_hr_t != nullptr);
  std::vector<T> h_in(B * Hout), raw(ln ? B * G : 0), h_new(s.zh ? B * Hout : 0);
  for (int64_t k = 0; k < a.T; ++k) {
    const StepRowsView<T> v = step_view(a, reverse, k, f.y, f.cells);
    if (v.rows == 0) continue;
    // g [rows, 4H] = LN_ih(x_t @ w_ih^T)
    T* g = gates.at(v.off);
    const T* x = f.x + v.off * a.I;
    if (ln) {
      gemm_nn_panels<T>(v.rows, G, a.I, x, a.I, f.w_ih_t, raw.data(), G, false);
      std::fill(g, g + v.rows * G, T(0));
      kernels.norm_rows(raw.data(), v.rows, G, s.eps, s.ln_ih_w, s.ln_ih_b, gx_hat.at(v.off),
                        gx_stats.at(v.off), g);
    } else {
      gemm_nn_panels<T>(v.rows, G, a.I, x, a.I, f.w_ih_t, g, G, false);
    }
    // h_in [rows, Hout] = h_prev * mask
    const T* A = v.y_prev;
    if (mask || v.from_prev < v.rows) {
      for (int64_t r = 0; r < v.rows; ++r) {
        const T* src = v.h_prev(r, h0, Hout);
        T* dst = h_in.data() + r * Hout;
        if (mask) {
          for (int64_t j = 0; j < Hout; ++j) dst[j] = src[j] * mask[r * Hout + j];
        } else {
          std::memcpy(dst, src, sizeof(T) * Hout);
        }
      }
      A = h_in.data();
    }
    // g += LN_hh(h_in @ w_hh^T)
    if (ln) {
      gemm_nn_panels<T>(v.rows, G, Hout, A, Hout, f.w_hh_t, raw.data(), G, false);
      kernels.norm_rows(raw.data(), v.rows, G, s.eps, s.ln_hh_w, s.ln_hh_b, r_hat.at(v.off),
                        r_stats.at(v.off), g);
    } else {
      gemm_nn_panels<T>(v.rows, G, Hout, A, Hout, f.w_hh_t, g, G, true);
    }
    // The pointwise pass: h~ to h_raw (projecting), h_new (zoneout of h) or y.
    T* hr = f.w_hr_t ? h_raw.at(v.off) : nullptr;
    T* h_dst = hr ? hr : s.zh ? h_new.data() : f.y + v.off * Hout;
    const int64_t h_ld = hr ? H : Hout;
    T* cd = cand.at(v.off);
    T* cs = ln ? c_stats.at(v.off) : nullptr;
    for (int part = 0; part < 2; ++part) {
      const int64_t r0 = part == 0 ? 0 : v.from_prev, r1 = part == 0 ? v.from_prev : v.rows;
      if (r0 >= r1) continue;
      const T* cp = part == 0 ? v.cells_prev : c0 + r0 * H;
      const VariantForwardStep<T> st{g + r0 * G, G, f.bias, cp, H,
                                     s.zc ? s.zc + (v.off + r0) * s.zc_ld : nullptr, s.zc_ld,
                                     s.ln_c_w, s.ln_c_b, s.eps, s.norm_state,
                                     cd + r0 * H, H, cs ? cs + r0 * 2 : nullptr,
                                     f.cells + (v.off + r0) * H, H, h_dst + r0 * h_ld, h_ld};
      kernels.variant_forward(st, r1 - r0, H);
    }
    if (hr) {
      gemm_nn<T>(v.rows, Hout, H, hr, H, f.w_hr_t, Hout, s.zh ? h_new.data() : f.y + v.off * Hout,
                 Hout, false);
    }
    if (s.zh) {  // h_t = h~ + z_h (h_prev - h~)
      for (int64_t r = 0; r < v.rows; ++r) {
        const T* z = s.zh + (v.off + r) * s.zh_ld;
        const T* hp = v.h_prev(r, h0, Hout);
        const T* hn = h_new.data() + r * Hout;
        T* out = f.y + (v.off + r) * Hout;
        for (int64_t j = 0; j < Hout; ++j) out[j] = hn[j] + z[j] * (hp[j] - hn[j]);
      }
    }
  }
}

// The backward steps of one thread's rows; d_norm: its variant_norm_grads(H) accumulators
// (each step's sums are added to them whole, so a float sum over T * B rows rounds about
// as one over T + B).
template <typename T>
void backward_rows(const LayerArgs& a, bool reverse, const VariantState<T>& s,
                   const VariantBackward<T>& b, int64_t b0, T* d_norm_total) {
  const auto& kernels = vector_kernels<T>();
  const int64_t H = a.H, G = 4 * H, Hout = a.Hout, B = a.B;
  const T* h0 = s.h0 + b0 * Hout;
  const T* c0 = s.c0 + b0 * H;
  const T* mask = s.recurrent_mask ? s.recurrent_mask + b0 * Hout : nullptr;
  T* dh = b.dh + b0 * Hout;
  T* dc = b.dc + b0 * H;
  std::vector<T> dh_t(B * Hout), dh_new(s.zh ? B * Hout : 0), dh_raw(b.w_hr ? B * H : 0),
      dh_in(B * Hout), work(H), step_norm(d_norm_total ? variant_norm_grads(H) : 0);
  T* d_norm = d_norm_total ? step_norm.data() : nullptr;
  for (int64_t k = a.T - 1; k >= 0; --k) {
    const StepRowsView<T> v = step_view(a, reverse, k, b.y, b.cells);
    if (v.rows == 0) continue;
    std::fill(step_norm.begin(), step_norm.end(), T(0));
    // dh_t = dL/dh_t: carried from the next step, and from y.
    for (int64_t r = 0; r < v.rows; ++r) {
      const T* gy = b.grad_y + (v.off + r) * Hout;
      for (int64_t j = 0; j < Hout; ++j) dh_t[r * Hout + j] = dh[r * Hout + j] + gy[j];
    }
    const T* d_new = dh_t.data();  // dL/d(h~, projected)
    if (s.zh) {
      for (int64_t r = 0; r < v.rows; ++r) {
        const T* z = s.zh + (v.off + r) * s.zh_ld;
        for (int64_t j = 0; j < Hout; ++j)
          dh_new[r * Hout + j] = (T(1) - z[j]) * dh_t[r * Hout + j];
      }
      d_new = dh_new.data();
    }
    const T* g_h = d_new;
    int64_t g_h_ld = Hout;
    if (b.w_hr) {
      std::memcpy(b.d_proj + v.off * Hout, d_new, sizeof(T) * v.rows * Hout);
      gemm_nn<T>(v.rows, H, Hout, d_new, Hout, b.w_hr, H, dh_raw.data(), H, false);
      g_h = dh_raw.data();
      g_h_ld = H;
    }
    if (b.grad_cells) {
      for (int64_t r = 0; r < v.rows; ++r)
        for (int64_t j = 0; j < H; ++j) dc[r * H + j] += b.grad_cells[(v.off + r) * H + j];
    }
    for (int part = 0; part < 2; ++part) {
      const int64_t r0 = part == 0 ? 0 : v.from_prev, r1 = part == 0 ? v.from_prev : v.rows;
      if (r0 >= r1) continue;
      const T* cp = part == 0 ? v.cells_prev : c0 + r0 * H;
      const VariantBackwardStep<T> st{
          b.act + (v.off + r0) * G, G, b.cand + (v.off + r0) * H, H,
          b.c_stats ? b.c_stats + (v.off + r0) * 2 : nullptr, cp, H,
          s.zc ? s.zc + (v.off + r0) * s.zc_ld : nullptr, s.zc_ld, s.ln_c_w, s.ln_c_b,
          s.norm_state, g_h + r0 * g_h_ld, g_h_ld, dc + r0 * H, H,
          b.dgates + (v.off + r0) * G, G, d_norm ? d_norm + 4 * G : nullptr,
          d_norm ? d_norm + 4 * G + H : nullptr, work.data()};
      kernels.variant_backward(st, r1 - r0, H);
    }
    const T* d_r = b.dgates + v.off * G;  // dL/d(h_in @ w_hh^T)
    if (s.ln_hh_w) {  // through LN_ih and LN_hh
      kernels.norm_rows_backward(b.dgates + v.off * G, b.gx_hat + v.off * G,
                                 b.gx_stats + v.off * 2, v.rows, G, s.ln_ih_w,
                                 b.d_gx + v.off * G, d_norm, d_norm + G);
      kernels.norm_rows_backward(b.dgates + v.off * G, b.r_hat + v.off * G,
                                 b.r_stats + v.off * 2, v.rows, G, s.ln_hh_w, b.dr + v.off * G,
                                 d_norm + 2 * G, d_norm + 3 * G);
      d_r = b.dr + v.off * G;
    }
    for (size_t j = 0; j < step_norm.size(); ++j) d_norm_total[j] += step_norm[j];
    gemm_nn<T>(v.rows, Hout, G, d_r, G, b.w_hh, Hout, dh_in.data(), Hout, false);
    // dh <- dL/dh_prev: through the mask, and through h's zoneout. h_in for w_hh's gradient.
    for (int64_t r = 0; r < v.rows; ++r) {
      const T* hp = v.h_prev(r, h0, Hout);
      const T* m = mask ? mask + r * Hout : nullptr;
      const T* z = s.zh ? s.zh + (v.off + r) * s.zh_ld : nullptr;
      T* h_in = b.h_in + (v.off + r) * Hout;
      for (int64_t j = 0; j < Hout; ++j) {
        const T scale = m ? m[j] : T(1);
        h_in[j] = hp[j] * scale;
        dh[r * Hout + j] =
            dh_in[r * Hout + j] * scale + (z ? z[j] * dh_t[r * Hout + j] : T(0));
      }
    }
  }
}

}  // namespace

template <typename T>
void lstm_variant_forward_loop(const LayerArgs& a, bool reverse, int64_t threads,
                               const VariantState<T>& s, const VariantForward<T>& f) {
  if (threads <= 1) {
    forward_rows(a, reverse, s, f, 0);
    return;
  }
  run_on_row_ranges(a, threads, [&](const LayerArgs& sub, int64_t b0, int64_t) {
    forward_rows(sub, reverse, s, f, b0);
  });
}

template <typename T>
void lstm_variant_backward_loop(const LayerArgs& a, bool reverse, int64_t threads,
                                const VariantState<T>& s, const VariantBackward<T>& b) {
  const int64_t per_thread = variant_norm_grads(a.H);
  if (threads <= 1) {
    backward_rows(a, reverse, s, b, 0, b.d_norm);
    return;
  }
  run_on_row_ranges(a, threads, [&](const LayerArgs& sub, int64_t b0, int64_t p) {
    backward_rows(sub, reverse, s, b, b0, b.d_norm ? b.d_norm + p * per_thread : nullptr);
  });
}

#define FUSED_LSTM_INSTANTIATE(T)                                                          \
  template void lstm_variant_forward_loop<T>(const LayerArgs&, bool, int64_t,              \
                                             const VariantState<T>&,                       \
                                             const VariantForward<T>&);                    \
  template void lstm_variant_backward_loop<T>(const LayerArgs&, bool, int64_t,             \
                                              const VariantState<T>&,                      \
                                              const VariantBackward<T>&);
FUSED_LSTM_INSTANTIATE(float)
FUSED_LSTM_INSTANTIATE(double)
#undef FUSED_LSTM_INSTANTIATE

}  // namespace fused_lstm::cpu
