// The layer op's CUDA implementation (csrc/cuda/lstm_cuda_forward.cpp and
// lstm_cuda_backward.cpp, the time loops of lstm_cuda_loops.h and the kernels of
// lstm_cuda_kernels.cu) on the CPU, through the stand-ins beside this file: registered as
// fused_lstm_emulated::lstm_layer_forward/backward with the real op's schemas, for CPU
// tensors, with cuBLAS's calls emulated (emulated_blas.cpp) and no stream. What it leaves
// out of the CUDA binding (csrc/cuda/lstm_cuda.cpp): the device checks, the device guard,
// the stream and the cuBLAS handle; and the persistent route (emulated_persistent.cpp says
// it cannot run). Built by tests/cuda_emulation_build.py.
#include <torch/library.h>

#include "../../csrc/cuda/lstm_cuda_impl.h"
#include "../../csrc/lstm_layer_schema.h"

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using namespace fused_lstm;
using namespace fused_lstm::cuda;

void run_each(int64_t count, const std::function<void(int64_t)>& fn) {
  for (int64_t d = 0; d < count; ++d) fn(d);
}

LayerForward forward(const Tensor& x, const OptTensor& batch_sizes, const Tensor& h0,
                     const Tensor& c0, const std::vector<Tensor>& weights, bool has_bias,
                     bool has_proj, bool bidirectional, bool reverse, bool need_backward) {
  constexpr const char* op = "lstm_layer_forward";
  const auto w = split_direction_weights(op, weights, has_bias, has_proj, bidirectional, reverse);
  const int64_t directions = static_cast<int64_t>(w.size());
  check_layer_states(op, h0, c0, directions);
  return layer_forward(
      x, h0, c0, directions, reverse,
      [&](int64_t d, const Tensor& h0_d, const Tensor& c0_d, bool reverse_d) {
        return forward_direction(x, batch_sizes, h0_d, c0_d, w[d], reverse_d, need_backward,
                                 nullptr, nullptr);
      },
      run_each);
}

LayerBackward backward(const Tensor& grad_y, const Tensor& grad_h_n, const Tensor& grad_c_n,
                       const Tensor& x, const OptTensor& batch_sizes, const Tensor& h0,
                       const Tensor& c0, const std::vector<Tensor>& weights, bool has_bias,
                       bool has_proj, bool bidirectional, bool reverse, const Tensor& y,
                       const std::vector<Tensor>& saved) {
  constexpr const char* op = "lstm_layer_backward";
  const auto w = split_direction_weights(op, weights, has_bias, has_proj, bidirectional, reverse);
  const int64_t directions = static_cast<int64_t>(w.size());
  check_layer_backward_args(grad_y, grad_h_n, grad_c_n, h0, c0, y, saved, directions);
  return layer_backward(
      grad_y, grad_h_n, grad_c_n, y, saved, directions, reverse, has_bias, has_proj,
      [&](int64_t d, const Tensor& gy, const Tensor& gh, const Tensor& gc, const Tensor& y_d,
          const Tensor& gates, const Tensor& cells, bool reverse_d) {
        return backward_direction(gy, gh, gc, x, batch_sizes, h0[d], c0[d], w[d], y_d, gates,
                                  cells, reverse_d, nullptr, nullptr);
      },
      run_each);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fused_lstm_emulated, m) {
  m.def(kLstmLayerForwardSchema);
  m.def(kLstmLayerBackwardSchema);
}

TORCH_LIBRARY_IMPL(fused_lstm_emulated, CPU, m) {
  m.impl("lstm_layer_forward", &forward);
  m.impl("lstm_layer_backward", &backward);
}
