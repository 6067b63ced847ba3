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
      V ai = V::loadu(gi + j, n), af = V::loadu(gf + j, n);
      V ag = V::loadu(gg + j, n), ao = V::loadu(go + j, n);
      if (s.bias) {
        ai = ai + V::loadu(s.bias + j, n);
        af = af + V::loadu(s.bias + H + j, n);
        ag = ag + V::loadu(s.bias + 2 * H + j, n);
        ao = ao + V::loadu(s.bias + 3 * H + j, n);
      }
      const V i = vec_sigmoid(ai), f = vec_sigmoid(af), g = vec_tanh(ag), o = vec_sigmoid(ao);
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

}  // namespace CPU_CAPABILITY
}  // namespace fused_lstm::cpu
