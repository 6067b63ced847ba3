// The CPU time loops of the variant op (lstm_variant_forward/backward, ops.cpp): one layer
// direction with layer norm, zoneout and recurrent dropout, on raw row-major buffers in
// nn.LSTM's gate order (i, f, g, o, each H wide). The binding (lstm_variant_cpu.cpp) does
// the whole-sequence GEMMs of the gradients after the backward loop; everything per step,
// the input projection and LN_ih included, runs in the loops. The threads split the batch
// rows, each running every step on rows of its own (cpu_plan.h, plan_variant_threads).
// Formulas: fused_lstm/reference.py, lstm_variant_reference.
#pragma once

#include <cstdint>

#include "../lstm_layer_args.h"

namespace fused_lstm::cpu {

// What both loops read. zh, zc: zoneout of h and c, one row per row of x (row stride
// zh_ld / zc_ld), or the same row for every row (stride 0), or null.
template <typename T>
struct VariantState {
  const T* h0;              // [B, Hout]
  const T* c0;              // [B, H]
  const T* recurrent_mask;  // [B, Hout] multiplying h before the recurrent GEMM, or null
  const T* zh; int64_t zh_ld;
  const T* zc; int64_t zc_ld;
  const T* ln_ih_w;         // [4H] LN_ih's gain, or null (no layer norm); ln_ih_b its bias
  const T* ln_ih_b;
  const T* ln_hh_w;         // [4H] LN_hh's gain and bias
  const T* ln_hh_b;
  const T* ln_c_w;          // [H] LN_c's gain and bias
  const T* ln_c_b;
  T eps;
  bool norm_state;          // the normalised c is the state
};

// Each step's input projection x_t @ w_ih^T runs inside the loop, so its gates are still in
// cache when the step uses them. With save, every per-row buffer below has a row per row of
// x, kept for backward; without, the buffers marked (save) are null and each thread reuses
// a scratch of its own rows every step.
template <typename T>
struct VariantForward {
  const T* x;       // [N, I]
  const T* w_ih_t;  // [I, 4H] w_ih^T in panels of 128 columns (rows_to_panels, gate_layout.h)
  const T* w_hh_t;  // [Hout, 4H] w_hh^T, the same
  const T* w_hr_t;  // [H, Hout] w_hr^T, or null
  const T* bias;    // [4H] b_ih + b_hh, or null
  bool save;
  T* gates;     // [N, 4H] (save) out: activated i, f, g, o
  T* gx_hat;    // [N, 4H] (save) out: LN_ih's normalised input (with layer norm, else null)
  T* gx_stats;  // [N, 2]  (save) out: its mean and 1 / sqrt(var + eps)
  T* r_hat;     // [N, 4H] (save) out: LN_hh's normalised input, r_stats [N, 2] (layer norm)
  T* r_stats;
  T* cand;      // [N, H]  (save) out: c^ = f c_prev + i g
  T* c_stats;   // [N, 2]  (save) out: LN_c's mean and 1 / sqrt(var + eps) (layer norm)
  T* h_raw;     // [N, H]  (save) out: o tanh(n) (with a projection)
  T* cells;     // [N, H]  out: c_t
  T* y;         // [N, Hout] out: h_t
};

template <typename T>
struct VariantBackward {
  const T* w_hh;       // [4H, Hout]
  const T* w_hr;       // [Hout, H], or null
  const T* act;        // [N, 4H] activated gates (forward's gates)
  const T* gx_hat;     // [N, 4H], gx_stats [N, 2] (with layer norm)
  const T* gx_stats;
  const T* r_hat;      // [N, 4H], r_stats [N, 2] (with layer norm)
  const T* r_stats;
  const T* cand;       // [N, H]; c_stats [N, 2] (with layer norm)
  const T* c_stats;
  const T* cells;      // [N, H]
  const T* y;          // [N, Hout]
  const T* grad_y;     // [N, Hout]
  const T* grad_cells; // [N, H], or null
  T* dh;        // [B, Hout] in: grad_h_n; out: grad_h0
  T* dc;        // [B, H]    in: grad_c_n; out: grad_c0
  T* dgates;    // [N, 4H] out: dL/d(gate pre-activations)
  T* d_gx;      // [N, 4H] out: dL/d(x @ w_ih^T) with layer norm, else null (= dgates)
  T* dr;        // [N, 4H] out: dL/d(h_in @ w_hh^T) with layer norm, else null (= dgates)
  T* d_proj;    // [N, Hout] out: dL/d(h~ @ w_hr^T) (with a projection), else null
  T* h_in;      // [N, Hout] out: h_prev * recurrent_mask of every row
  T* d_norm;    // [threads, variant_norm_grads(H)] out: each thread's dL/d(LN_ih gain, bias,
                // LN_hh gain, bias, LN_c gain, bias), to be summed (with layer norm)
};

// Values per thread in VariantBackward::d_norm.
inline int64_t variant_norm_grads(int64_t H) { return 4 * 4 * H + 2 * H; }

template <typename T>
void lstm_variant_forward_loop(const LayerArgs& a, bool reverse, int64_t threads,
                               const VariantState<T>& s, const VariantForward<T>& f);

template <typename T>
void lstm_variant_backward_loop(const LayerArgs& a, bool reverse, int64_t threads,
                                const VariantState<T>& s, const VariantBackward<T>& b);

}  // namespace fused_lstm::cpu
