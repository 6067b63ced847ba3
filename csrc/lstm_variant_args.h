// The variant op's arguments (lstm_variant_forward/backward, ops.cpp), checked and in the
// compute dtype, and the list of buffers its forward saves for backward: shared by the CPU
// and CUDA bindings (cpu/lstm_variant_cpu.cpp, cuda/lstm_variant_cuda.cpp), so both check
// the same things with the same messages and save the same list.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <vector>

#include "lstm_layer_args.h"

namespace fused_lstm {

// What the forward saves for backward, in this order (empty tensors where the options need
// none; the list is empty when need_backward is false).
enum VariantSaved {
  kAct,       // [N, 4H] activated i, f, g, o
  kGxHat,     // [N, 4H] LN_ih's normalised input (with layer norm)
  kGxStats,   // [N, 2]  its mean and 1 / sqrt(var + eps) (with layer norm)
  kRHat,      // [N, 4H] LN_hh's normalised input (with layer norm)
  kRStats,    // [N, 2]  its mean and 1 / sqrt(var + eps) (with layer norm)
  kCand,      // [N, H]  c^ = f c_prev + i g
  kCStats,    // [N, 2]  LN_c's mean and 1 / sqrt(var + eps) (with layer norm)
  kHRaw,      // [N, H]  o tanh(n) (with a projection)
  kVariantSavedCount
};

// The variant op's arguments, checked, in the compute dtype (contiguous).
struct VariantArgs {
  LayerArgs a;
  at::ScalarType dtype;      // the input's
  at::ScalarType compute;    // float32 for float16/bfloat16
  at::Tensor x;              // [N, I]
  at::Tensor h0, c0;         // [B, Hout], [B, H]
  at::Tensor w_ih, w_hh, bias, w_hr;  // bias: b_ih + b_hh, or undefined
  std::vector<at::Tensor> norm;       // 6 or none
  double eps;
  bool norm_state;
  at::Tensor recurrent_mask, zoneout_h, zoneout_c;  // or undefined
};

// Checks the arguments every variant op shares (sizes, dtypes, devices against x's) and
// converts them; `op` names the op in errors. The binding checks x's device first.
VariantArgs check_variant_args(const char* op, const at::Tensor& x,
                               const std::optional<at::Tensor>& batch_sizes,
                               const at::Tensor& h0, const at::Tensor& c0,
                               const std::vector<at::Tensor>& weights, bool has_bias,
                               bool has_proj, bool reverse, const std::vector<at::Tensor>& norm,
                               double norm_eps, bool norm_state,
                               const std::optional<at::Tensor>& recurrent_mask,
                               const std::optional<at::Tensor>& zoneout_h,
                               const std::optional<at::Tensor>& zoneout_c);

// The saved buffers a forward with need_backward allocates (in v.compute on x's device),
// at their sizes: those the options do not need are empty.
std::array<at::Tensor, kVariantSavedCount> variant_saved_buffers(const VariantArgs& v);

// Checks what lstm_variant_backward receives besides the forward arguments: every saved
// buffer the options read at its size, the gradients and y, cells.
void check_variant_backward_args(const char* op, const VariantArgs& v,
                                 const at::Tensor& grad_y, const at::Tensor& grad_h_n,
                                 const at::Tensor& grad_c_n,
                                 const std::optional<at::Tensor>& grad_cells,
                                 const at::Tensor& h0, const at::Tensor& c0,
                                 const at::Tensor& y, const at::Tensor& cells,
                                 const std::vector<at::Tensor>& saved);

// What both backward bindings start from, checked (check_variant_backward_args) and in
// v.compute: the gradients and sequences as rows, the saved buffers, and the state
// gradients that the backward loop turns into grad_h0 and grad_c0.
struct VariantGradInputs {
  at::Tensor gy;                 // [N, Hout] dL/dy
  at::Tensor gc;                 // [N, H] dL/dcells, or undefined
  at::Tensor y;                  // [N, Hout]
  at::Tensor cells;              // [N, H]
  std::vector<at::Tensor> saved; // VariantSaved order
  at::Tensor dh;                 // [B, Hout] a fresh copy of grad_h_n
  at::Tensor dc;                 // [B, H]    a fresh copy of grad_c_n
};
VariantGradInputs variant_grad_inputs(const char* op, const VariantArgs& v,
                                      const at::Tensor& grad_y, const at::Tensor& grad_h_n,
                                      const at::Tensor& grad_c_n,
                                      const std::optional<at::Tensor>& grad_cells,
                                      const at::Tensor& h0, const at::Tensor& c0,
                                      const at::Tensor& y, const at::Tensor& cells,
                                      const std::vector<at::Tensor>& saved);

// A zoneout operand's row stride: 0 for one row shared by every row of x (eval's
// constants), else its width.
inline int64_t zoneout_row_stride(const at::Tensor& z) {
  return z.defined() && z.dim() == 2 ? z.size(1) : int64_t(0);
}

// A sequence tensor [N, width] shaped as x ([T, B, width] or [N, width]) in `dtype`.
inline at::Tensor as_sequence(const at::Tensor& seq, const at::Tensor& x,
                              at::ScalarType dtype) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = seq.size(1);
  return seq.view(shape).to(dtype);
}

}  // namespace fused_lstm
