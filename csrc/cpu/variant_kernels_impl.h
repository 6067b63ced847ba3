// Vectorized bodies of the variant op's pointwise passes (VariantForwardStep and
// VariantBackwardStep in vector_kernels.h; formulas in fused_lstm/reference.py,
// lstm_variant_reference). Included by vector_kernels_impl.h, once per instruction set,
// after the gate nonlinearities it uses.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>

#include "../lstm_gate_math.h"
#include "vector_kernels.h"

namespace fused_lstm::cpu {
namespace CPU_CAPABILITY {

// Sum of the lanes of v.
template <typename T>
inline T lane_sum(const at::vec::Vectorized<T>& v) {
  T lanes[at::vec::Vectorized<T>::size()];
  v.store(lanes);
  T sum = 0;
  for (const T lane : lanes) sum += lane;
  return sum;
}

// Mean and 1 / sqrt(var + eps) of row[0, H) (two passes: the variance about the mean).
template <typename T>
inline void row_moments(const T* row, int64_t H, T eps, T& mean, T& rstd) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t W = V::size();
  V acc(T(0));
  for (int64_t j = 0; j < H; j += W) acc = acc + V::loadu(row + j, std::min<int64_t>(W, H - j));
  mean = lane_sum(acc) / static_cast<T>(H);
  const V m(mean);
  V sq(T(0));
  for (int64_t j = 0; j < H; j += W) {
    const int64_t n = std::min<int64_t>(W, H - j);
    // Lanes past n load as 0: zero them after subtracting the mean.
    V d = V::loadu(row + j, n) - m;
    if (n < W) d = V::set(V(T(0)), d, n);
    sq = sq + d * d;
  }
  rstd = T(1) / std::sqrt(lane_sum(sq) / static_cast<T>(H) + eps);
}

template <typename T>
void variant_forward_step(const VariantForwardStep<T>& s, int64_t rows, int64_t H) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t W = V::size();
  const bool norm = s.norm_w != nullptr;
  for (int64_t r = 0; r < rows; ++r) {
    T* gi = s.gates + r * s.gates_ld;
    T* gf = gi + H;
    T* gg = gi + 2 * H;
    T* go = gi + 3 * H;
    const T* cp = s.c_prev + r * s.c_prev_ld;
    T* cand = s.cand + r * s.cand_ld;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t n = std::min<int64_t>(W, H - j);
      V i, f, g, o;
      activated_gates(gi, H, s.bias, j, n, i, f, g, o);
      i.store(gi + j, n);
      f.store(gf + j, n);
      g.store(gg + j, n);
      o.store(go + j, n);
      lstm_cell_state(i, f, g, V::loadu(cp + j, n)).store(cand + j, n);
    }
    T mean = 0, rstd = 1;
    if (norm) {
      row_moments(cand, H, s.eps, mean, rstd);
      s.c_stats[2 * r] = mean;
      s.c_stats[2 * r + 1] = rstd;
    }
    const T* zc = s.zc ? s.zc + r * s.zc_ld : nullptr;
    T* c_out = s.c_out + r * s.c_out_ld;
    T* h = s.h + r * s.h_ld;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t n = std::min<int64_t>(W, H - j);
      const V c_hat = V::loadu(cand + j, n);
      const V normed = norm ? (c_hat - V(mean)) * V(rstd) * V::loadu(s.norm_w + j, n) +
                                  V::loadu(s.norm_b + j, n)
                            : c_hat;
      V c_new = norm && s.norm_state ? normed : c_hat;
      if (zc) c_new = c_new + V::loadu(zc + j, n) * (V::loadu(cp + j, n) - c_new);
      c_new.store(c_out + j, n);
      lstm_hidden(V::loadu(go + j, n), vec_tanh(normed)).store(h + j, n);
    }
  }
}

