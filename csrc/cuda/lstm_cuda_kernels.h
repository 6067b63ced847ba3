// Per-step CUDA kernels of the fused LSTM, behind plain launchers: pointwise
// steps (after a GEMM the binding runs), and whole steps with the recurrent
// product inside.
//
// This header and lstm_cuda_kernels.cu depend on the CUDA toolkit only (no
// torch headers), so they compile with nvcc on any machine. The binding
// (lstm_cuda.cpp) runs the GEMMs and hands raw device pointers in here.
//
// Conventions shared by every launcher:
//   - Matrices are row-major; `*_ld` is the row stride in elements, columns are
//     contiguous. Gate rows are 4H wide in PyTorch order i, f, g, o.
//   - `acc_t` is the compute/state type: float (for float, half and bfloat16
//     layers) or double. `out_t` is the layer's output type: float, __half,
//     __nv_bfloat16 or double.
//   - Optional outputs/inputs are skipped when their pointer is null.
//   - rows == 0 or a zero width launches nothing and returns cudaSuccess.
//   - The launch is queued on `stream`; the return value is the launch status
//     (cudaGetLastError), not the kernel's completion.
//   - Index arithmetic is 64-bit throughout.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace fused_lstm::cuda {

// One forward time step over the first `rows` rows of the active batch.
//
// In:  gates  [rows, 4H] (ld gates_ld)  pre-activations a_i, a_f, a_g, a_o
//                                       (x W_ih^T + h_prev W_hh^T + biases).
//      c      [rows, H]  (ld c_ld)      previous cell state.
// Out: gates  <- activated i, f, g, o   (only if save_gates; else untouched).
//      c      <- new cell state         (in place).
//      c_save [rows, H]  (ld c_save_ld) copy of the new cell state, or null.
//      h      [rows, H]  (ld h_ld)      h = o * tanh(c) in acc_t, or null.
//      y      [rows, H]  (ld y_ld)      the same h rounded to out_t, or null.
// The caller points h at the recurrent state (no projection) or at an h_raw
// buffer (projection: the projected state comes from a GEMM afterwards).
template <typename acc_t, typename out_t>
cudaError_t lstm_forward_pointwise(
    int64_t rows, int64_t H,
    acc_t* gates, int64_t gates_ld,
    acc_t* c, int64_t c_ld,
    acc_t* c_save, int64_t c_save_ld,
    acc_t* h, int64_t h_ld,
    out_t* y, int64_t y_ld,
    bool save_gates,
    cudaStream_t stream);

// One backward time step over the first `rows` rows of the active batch.
//
// In:  act    [rows, 4H] (ld act_ld)    activated gates i, f, g, o of this step.
//      c      [rows, H]  (ld c_ld)      cell state after this step.
//      c_prev [c_prev_rows, H] (ld c_prev_ld)  cell state before this step for
//                                       rows [0, c_prev_rows) ...
//      c_init [rows, H]  (ld c_init_ld) ... and for rows [c_prev_rows, rows)
//                                       (row r read at row r; the initial state
//                                       c0 of rows that start at this step).
//                                       May be null when c_prev_rows == rows.
//      dh     [rows, H]  (ld dh_ld)     dL/dh_raw of this step ...
//      dh2    [rows, H]  (ld dh2_ld)    ... plus this, or null.
//      dc     [rows, H]  (ld dc_ld)     dL/dc from the next step.
// Out: dc     <- dL/dc_prev             (in place).
//      dgates [rows, 4H] (ld dgates_ld) dL/d(pre-activation gates).
template <typename acc_t>
cudaError_t lstm_backward_pointwise(
    int64_t rows, int64_t H,
    const acc_t* act, int64_t act_ld,
    const acc_t* c, int64_t c_ld,
    const acc_t* c_prev, int64_t c_prev_ld, int64_t c_prev_rows,
    const acc_t* c_init, int64_t c_init_ld,
    const acc_t* dh, int64_t dh_ld,
    const acc_t* dh2, int64_t dh2_ld,
    acc_t* dc, int64_t dc_ld,
    acc_t* dgates, int64_t dgates_ld,
    cudaStream_t stream);

