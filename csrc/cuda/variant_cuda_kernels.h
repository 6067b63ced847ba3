// CUDA kernels of the variant op (lstm_variant_forward/backward, ops.cpp: layer norm,
// zoneout, recurrent dropout, the cell sequence), behind plain launchers. The time loops
// (variant_cuda_loops.cpp) run the GEMMs and call these; formulas in
// fused_lstm/reference.py (lstm_variant_reference), the same the CPU kernels compute
// (cpu/variant_kernels_impl.h).
//
// This header and variant_cuda_kernels.cu depend on the CUDA toolkit only (no torch
// headers). Conventions, as lstm_cuda_kernels.h:
//   - Matrices are row-major, `*_ld` the row stride in elements. Gate rows are 4H wide in
//     nn.LSTM's order i, f, g, o (no blocked columns: layer norm reduces over whole rows).
//   - T is the compute type, float (for float32, float16 and bfloat16 layers: the binding
//     converts) or double; every sum accumulates in T.
//   - Optional pointers are skipped when null. A zoneout operand has a row per row of the
//     step (ld its width) or one row for every row (ld 0).
//   - Rows of a step: row r < *_prev_rows continues from the previous step's row r, the
//     rest start from the initial state (row r of h0 / c0): packed rows joining a reverse
//     walk.
//   - Kernels that reduce over a row run one thread block per row, so each row's sums are
//     summed in one fixed order: the results do not depend on the launch (no atomics).
//   - The launch is queued on `stream`; the return value is the launch status.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace fused_lstm::cuda {

// One forward step's pointwise pass, a thread block per row (rows of the step).
template <typename T>
struct VariantForwardStepArgs {
  int64_t rows, H, Hout;
  // in: LN_ih(x W_ih^T) (or x W_ih^T), plus h_in W_hh^T without layer norm; out: activated
  // i, f, g, o. [rows, 4H], ld 4H.
  T* gates;
  // LN_hh: r_raw [rows, 4H] = h_in W_hh^T of the step (ld 4H), null without layer norm;
  // its gain and bias [4H]; out: r_hat [rows, 4H] (ld 4H) and r_stats [rows, 2] (mean,
  // 1 / sqrt(var + eps)), each null when not saved.
  const T* r_raw;
  const T* ln_hh_w;
  const T* ln_hh_b;
  T* r_hat;
  T* r_stats;
  const T* bias;  // [4H] b_ih + b_hh, or null
  const T* c_prev; int64_t c_prev_rows;  // [*, H] c of the previous step's rows
  const T* c_init;                       // [*, H] c0
  const T* zc; int64_t zc_ld;            // zoneout of c, or null
  // LN_c: gain and bias [H] (null without layer norm); eps (LN_hh's and LN_c's);
  // norm_state: the normalised c is the state.
  const T* ln_c_w;
  const T* ln_c_b;
  T eps;
  bool norm_state;
  T* cand;     // out: [rows, H] c^ (ld H), or null when not saved
  T* c_stats;  // out: [rows, 2] LN_c's mean and 1 / sqrt(var + eps), or null
  T* cells;    // out: [rows, H] c_t (ld H)
  // out: h~ = o tanh(n) to h_out [rows, *] (ld h_ld): y, or h_raw with a projection. With
  // zh (not with a projection: the loop mixes after its GEMM), y = h~ + z_h (h_prev - h~),
  // h_prev from h_prev (ld Hout) for rows < h_prev_rows, else h_init (h0, ld Hout).
  T* h_out; int64_t h_ld;
  const T* zh; int64_t zh_ld;
  const T* h_prev; int64_t h_prev_rows;
  const T* h_init;
};

template <typename T>
cudaError_t variant_forward_step(const VariantForwardStepArgs<T>& p, cudaStream_t stream);

// LayerNorm of `rows` rows of `width` values in place (LN_ih over every row of x before the
// loop): v <- (v - mean) * rstd * w + b; the normalised values to xhat (ld width) and
// (mean, rstd) to stats [rows, 2] when those are not null.
template <typename T>
cudaError_t variant_norm_rows(int64_t rows, int64_t width, T eps, T* v, int64_t v_ld,
                              const T* w, const T* b, T* xhat, T* stats, cudaStream_t stream);

// out[r, j] = a[r, j] + z[r, j] (h_prev[r, j] - a[r, j]), h_prev as above: zoneout of h
// after the projection GEMM. [rows, cols], a and out ld cols, h_prev and h_init ld cols.
template <typename T>
cudaError_t variant_zoneout_rows(int64_t rows, int64_t cols, const T* a, const T* z,
                                 int64_t z_ld, const T* h_prev, int64_t h_prev_rows,
                                 const T* h_init, T* out, cudaStream_t stream);

