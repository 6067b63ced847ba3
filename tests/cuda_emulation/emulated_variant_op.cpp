// The variant op's CUDA implementation (csrc/cuda/variant_cuda_impl.cpp, the time loops and
// the kernels) on the CPU, through the stand-in cuda_runtime.h beside this file: registered
// as fused_lstm_emulated::lstm_variant_forward/backward with the real op's schemas, for CPU
// tensors, with the per-step GEMMs on emulated_blas.cpp's gemm_rows and no stream. What it
// leaves out of the CUDA binding (csrc/cuda/lstm_variant_cuda.cpp): the device checks, the
// device guard and stream, and cuBLAS. Built by tests/cuda_emulation/build.py.
#include <torch/library.h>

#include "../../csrc/cuda/cuda_blas.h"
#include "../../csrc/cuda/variant_cuda_impl.h"
#include "../../csrc/lstm_variant_schema.h"

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using namespace fused_lstm;
using namespace fused_lstm::cuda;

template <typename T>
RowGemm<T> row_gemm() {
  return [](int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B, int64_t ldb,
            bool b_rows_are_n, T beta, T* C, int64_t ldc) {
    TORCH_CHECK(gemm_rows<T>(nullptr, m, n, k, A, lda, B, ldb, b_rows_are_n, beta, C, ldc) ==
                CUBLAS_STATUS_SUCCESS);
  };
}

VariantForwardResult forward(const Tensor& x, const OptTensor& batch_sizes, const Tensor& h0,
                             const Tensor& c0, const std::vector<Tensor>& weights,
                             bool has_bias, bool has_proj, bool reverse,
                             const std::vector<Tensor>& norm, double norm_eps, bool norm_state,
                             const OptTensor& recurrent_mask, const OptTensor& zoneout_h,
                             const OptTensor& zoneout_c, bool need_backward) {
  const VariantArgs v = check_variant_args("lstm_variant_forward", x, batch_sizes, h0, c0,
                                           weights, has_bias, has_proj, reverse, norm, norm_eps,
                                           norm_state, recurrent_mask, zoneout_h, zoneout_c);
  if (v.compute == at::kDouble) {
    return variant_forward_impl<double>(v, x, reverse, need_backward,
                                        row_gemm<double>(), nullptr);
  }
  return variant_forward_impl<float>(v, x, reverse, need_backward,
                                     row_gemm<float>(), nullptr);
}

VariantBackwardResult backward(const Tensor& grad_y, const Tensor& grad_h_n,
                               const Tensor& grad_c_n, const OptTensor& grad_cells,
                               const Tensor& x, const OptTensor& batch_sizes, const Tensor& h0,
                               const Tensor& c0, const std::vector<Tensor>& weights,
                               bool has_bias, bool has_proj, bool reverse,
                               const std::vector<Tensor>& norm, double norm_eps,
                               bool norm_state, const OptTensor& recurrent_mask,
                               const OptTensor& zoneout_h, const OptTensor& zoneout_c,
                               const Tensor& y, const Tensor& cells,
                               const std::vector<Tensor>& saved) {
  const VariantArgs v = check_variant_args("lstm_variant_backward", x, batch_sizes, h0, c0,
                                           weights, has_bias, has_proj, reverse, norm, norm_eps,
                                           norm_state, recurrent_mask, zoneout_h, zoneout_c);
  if (v.compute == at::kDouble) {
    return variant_backward_impl<double>(v, x, reverse, grad_y, grad_h_n, grad_c_n, grad_cells,
                                         h0, c0, y, cells, saved,
                                         row_gemm<double>(), nullptr);
  }
  return variant_backward_impl<float>(v, x, reverse, grad_y, grad_h_n, grad_c_n, grad_cells, h0,
                                      c0, y, cells, saved, row_gemm<float>(),
                                      nullptr);
}

}  // namespace

// The schemas of csrc/ops.cpp (lstm_variant_schema.h).
TORCH_LIBRARY_FRAGMENT(fused_lstm_emulated, m) {
  m.def(kLstmVariantForwardSchema);
  m.def(kLstmVariantBackwardSchema);
}

TORCH_LIBRARY_IMPL(fused_lstm_emulated, CPU, m) {
  m.impl("lstm_variant_forward", &forward);
  m.impl("lstm_variant_backward", &backward);
}
