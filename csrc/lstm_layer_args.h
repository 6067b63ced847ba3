// Validated sizes and time-step layout of one lstm_layer_forward/backward call,
// shared by the CPU and CUDA bindings so both check the same things the same way.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace fused_lstm {

struct LayerArgs {
  int64_t T = 0;     // time steps
  int64_t B = 0;     // batch (rows of h0/c0; rows of step 0 when packed)
  int64_t I = 0;     // input features
  int64_t H = 0;     // hidden size (cell width)
  int64_t Hout = 0;  // size of h: proj_size if projecting, else H
  int64_t N = 0;     // rows of x and y: T * B dense, sum(batch_sizes) packed
  bool packed = false;
  bool has_bias = false;
  bool has_proj = false;
  // Step t owns rows [offset[t], offset[t] + rows[t]) of x, y, gates and cells.
  std::vector<int64_t> offset, rows;
};

// Checks shapes, dtypes and devices of an lstm_layer_forward call and derives its
// layout. Throws c10::Error (RuntimeError in Python) naming expected and given.
LayerArgs check_layer_args(const at::Tensor& x, const std::optional<at::Tensor>& batch_sizes,
                           const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                           const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                           const std::optional<at::Tensor>& b_hh,
                           const std::optional<at::Tensor>& w_hr);

// Checks what lstm_layer_backward receives besides the forward arguments: the
// gradients of forward's outputs, and y, gates and cells saved by forward.
void check_backward_args(const LayerArgs& a, const at::Tensor& grad_y,
                         const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
                         const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& y,
                         const at::Tensor& gates, const at::Tensor& cells);

// dtype of the gate and cell buffers: float32 for float16/bfloat16 inputs.
inline at::ScalarType compute_dtype(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

// A contiguous copy in the compute dtype that the caller may overwrite.
inline at::Tensor fresh(const at::Tensor& t, at::ScalarType dtype) {
  return at::empty(t.sizes(), t.options().dtype(dtype)).copy_(t);
}

// A contiguous view or copy in the compute dtype, read-only.
inline at::Tensor as_compute(const at::Tensor& t, at::ScalarType dtype) {
  return t.to(dtype).contiguous();
}

template <typename T>
T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace fused_lstm