template <typename T>
void variant_backward_step(const VariantBackwardStep<T>& s, int64_t rows, int64_t H) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t W = V::size();
  const bool norm = s.norm_w != nullptr;
  const V one(T(1));
  for (int64_t r = 0; r < rows; ++r) {
    const T* ai = s.act + r * s.act_ld;
    const T* af = ai + H;
    const T* ag = ai + 2 * H;
    const T* ao = ai + 3 * H;
    const T* cand = s.cand + r * s.cand_ld;
    const T* cp = s.c_prev + r * s.c_prev_ld;
    const T* zc = s.zc ? s.zc + r * s.zc_ld : nullptr;
    const T* dh = s.dh + r * s.dh_ld;
    T* dc = s.dc + r * s.dc_ld;
    T* di = s.dgates + r * s.dgates_ld;
    T* df = di + H;
    T* dg = di + 2 * H;
    T* d_o = di + 3 * H;
    const T mean = norm ? s.c_stats[2 * r] : T(0), rstd = norm ? s.c_stats[2 * r + 1] : T(1);
    // Pass 1: d(o), and in work the gradient reaching n (LN_c's output) with LN_c, else
    // the gradient reaching c^.
    V sum_dxhat(T(0)), sum_dxhat_xhat(T(0));
    for (int64_t j = 0; j < H; j += W) {
      const int64_t n = std::min<int64_t>(W, H - j);
      const V c_hat = V::loadu(cand + j, n);
      const V xhat = norm ? (c_hat - V(mean)) * V(rstd) : c_hat;
      const V normed = norm ? xhat * V::loadu(s.norm_w + j, n) + V::loadu(s.norm_b + j, n) : c_hat;
      const V tn = vec_tanh(normed);
      const V o = V::loadu(ao + j, n), g_h = V::loadu(dh + j, n);
      (g_h * tn * o * (one - o)).store(d_o + j, n);
      V g_n = g_h * o * (one - tn * tn);
      V g_c = V::loadu(dc + j, n);
      if (zc) g_c = g_c * (one - V::loadu(zc + j, n));
      if (norm) {
        if (s.norm_state) g_n = g_n + g_c;
        const V dxhat = g_n * V::loadu(s.norm_w + j, n);
        sum_dxhat = sum_dxhat + dxhat;
        sum_dxhat_xhat = sum_dxhat_xhat + dxhat * V::set(V(T(0)), xhat, n);
        (V::loadu(s.d_norm_w + j, n) + g_n * xhat).store(s.d_norm_w + j, n);
        (V::loadu(s.d_norm_b + j, n) + g_n).store(s.d_norm_b + j, n);
        g_n.store(s.work + j, n);
      } else {
        (g_n + g_c).store(s.work + j, n);
      }
    }
    const T inv_h = T(1) / static_cast<T>(H);
    const V mean_dxhat(norm ? lane_sum(sum_dxhat) * inv_h : T(0));
    const V mean_dxhat_xhat(norm ? lane_sum(sum_dxhat_xhat) * inv_h : T(0));
    // Pass 2: the gradient reaching c^, then the gates' and c_{t-1}'s.
    for (int64_t j = 0; j < H; j += W) {
      const int64_t n = std::min<int64_t>(W, H - j);
      V g_chat = V::loadu(s.work + j, n);
      const V g_c_in = V::loadu(dc + j, n);
      const V z = zc ? V::loadu(zc + j, n) : V(T(0));
      if (norm) {
        const V xhat = (V::loadu(cand + j, n) - V(mean)) * V(rstd);
        const V dxhat = g_chat * V::loadu(s.norm_w + j, n);
        g_chat = V(rstd) * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
        if (!s.norm_state) g_chat = g_chat + g_c_in * (one - z);
      }
      const V i = V::loadu(ai + j, n), f = V::loadu(af + j, n), g = V::loadu(ag + j, n);
      (g_chat * g * i * (one - i)).store(di + j, n);
      (g_chat * V::loadu(cp + j, n) * f * (one - f)).store(df + j, n);
      (g_chat * i * (one - g * g)).store(dg + j, n);
      (g_chat * f + z * g_c_in).store(dc + j, n);
    }
  }
}

template <typename T>
void norm_rows(const T* in, int64_t rows, int64_t G, T eps, const T* w, const T* b, T* xhat,
               T* stats, T* acc) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t W = V::size();
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = in + r * G;
    T mean, rstd;
    row_moments(row, G, eps, mean, rstd);
    stats[2 * r] = mean;
    stats[2 * r + 1] = rstd;
    T* xh = xhat + r * G;
    T* a = acc + r * G;
    for (int64_t j = 0; j < G; j += W) {
      const int64_t n = std::min<int64_t>(W, G - j);
      const V x = (V::loadu(row + j, n) - V(mean)) * V(rstd);
      x.store(xh + j, n);
      (V::loadu(a + j, n) + x * V::loadu(w + j, n) + V::loadu(b + j, n)).store(a + j, n);
    }
  }
}

template <typename T>
void norm_rows_backward(const T* d_out, const T* xhat, const T* stats, int64_t rows, int64_t G,
                        const T* w, T* d_in, T* d_w, T* d_b) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t W = V::size();
  for (int64_t r = 0; r < rows; ++r) {
    const T* d = d_out + r * G;
    const T* xh = xhat + r * G;
    // Lanes past n load as 0 in d and w, so they add nothing to the sums.
    V sum_dx(T(0)), sum_dx_xhat(T(0));
    for (int64_t j = 0; j < G; j += W) {
      const int64_t n = std::min<int64_t>(W, G - j);
      const V dv = V::loadu(d + j, n), x = V::loadu(xh + j, n);
      const V dx = dv * V::loadu(w + j, n);
      sum_dx = sum_dx + dx;
      sum_dx_xhat = sum_dx_xhat + dx * x;
      (V::loadu(d_w + j, n) + dv * x).store(d_w + j, n);
      (V::loadu(d_b + j, n) + dv).store(d_b + j, n);
    }
    const V m1(lane_sum(sum_dx) / static_cast<T>(G));
    const V m2(lane_sum(sum_dx_xhat) / static_cast<T>(G));
    const V rstd(stats[2 * r + 1]);
    T* o = d_in + r * G;
    for (int64_t j = 0; j < G; j += W) {
      const int64_t n = std::min<int64_t>(W, G - j);
      const V dx = V::loadu(d + j, n) * V::loadu(w + j, n);
      (rstd * (dx - m1 - V::loadu(xh + j, n) * m2)).store(o + j, n);
    }
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace fused_lstm::cpu
