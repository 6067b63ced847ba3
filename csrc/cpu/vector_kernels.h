// The vectorized CPU kernels, as a table of plain functions: the per-step
// pointwise passes of the LSTM, and the transposing copy and one-row GEMM the
// GEMMs need.
//
// The same template source (vector_kernels_impl.h) is compiled once per
// instruction set (DEFAULT, AVX2, AVX512); `vector_kernels<T>()` returns the
// table for the set cpu_tuning.cpp chose (ATen's own choice, so
// ATEN_CPU_CAPABILITY caps it, and ONEDNN_MAX_CPU_ISA too).
//
// The pointwise kernels work on one time step, on rows [0, rows) of the active
// batch and hidden columns [j0, j1) of each row. Strides are in elements.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

namespace fused_lstm::cpu {

template <typename T>
struct ForwardStep {
  // In:  gates [rows, 4H] (stride gates_ld) pre-activations a_i, a_f, a_g, a_o,
  //      less the bias.
  //      bias  [4H] added to every row's gates, or null.
  //      c     [rows, H]  (stride c_ld)     previous cell state.
  // Out: gates <- activated i, f, g, o (only if save_gates; else untouched).
  //      c     <- new cell state (in place).
  //      c_out [rows, H] (stride c_out_ld)  copy of the new cell state, or null.
  //      h     [rows, H] (stride h_ld)      h = o * tanh(c).
  //      h_bf16 (float only) if set, h is written here instead, rounded to
  //            bfloat16 (stride h_ld): the operand of the next step's GEMM.
  T* gates; int64_t gates_ld;
  const T* bias;
  T* c; int64_t c_ld;
  T* c_out; int64_t c_out_ld;
  T* h; int64_t h_ld;
  bool save_gates;
  c10::BFloat16* h_bf16 = nullptr;
};

template <typename T>
struct BackwardStep {
  // In:  act    [rows, 4H] (stride act_ld)  activated gates i, f, g, o of this step.
  //      c      [rows, H]  (stride c_ld)    cell state of this step.
  //      c_prev [rows, H]  (stride c_prev_ld) cell state of the previous step.
  //      dh     [rows, H]  (stride dh_ld)   dL/dh of this step ...
  //      dh2    [rows, H]  (stride dh2_ld)  ... plus this, or null.
  //      dc     [rows, H]  (stride dc_ld)   dL/dc from the next step.
  // Out: dc     <- dL/dc_prev (in place).
  //      dgates [rows, 4H] (stride dgates_ld) dL/d(pre-activation gates).
  //      dgates_bf16 (float only) if set, dgates are written here instead,
  //             rounded to bfloat16 (stride dgates_ld).
  const T* act; int64_t act_ld;
  const T* c; int64_t c_ld;
  const T* c_prev; int64_t c_prev_ld;
  const T* dh; int64_t dh_ld;
  const T* dh2; int64_t dh2_ld;
  T* dc; int64_t dc_ld;
  T* dgates; int64_t dgates_ld;
  c10::BFloat16* dgates_bf16 = nullptr;
};

// The pointwise pass of the variant op (lstm_variant_forward, ops.cpp): rows [0, rows) of
// one step, all H hidden units, gates in nn.LSTM's order (i, f, g, o, each H wide).
// Formulas in fused_lstm/reference.py (lstm_variant_reference).
template <typename T>
struct VariantForwardStep {
  // In:  gates [rows, 4H]   pre-activations, less the bias.
  //      bias  [4H] or null.
  //      c_prev [rows, H]   c_{t-1}.
  //      zc    [rows, H] zoneout of c (row stride zc_ld; 0: one row for every row), or null.
  //      norm_w, norm_b [H] LN_c's gain and bias, or null (no LN_c); eps; norm_state: the
  //            normalised c is the state.
  // Out: gates   <- activated i, f, g, o.
  //      cand    [rows, H] <- c^ = f c_prev + i g.
  //      c_stats [rows, 2] <- mean and 1 / sqrt(var + eps) of each row of c^ (with LN_c).
  //      c_out   [rows, H] <- c_t.
  //      h       [rows, H] <- h~ = o tanh(n), n = LN_c(c^) (or c^).
  T* gates; int64_t gates_ld;
  const T* bias;
  const T* c_prev; int64_t c_prev_ld;
  const T* zc; int64_t zc_ld;
  const T* norm_w; const T* norm_b; T eps; bool norm_state;
  T* cand; int64_t cand_ld;
  T* c_stats;
  T* c_out; int64_t c_out_ld;
  T* h; int64_t h_ld;
};

// Its backward, on what the forward pass saved.
template <typename T>
struct VariantBackwardStep {
  // In:  act [rows, 4H] activated gates; cand c^, c_stats (with LN_c), c_prev, zc, norm_w,
  //      norm_b, norm_state as forward.
  //      dh  [rows, H]  dL/dh~ (through the projection and h's zoneout).
  //      dc  [rows, H]  dL/dc_t (from the next step and the cell sequence).
  // Out: dc      <- dL/dc_{t-1} (in place).
  //      dgates  [rows, 4H] dL/d(pre-activations).
  //      d_norm_w, d_norm_b [H] += dL/d(LN_c's gain, bias) (with LN_c).
  //      work    [H] scratch.
  const T* act; int64_t act_ld;
  const T* cand; int64_t cand_ld;
  const T* c_stats;
  const T* c_prev; int64_t c_prev_ld;
  const T* zc; int64_t zc_ld;
  const T* norm_w; const T* norm_b; bool norm_state;
  const T* dh; int64_t dh_ld;
  T* dc; int64_t dc_ld;
  T* dgates; int64_t dgates_ld;
  T* d_norm_w; T* d_norm_b;
  T* work;
};

template <typename T>
struct VectorKernels {
  void (*forward)(const ForwardStep<T>& s, int64_t rows, int64_t H, int64_t j0, int64_t j1);
  void (*backward)(const BackwardStep<T>& s, int64_t rows, int64_t H, int64_t j0, int64_t j1);
  // dst[j, i] = src[i, j] for i < M, j < N (strides ld_src, ld_dst): the
  // weight and panel transposes of the GEMMs, in 16 x 16 register tiles.
  void (*transpose)(const T* src, int64_t ld_src, T* dst, int64_t ld_dst, int64_t M, int64_t N);
  // c[N] (+)= a[K] @ B[K, N] (row stride ldb): the one-row GEMM of a batch-1
  // step, streaming B once with the accumulators in registers.
  void (*gemv)(int64_t N, int64_t K, const T* a, const T* B, int64_t ldb, T* c, bool accumulate);
  // The variant op's pointwise passes (above): rows [0, rows) of a step, H units.
  void (*variant_forward)(const VariantForwardStep<T>& s, int64_t rows, int64_t H);
  void (*variant_backward)(const VariantBackwardStep<T>& s, int64_t rows, int64_t H);
  // Layer norm over each row of in [rows, G]: xhat [rows, G] <- (in - mean) * rstd,
  // stats [rows, 2] <- mean, rstd = 1 / sqrt(var + eps); acc [rows, G] += xhat * w + b.
  void (*norm_rows)(const T* in, int64_t rows, int64_t G, T eps, const T* w, const T* b,
                    T* xhat, T* stats, T* acc);
  // Its backward, from d_out [rows, G] (the gradient reaching xhat * w + b): d_in [rows, G]
  // <- rstd (dx - mean(dx) - xhat mean(dx xhat)), dx = d_out * w; d_w += d_out * xhat,
  // d_b += d_out ([G] each).
  void (*norm_rows_backward)(const T* d_out, const T* xhat, const T* stats, int64_t rows,
                             int64_t G, const T* w, T* d_in, T* d_w, T* d_b);
  const char* isa;
};

template <typename T>
const VectorKernels<T>& vector_kernels();

// One getter per compiled instruction set; null where the set was not built.
#define FUSED_LSTM_DECLARE_VARIANT(NAME)                     \
  const VectorKernels<float>* vector_kernels_f32_##NAME(); \
  const VectorKernels<double>* vector_kernels_f64_##NAME();
FUSED_LSTM_DECLARE_VARIANT(DEFAULT)
FUSED_LSTM_DECLARE_VARIANT(AVX2)
FUSED_LSTM_DECLARE_VARIANT(AVX512)
#undef FUSED_LSTM_DECLARE_VARIANT

}  // namespace fused_lstm::cpu