// Recomputes the unprojected hidden output from what forward saved.
//
// In:  act [rows, 4H] (ld act_ld)  activated gates (only o is read).
//      c   [rows, H]  (ld c_ld)    cell state.
// Out: h   [rows, H]  (ld h_ld)    h_raw = o * tanh(c), bitwise what the
//                                  forward kernel produced.
template <typename acc_t>
cudaError_t lstm_hidden_from_saved(
    int64_t rows, int64_t H,
    const acc_t* act, int64_t act_ld,
    const acc_t* c, int64_t c_ld,
    acc_t* h, int64_t h_ld,
    cudaStream_t stream);

// Row gather with a fallback source (builds h_prev of every packed step).
//
// In:  index [rows]              int64 on the device; index[r] >= 0 picks
//                                src row index[r], index[r] < 0 picks alt row
//                                -index[r] - 1.
//      src   [*, cols] (ld src_ld)
//      alt   [*, cols] (ld alt_ld)
// Out: dst   [rows, cols] (ld dst_ld)
template <typename acc_t>
cudaError_t lstm_gather_rows(
    int64_t rows, int64_t cols,
    const int64_t* index,
    const acc_t* src, int64_t src_ld,
    const acc_t* alt, int64_t alt_ld,
    acc_t* dst, int64_t dst_ld,
    cudaStream_t stream);

// One forward time step with the recurrent product inside (layers without a
// projection): a_gates = pre + h_prev @ w_hh^T, then the same pointwise update
// as lstm_forward_pointwise. One launch per step and no cuBLAS call: for the
// batches of an LSTM step (rows <= a few hundred) a GEMM library spreads the
// [rows, 4H] output over too few thread blocks, and its host-side cost is as
// large as the step itself. Each thread block owns 8 hidden units (their four
// gate rows of w_hh, 4 x 8 rows, read once per block) for 8 rows of the batch.
//
// In:  pre    [rows, 4H] (ld pre_ld)    x W_ih^T + biases of this step.
//      w_hh   [4H, H] (row-major, ld H).
//      h_prev [h_prev_rows, H] (ld h_prev_ld)  h of the previous step, rows
//                                       [0, h_prev_rows) ...
//      h_init [rows, H] (ld h_init_ld)  ... and rows [h_prev_rows, rows) (h0).
//      c      [rows, H]  (ld c_ld)      previous cell state.
// Out: pre    <- activated i, f, g, o   (only if save_gates; else untouched).
//      c      <- new cell state         (in place).
//      c_save [rows, H] (ld c_save_ld)  copy of the new cell state, or null.
//      h_out  [rows, H] (ld h_out_ld)   h of this step in acc_t (the next
//                                       step's h_prev). Must not alias h_prev.
//      h_last [rows, H] (ld h_last_ld)  the same h again, or null: a [B, H]
//                                       buffer that ends up holding h_n.
//      y      [rows, H] (ld y_ld)       the same h rounded to out_t, or null.
template <typename acc_t, typename out_t>
cudaError_t lstm_forward_step(
    int64_t rows, int64_t H,
    acc_t* pre, int64_t pre_ld,
    const acc_t* w_hh,
    const acc_t* h_prev, int64_t h_prev_ld, int64_t h_prev_rows,
    const acc_t* h_init, int64_t h_init_ld,
    acc_t* c, int64_t c_ld,
    acc_t* c_save, int64_t c_save_ld,
    acc_t* h_out, int64_t h_out_ld,
    acc_t* h_last, int64_t h_last_ld,
    out_t* y, int64_t y_ld,
    bool save_gates,
    cudaStream_t stream);

