// CUDA binding of the variant op (lstm_variant_forward/backward, ops.cpp), on the current
// stream: the device checks, then the checks both bindings share (lstm_variant_args.h),
// then variant_cuda_impl.cpp with the per-step GEMM on cuBLAS (cuda_blas.h). float16 and
// bfloat16 run in float32 and are rounded back on the way out, as on the CPU.
//
// Off by default: fused_lstm.ops.lstm_variant calls it only under
// FUSED_LSTM_CUDA_VARIANT_OP=1 (README, "Building with or without CUDA"), and the op
// itself, called directly, refuses to run here without that switch: no GPU has run it yet.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "../lstm_variant_args.h"
#include "cuda_blas.h"
#include "cuda_device_checks.h"
#include "cuda_tuning.h"
#include "variant_cuda_impl.h"

namespace fused_lstm::cuda {

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// Until a GPU has run these kernels, they run only under the switch that fused_lstm.ops
// reads (FUSED_LSTM_CUDA_VARIANT_OP=1), also for direct calls of the op.
void check_switch_on(const char* op) {
  TORCH_CHECK(cuda_variant_op_switched_on(), op,
              ": the variant op's CUDA kernels have not yet run on a GPU and are off by "
              "default; set FUSED_LSTM_CUDA_VARIANT_OP=1 to run them (FusedLSTM's CUDA calls "
              "with these options run the plain-PyTorch reference meanwhile)");
}

// The per-step GEMM: cuBLAS on ATen's handle for the current stream (its float32 math
// mode follows torch.backends.cuda.matmul.allow_tf32, as at::mm's does).
template <typename T>
RowGemm<T> step_gemm() {
  const cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
  return [handle](int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B,
                  int64_t ldb, bool b_rows_are_n, T beta, T* C, int64_t ldc) {
    const cublasStatus_t status =
        gemm_rows<T>(handle, m, n, k, A, lda, B, ldb, b_rows_are_n, beta, C, ldc);
    TORCH_CHECK(status == CUBLAS_STATUS_SUCCESS,
                "fused_lstm: cuBLAS GEMM failed with status ", static_cast<int>(status));
  };
}

VariantForwardResult lstm_variant_forward_cuda(
    const Tensor& x, const OptTensor& batch_sizes, const Tensor& h0, const Tensor& c0,
    const std::vector<Tensor>& weights, bool has_bias, bool has_proj, bool reverse,
    const std::vector<Tensor>& norm, double norm_eps, bool norm_state,
    const OptTensor& recurrent_mask, const OptTensor& zoneout_h, const OptTensor& zoneout_c,
    bool need_backward) {
  constexpr const char* op = "lstm_variant_forward";
  check_switch_on(op);
  check_batch_sizes_on_cpu(op, batch_sizes);
  check_on_one_cuda_device(op,
                           {{"x", &x}, {"h0", &h0}, {"c0", &c0},
                            {"recurrent_mask", opt_ptr(recurrent_mask)},
                            {"zoneout_h", opt_ptr(zoneout_h)}, {"zoneout_c", opt_ptr(zoneout_c)}},
                           {{&weights, "weights"}, {&norm, "norm"}});
  const c10::cuda::CUDAGuard guard(x.device());
  const VariantArgs v =
      check_variant_args(op, x, batch_sizes, h0, c0, weights, has_bias, has_proj, reverse, norm,
                         norm_eps, norm_state, recurrent_mask, zoneout_h, zoneout_c);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  if (v.compute == at::kDouble) {
    return variant_forward_impl<double>(v, x, reverse, need_backward, step_gemm<double>(),
                                        stream);
  }
  return variant_forward_impl<float>(v, x, reverse, need_backward, step_gemm<float>(),
                                     stream);
}

VariantBackwardResult lstm_variant_backward_cuda(
    const Tensor& grad_y, const Tensor& grad_h_n, const Tensor& grad_c_n,
    const OptTensor& grad_cells, const Tensor& x, const OptTensor& batch_sizes,
    const Tensor& h0, const Tensor& c0, const std::vector<Tensor>& weights, bool has_bias,
    bool has_proj, bool reverse, const std::vector<Tensor>& norm, double norm_eps,
    bool norm_state, const OptTensor& recurrent_mask, const OptTensor& zoneout_h,
    const OptTensor& zoneout_c, const Tensor& y, const Tensor& cells,
    const std::vector<Tensor>& saved) {
  constexpr const char* op = "lstm_variant_backward";
  check_switch_on(op);
  check_batch_sizes_on_cpu(op, batch_sizes);
  check_on_one_cuda_device(
      op,
      {{"grad_y", &grad_y}, {"grad_h_n", &grad_h_n}, {"grad_c_n", &grad_c_n},
       {"grad_cells", opt_ptr(grad_cells)}, {"x", &x}, {"h0", &h0}, {"c0", &c0},
       {"recurrent_mask", opt_ptr(recurrent_mask)}, {"zoneout_h", opt_ptr(zoneout_h)},
       {"zoneout_c", opt_ptr(zoneout_c)}, {"y", &y}, {"cells", &cells}},
      {{&weights, "weights"}, {&norm, "norm"}, {&saved, "saved"}});
  const c10::cuda::CUDAGuard guard(x.device());
  const VariantArgs v =
      check_variant_args(op, x, batch_sizes, h0, c0, weights, has_bias, has_proj, reverse, norm,
                         norm_eps, norm_state, recurrent_mask, zoneout_h, zoneout_c);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  if (v.compute == at::kDouble) {
    return variant_backward_impl<double>(v, x, reverse, grad_y, grad_h_n, grad_c_n, grad_cells,
                                         h0, c0, y, cells, saved, step_gemm<double>(),
                                         stream);
  }
  return variant_backward_impl<float>(v, x, reverse, grad_y, grad_h_n, grad_c_n, grad_cells, h0,
                                      c0, y, cells, saved, step_gemm<float>(), stream);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CUDA, m) {
  m.impl("lstm_variant_forward", &lstm_variant_forward_cuda);
  m.impl("lstm_variant_backward", &lstm_variant_backward_cuda);
}

}  // namespace fused_lstm::cuda