// out[r, j] = h_prev[r, j] * mask[r, j] (mask [*, cols] or null: 1), h_prev as above: the
// recurrent GEMM's input. [rows, cols], all ld cols.
template <typename T>
cudaError_t variant_masked_rows(int64_t rows, int64_t cols, const T* h_prev,
                                int64_t h_prev_rows, const T* h_init, const T* mask, T* out,
                                cudaStream_t stream);

// One backward step, with a projection, before its GEMM ([rows, Hout], ld Hout):
// dh_t = dh + grad_y; d_new = (1 - z_h) dh_t (dh_t without zh) to d_new; with zh,
// dh <- z_h dh_t (the part reaching h_prev through zoneout; the loop adds the GEMM's).
template <typename T>
cudaError_t variant_backward_dh(int64_t rows, int64_t Hout, T* dh, const T* grad_y,
                                const T* zh, int64_t zh_ld, T* d_new, cudaStream_t stream);

// One backward step's pointwise pass (LN_c's backward included, then LN_hh's), a thread
// block per row, on what the forward saved.
template <typename T>
struct VariantBackwardStepArgs {
  int64_t rows, H, Hout;
  const T* act;      // [rows, 4H] activated gates (ld 4H)
  const T* cand;     // [rows, H] c^ (ld H)
  const T* c_stats;  // [rows, 2] LN_c's (with layer norm), else null
  const T* c_prev; int64_t c_prev_rows;  // as forward
  const T* c_init;
  const T* zc; int64_t zc_ld;
  const T* ln_c_w;   // [H] LN_c's gain and bias (with layer norm), else null
  const T* ln_c_b;
  bool norm_state;
  // dL/dh~: d_raw [rows, H] (ld H) with a projection (variant_backward_dh, then the GEMM);
  // without one, computed here from dh [rows, Hout] (carried; ld Hout) + grad_y (ld Hout)
  // and zh as variant_backward_dh does, dh <- z_h dh_t when zh.
  const T* d_raw;
  T* dh;
  const T* grad_y;
  const T* zh; int64_t zh_ld;
  T* dc;                 // [rows, H] in: dL/dc_t from the next step; out: dL/dc_{t-1}
  const T* grad_cells;   // [rows, H] (ld H), or null
  T* dgates;             // out: [rows, 4H] dL/d(pre-activations) (ld 4H)
  T* d_n;                // out: [rows, H] dL/dn, LN_c's output (with layer norm), else null
  // LN_hh's backward (with layer norm, else null): its gain [4H], r_hat, r_stats as saved;
  // out: dr [rows, 4H] = dL/d(h_in W_hh^T) (ld 4H).
  const T* ln_hh_w;
  const T* r_hat;
  const T* r_stats;
  T* dr;
  // out: h_in [rows, Hout] (ld Hout) = h_prev * mask (h_prev, h_init as forward; mask
  // [*, Hout] or null), w_hh's gradient's operand.
  T* h_in;
  const T* h_prev; int64_t h_prev_rows;
  const T* h_init;
  const T* mask;
};

template <typename T>
cudaError_t variant_backward_step(const VariantBackwardStepArgs<T>& p, cudaStream_t stream);

// dh[r, j] = d[r, j] * mask[r, j] + (accumulate ? dh[r, j] : 0), [rows, cols], ld cols:
// the gradient reaching h_prev through the recurrent mask.
template <typename T>
cudaError_t variant_masked_accumulate(int64_t rows, int64_t cols, const T* d, const T* mask,
                                      T* dh, bool accumulate, cudaStream_t stream);

// LayerNorm's backward of `rows` rows of `width` (LN_ih's, after the loop): d_in = rstd
// (d w - mean(d w) - xhat mean(d w xhat)), d [rows, width] the gradient of its output,
// xhat, stats as its forward saved; all ld width.
template <typename T>
cudaError_t variant_norm_rows_backward(int64_t rows, int64_t width, const T* d, const T* xhat,
                                       const T* stats, const T* w, T* d_in,
                                       cudaStream_t stream);

// Column sums out[j] = sum_r a[r, j] * x[r, j], [rows, cols] (ld cols), with x = 1 when b is
// null, b[r, j] when stats is null, else (b[r, j] - stats[2r]) * stats[2r + 1] (xhat from
// the saved c^ and LN_c's stats). One fixed order (no atomics); rows = 0 gives zeros.
template <typename T>
cudaError_t variant_column_sums(int64_t rows, int64_t cols, const T* a, const T* b,
                                const T* stats, T* out, cudaStream_t stream);

}  // namespace fused_lstm::cuda