// One backward time step with the recurrent product inside (no projection):
// dh = dgates_next @ w_hh (+ dh2), then the same gate gradients as
// lstm_backward_pointwise. Each thread block owns 32 hidden units (32 rows of
// w_hh^T, read once per block) for 8 rows of the batch.
//
// In:  dg_next [dg_next_rows, 4H] (ld dg_next_ld)  d(gates) of the step
//                                       processed before this one (the next
//                                       step in time); rows [0, dg_next_rows)
//                                       take their dh from it ...
//      dh_init [rows, H] (ld dh_init_ld) ... rows [dg_next_rows, rows) take it
//                                       from here (grad_h_n of rows whose
//                                       sequence ends at this step).
//      w_hh_t  [H, 4H] (row-major, ld 4H): w_hh transposed.
//      act, c, c_prev/c_init, dh2, dc: as for lstm_backward_pointwise.
// Out: dc      <- dL/dc_prev            (in place).
//      dgates  [rows, 4H] (ld dgates_ld) dL/d(pre-activation gates). Must not
//                                       alias dg_next's rows.
//      dg_last [rows, 4H] (ld dg_last_ld) the same d(gates) again, or null.
template <typename acc_t>
cudaError_t lstm_backward_step(
    int64_t rows, int64_t H,
    const acc_t* dg_next, int64_t dg_next_ld, int64_t dg_next_rows,
    const acc_t* dh_init, int64_t dh_init_ld,
    const acc_t* w_hh_t,
    const acc_t* act, int64_t act_ld,
    const acc_t* c, int64_t c_ld,
    const acc_t* c_prev, int64_t c_prev_ld, int64_t c_prev_rows,
    const acc_t* c_init, int64_t c_init_ld,
    const acc_t* dh2, int64_t dh2_ld,
    acc_t* dc, int64_t dc_ld,
    acc_t* dgates, int64_t dgates_ld,
    acc_t* dg_last, int64_t dg_last_ld,
    cudaStream_t stream);

// The instantiations lstm_cuda_kernels.cu provides, for exactly these types:
// FUSED_LSTM_CUDA_INSTANCES(extern) declares them below, and
// FUSED_LSTM_CUDA_INSTANCES() defines them there, from this one list.
#define FUSED_LSTM_OUT_INSTANCES(PREFIX, T, O)                                           \
  PREFIX template cudaError_t lstm_forward_pointwise<T, O>(                              \
      int64_t, int64_t, T*, int64_t, T*, int64_t, T*, int64_t, T*, int64_t, O*, int64_t,  \
      bool, cudaStream_t);                                                               \
  PREFIX template cudaError_t lstm_forward_step<T, O>(                                   \
      int64_t, int64_t, T*, int64_t, const T*, const T*, int64_t, int64_t, const T*,      \
      int64_t, T*, int64_t, T*, int64_t, T*, int64_t, T*, int64_t, O*, int64_t, bool,     \
      cudaStream_t);
#define FUSED_LSTM_ACC_INSTANCES(PREFIX, T)                                              \
  PREFIX template cudaError_t lstm_backward_pointwise<T>(                                \
      int64_t, int64_t, const T*, int64_t, const T*, int64_t, const T*, int64_t, int64_t, \
      const T*, int64_t, const T*, int64_t, const T*, int64_t, T*, int64_t, T*, int64_t,  \
      cudaStream_t);                                                                     \
  PREFIX template cudaError_t lstm_hidden_from_saved<T>(                                 \
      int64_t, int64_t, const T*, int64_t, const T*, int64_t, T*, int64_t, cudaStream_t); \
  PREFIX template cudaError_t lstm_gather_rows<T>(                                       \
      int64_t, int64_t, const int64_t*, const T*, int64_t, const T*, int64_t, T*, int64_t, \
      cudaStream_t);                                                                     \
  PREFIX template cudaError_t lstm_backward_step<T>(                                     \
      int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t, const T*, const T*, \
      int64_t, const T*, int64_t, const T*, int64_t, int64_t, const T*, int64_t, const T*, \
      int64_t, T*, int64_t, T*, int64_t, T*, int64_t, cudaStream_t);
#define FUSED_LSTM_CUDA_INSTANCES(PREFIX)                                                \
  FUSED_LSTM_OUT_INSTANCES(PREFIX, float, float)                                         \
  FUSED_LSTM_OUT_INSTANCES(PREFIX, float, __half)                                        \
  FUSED_LSTM_OUT_INSTANCES(PREFIX, float, __nv_bfloat16)                                 \
  FUSED_LSTM_OUT_INSTANCES(PREFIX, double, double)                                       \
  FUSED_LSTM_ACC_INSTANCES(PREFIX, float)                                                \
  FUSED_LSTM_ACC_INSTANCES(PREFIX, double)

FUSED_LSTM_CUDA_INSTANCES(extern)

}  // namespace fused_lstm::cuda
