// The CUDA time loops of one layer direction (lstm_cuda_forward.cpp,
// lstm_cuda_backward.cpp): each step's kernel launches and GEMMs on the route the plan
// gives (cuda_plan.h), around the whole-sequence GEMMs, on `stream`. They produce the same
// buffers with the same meaning as the CPU binding (lstm_cpu.cpp), except that the saved
// gates keep the natural i, f, g, o column order.
//
// float16/bfloat16 inputs run in float32 (gates, cells, the recurrent state and all
// accumulation) and are rounded to the input dtype on the way out. acc_t: float or double.
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include <optional>

#include "../lstm_layer_args.h"
#include "../lstm_layer_directions.h"

namespace fused_lstm::cuda {

inline void check_launch(cudaError_t err, const char* kernel) {
  TORCH_CHECK(err == cudaSuccess, "fused_lstm: launching ", kernel, " failed: ",
              cudaGetErrorString(err));
}

// One direction's forward (the op's shapes for one direction, csrc/ops.cpp).
template <typename acc_t>
DirectionForward forward_impl(const LayerArgs& a, const at::Tensor& x, const at::Tensor& h0,
                              const at::Tensor& c0, const at::Tensor& w_ih,
                              const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                              const std::optional<at::Tensor>& b_hh,
                              const std::optional<at::Tensor>& w_hr, bool reverse,
                              bool need_backward, cudaStream_t stream);

// One direction's backward.
template <typename acc_t>
DirectionBackward backward_impl(const LayerArgs& a, const at::Tensor& grad_y,
                                const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
                                const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                const at::Tensor& w_ih, const at::Tensor& w_hh,
                                const std::optional<at::Tensor>& w_hr, const at::Tensor& y,
                                const at::Tensor& gates, const at::Tensor& cells, bool reverse,
                                cudaStream_t stream);

}  // namespace fused_lstm::cuda
