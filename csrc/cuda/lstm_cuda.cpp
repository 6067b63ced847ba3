// CUDA binding of the fused_lstm layer ops, on the current stream: checks (devices,
// shapes), the directions of a layer one after the other, and for each one call into the
// impl of lstm_cuda_impl.h (buffers and whole-sequence GEMMs around the torch-free time
// loops of lstm_cuda_loops.h), which take one of two routes per layer direction
// (cuda_plan.h): our step kernels with the recurrent product inside, or a cuBLAS GEMM per
// step followed by a pointwise kernel (lstm_cuda_kernels.cu).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <functional>
#include <tuple>
#include <vector>

#include "../lstm_layer_args.h"
#include "../lstm_layer_directions.h"
#include "cuda_device_checks.h"
#include "lstm_cuda_impl.h"

namespace fused_lstm::cuda {

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// ATen's cuBLAS handle for the current stream, fetched for each direction (which sets its
// stream, workspace and math mode: float32 GEMMs use TF32 where
// torch.backends.cuda.matmul.allow_tf32 allows it, as at::mm's do).
cublasHandle_t blas_handle() { return at::cuda::getCurrentCUDABlasHandle(); }

// The two directions of a bidirectional layer run one after the other on the current
// stream.
void run_directions(int64_t count, const std::function<void(int64_t)>& fn) {
  for (int64_t d = 0; d < count; ++d) fn(d);
}

LayerForward lstm_layer_forward_cuda(const Tensor& x, const OptTensor& batch_sizes,
                                     const Tensor& h0, const Tensor& c0,
                                     const std::vector<Tensor>& weights, bool has_bias,
                                     bool has_proj, bool bidirectional, bool reverse,
                                     bool need_backward) {
  constexpr const char* op = "lstm_layer_forward";
  check_batch_sizes_on_cpu(op, batch_sizes);
  check_on_one_cuda_device(op, {{"x", &x}, {"h0", &h0}, {"c0", &c0}}, {{&weights, "weights"}});
  const auto w = split_direction_weights(op, weights, has_bias, has_proj, bidirectional, reverse);
  const int64_t directions = static_cast<int64_t>(w.size());
  check_layer_states(op, h0, c0, directions);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  return layer_forward(
      x, h0, c0, directions, reverse,
      [&](int64_t d, const Tensor& h0_d, const Tensor& c0_d, bool reverse_d) {
        return forward_direction(x, batch_sizes, h0_d, c0_d, w[d], reverse_d, need_backward,
                                 blas_handle(), stream);
      },
      run_directions);
}

LayerBackward lstm_layer_backward_cuda(const Tensor& grad_y, const Tensor& grad_h_n,
                                       const Tensor& grad_c_n, const Tensor& x,
                                       const OptTensor& batch_sizes, const Tensor& h0,
                                       const Tensor& c0, const std::vector<Tensor>& weights,
                                       bool has_bias, bool has_proj, bool bidirectional,
                                       bool reverse, const Tensor& y,
                                       const std::vector<Tensor>& saved) {
  constexpr const char* op = "lstm_layer_backward";
  check_batch_sizes_on_cpu(op, batch_sizes);
  check_on_one_cuda_device(op,
                           {{"grad_y", &grad_y}, {"grad_h_n", &grad_h_n},
                            {"grad_c_n", &grad_c_n}, {"x", &x}, {"h0", &h0}, {"c0", &c0},
                            {"y", &y}},
                           {{&weights, "weights or saved"}, {&saved, "weights or saved"}});
  const auto w = split_direction_weights(op, weights, has_bias, has_proj, bidirectional, reverse);
  const int64_t directions = static_cast<int64_t>(w.size());
  check_layer_backward_args(grad_y, grad_h_n, grad_c_n, h0, c0, y, saved, directions);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  return layer_backward(
      grad_y, grad_h_n, grad_c_n, y, saved, directions, reverse, has_bias, has_proj,
      [&](int64_t d, const Tensor& gy, const Tensor& gh, const Tensor& gc, const Tensor& y_d,
          const Tensor& gates, const Tensor& cells, bool reverse_d) {
        return backward_direction(gy, gh, gc, x, batch_sizes, h0[d], c0[d], w[d], y_d, gates,
                                  cells, reverse_d, blas_handle(), stream);
      },
      run_directions);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CUDA, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_cuda);
  m.impl("lstm_layer_backward", &lstm_layer_backward_cuda);
}

}  // namespace fused_lstm::cuda
