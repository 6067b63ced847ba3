// The CUDA time loops of the variant op (lstm_variant_forward/backward, ops.cpp): one layer
// direction with layer norm, zoneout and recurrent dropout, on raw device buffers in
// nn.LSTM's gate order, on `stream`. Host code without torch: the binding
// (lstm_variant_cuda.cpp, variant_cuda_impl.cpp) allocates the buffers, runs the
// whole-sequence GEMMs (x @ w_ih^T before the forward loop; grad_x and the weight
// gradients after the backward loop) and hands the per-step GEMM in as `gemm`. Each loop
// returns the first failed launch (or copy) and stops there.
//
// Per forward step: h_in = h_prev * mask (only where it is not a plain run of rows already
// there), the recurrent GEMM, one row kernel (LN_hh, the activations, c^, LN_c, zoneout,
// h~), and with a projection its GEMM and h's zoneout. LN_ih runs over all N rows before
// the loop. Per backward step: with a projection dh's kernel and its GEMM, one row kernel
// (the pointwise backward with LN_c's, then LN_hh's), the GEMM of dh (and the mask's
// kernel); after the loop LN_ih's backward over all rows and the layer norms' gain and
// bias gradients as column sums over all rows (deterministic, no atomics).
// Formulas: fused_lstm/reference.py, lstm_variant_reference.
#pragma once

#include <cstdint>
#include <functional>

#include <cuda_runtime.h>

#include "cuda_steps.h"

namespace fused_lstm::cuda {

// A row-major GEMM on the stream: C[m, n] (ld ldc) = A[m, k] (ld lda) @ op(B) + beta * C,
// op(B) = B^T for B: [n, k] (ld ldb) when b_rows_are_n, else B: [k, n]. beta is 0 or 1.
template <typename T>
using RowGemm = std::function<void(int64_t m, int64_t n, int64_t k, const T* A, int64_t lda,
                                   const T* B, int64_t ldb, bool b_rows_are_n, T beta, T* C,
                                   int64_t ldc)>;

// What both loops read: the op's arguments, in T, on the device.
template <typename T>
struct VariantCudaState {
  const T* h0;              // [B, Hout]
  const T* c0;              // [B, H]
  const T* w_hh;            // [4H, Hout]
  const T* w_hr;            // [Hout, H], or null
  const T* bias;            // [4H] b_ih + b_hh, or null
  const T* recurrent_mask;  // [B, Hout], or null
  const T* zh; int64_t zh_ld;  // [N, Hout] (ld Hout) or [Hout] (ld 0), or null
  const T* zc; int64_t zc_ld;  // [N, H] (ld H) or [H] (ld 0), or null
  const T* ln_ih_w;         // [4H] LN_ih's gain, or null (no layer norm); then its bias,
  const T* ln_ih_b;         // LN_hh's gain and bias [4H], LN_c's [H]
  const T* ln_hh_w;
  const T* ln_hh_b;
  const T* ln_c_w;
  const T* ln_c_b;
  T eps;
  bool norm_state;          // the normalised c is the state
};

// The forward's buffers. (saved): kept for backward, a row per row of x, null when not
// saving (or when the options have none).
template <typename T>
struct VariantCudaForward {
  T* gates;     // [N, 4H] in: x @ w_ih^T; out: activated i, f, g, o (saved, else scratch)
  T* gx_hat;    // [N, 4H] (saved) LN_ih's normalised input; gx_stats [N, 2] its stats
  T* gx_stats;
  T* r_hat;     // [N, 4H] (saved) LN_hh's; r_stats [N, 2]
  T* r_stats;
  T* cand;      // [N, H]  (saved) c^
  T* c_stats;   // [N, 2]  (saved) LN_c's stats
  T* h_raw;     // [N, H]  (saved) o tanh(n) with a projection
  T* cells;     // [N, H]  out: c_t
  T* y;         // [N, Hout] out: h_t
  T* h_n;       // [B, Hout] in: h0; out: h of each row's last step
  T* c_n;       // [B, H]    in: c0; out: c of each row's last step
  // Scratch, [B, .]: h_in (the masked or mixed recurrent input), r_raw [B, 4H] (layer
  // norm), h_raw_step [B, H] (a projection without saving), h_new [B, Hout] (a projection
  // with zoneout); null where the options need none.
  T* h_in;
  T* r_raw;
  T* h_raw_step;
  T* h_new;
};

template <typename T>
LoopStatus variant_forward_loop(const CudaSteps& s, const VariantCudaState<T>& st,
                                const VariantCudaForward<T>& f, const RowGemm<T>& gemm,
                                cudaStream_t stream);

// The backward's buffers (what the forward saved, as in VariantCudaForward).
template <typename T>
struct VariantCudaBackward {
  const T* act;       // [N, 4H]
  const T* gx_hat;    // [N, 4H], gx_stats [N, 2] (layer norm)
  const T* gx_stats;
  const T* r_hat;     // [N, 4H], r_stats [N, 2] (layer norm)
  const T* r_stats;
  const T* cand;      // [N, H]
  const T* c_stats;   // [N, 2] (layer norm)
  const T* y;         // [N, Hout]
  const T* cells;     // [N, H]
  const T* grad_y;    // [N, Hout]
  const T* grad_cells;  // [N, H], or null
  T* dh;        // [B, Hout] in: grad_h_n; out: grad_h0
  T* dc;        // [B, H]    in: grad_c_n; out: grad_c0
  T* dgates;    // [N, 4H] out: dL/d(gate pre-activations)
  T* d_gx;      // [N, 4H] out: dL/d(x @ w_ih^T) (layer norm; else that is dgates)
  T* dr;        // [N, 4H] out: dL/d(h_in @ w_hh^T) (layer norm; else that is dgates)
  T* d_proj;    // [N, Hout] out: dL/d(h~ @ w_hr^T) (projection), else null
  T* h_in;      // [N, Hout] out: h_prev * mask of every row
  T* d_n;       // [N, H] scratch: dL/d(LN_c's output) (layer norm), else null
  T* d_raw;     // [B, H] scratch: dL/dh~ (projection), else null
  T* dh_in;     // [B, Hout] scratch: the GEMM's dh before the mask (mask), else null
  // Out, column sums over all rows: d_bias [4H] of dgates (the gradient of the bias, and of
  // LN_ih's and LN_hh's biases), or null; with layer norm the gains' gradients d_ln_ih_w,
  // d_ln_hh_w [4H], d_ln_c_w [H] and LN_c's bias's d_ln_c_b [H].
  T* d_bias;
  T* d_ln_ih_w;
  T* d_ln_hh_w;
  T* d_ln_c_w;
  T* d_ln_c_b;
};

template <typename T>
LoopStatus variant_backward_loop(const CudaSteps& s, const VariantCudaState<T>& st,
                                 const VariantCudaBackward<T>& b, const RowGemm<T>& gemm,
                                 cudaStream_t stream);

}  // namespace fused_lstm::cuda
