// The CUDA forward of one layer direction (lstm_cuda_impl.h).
#include <ATen/ATen.h>

#include <optional>

#include "cuda_blas.h"
#include "cuda_impl_common.h"
#include "cuda_plan.h"
#include "cuda_tuning.h"
#include "lstm_cuda_impl.h"
#include "lstm_cuda_loops.h"

namespace fused_lstm::cuda {

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

OutType out_type(at::ScalarType dt) {
  switch (dt) {
    case at::kFloat: return OutType::f32;
    case at::kDouble: return OutType::f64;
    case at::kHalf: return OutType::f16;
    case at::kBFloat16: return OutType::bf16;
    default: break;
  }
  TORCH_CHECK(false, "lstm_layer_forward: no CUDA kernel for dtype ", dt);
}

template <typename acc_t>
DirectionForward forward_impl(const LayerArgs& a, const Tensor& x, const Tensor& h0,
                              const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                              const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
                              bool reverse, bool need_backward, cublasHandle_t blas,
                              cudaStream_t stream) {
  const auto dt = x.scalar_type();
  const auto ct = compute_dtype(dt);
  const auto opts = x.options().dtype(ct);
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;

  // float16/bfloat16 operands on tensor cores (FUSED_LSTM_CUDA_16BIT_GEMM), not yet run on a
  // GPU: the input projection here, the recurrent products below where the loop allows.
  const bool tensor_cores_16bit = dt != ct && cuda_16bit_gemm_switched_on();

  // gates: [N, 4H] = x @ w_ih^T + b_ih + b_hh, for all steps in one GEMM.
  Tensor gates = at::empty({a.N, G}, opts);
  const Tensor bias = a.has_bias ? as_compute(*b_ih, ct) + as_compute(*b_hh, ct) : Tensor();
  if (tensor_cores_16bit) {
    const Tensor x16 = x.contiguous().view({a.N, a.I});
    const Tensor w_ih16 = w_ih.to(dt).contiguous();
    if (a.has_bias) gates.copy_(bias.expand({a.N, G}));
    check_loop_status(
        "lstm_layer_forward",
        blas_status(gemm_rows_16bit(blas, dt == at::kBFloat16, a.N, G, a.I, x16.data_ptr(), a.I,
                                    w_ih16.data_ptr(), a.I, true, a.has_bias ? 1.0f : 0.0f,
                                    gates.data_ptr<float>(), G),
                    "the input projection GEMM (cuBLAS, 16-bit)"));
  } else {
    const Tensor x2 = as_compute(x, ct).view({a.N, a.I});
    if (a.has_bias) {
      at::addmm_out(gates, bias, x2, as_compute(w_ih, ct).t());
    } else {
      at::mm_out(gates, x2, as_compute(w_ih, ct).t());
    }
  }
  Tensor h = fresh(h0, ct);                        // h: [B, Hout], becomes h_n
  Tensor c = fresh(c0, ct);                        // c: [B, H], becomes c_n
  Tensor y = at::empty({a.N, Hout}, x.options());  // y: [N, Hout] in the input dtype
  Tensor cells = at::empty({need_backward ? a.N : 0, H}, opts);  // cells: [N, H]
  const Tensor h0_c = as_compute(h0, ct);                        // read while h is written
  const Tensor w_hr_c = a.has_proj ? as_compute(*w_hr, ct) : Tensor();  // [Hout, H]

  const std::optional<PersistentForwardShape> persistent = persistent_forward_plan(a, dt);
  const StepRoute route = step_route(a, /*backward=*/false);
  // hist: [N, Hout] h of every step in acc_t, where y is not (lstm_cuda_loops.h).
  const bool need_hist =
      dt != ct && !persistent && (route == StepRoute::fused || a.has_proj);
  const Tensor hist = need_hist ? at::empty({a.N, Hout}, opts) : Tensor();
  const Tensor h_raw = a.has_proj ? at::empty({a.B, H}, opts) : Tensor();  // [B, H]
  // The recurrent products on tensor cores: w_hh [4H, Hout] and h0 [B, Hout] in 16 bits.
  const bool recurrent_16bit =
      tensor_cores_16bit && route == StepRoute::gemm && !a.has_proj && !persistent;
  const Tensor w_hh16 = recurrent_16bit ? w_hh.to(dt).contiguous() : Tensor();
  const Tensor h0_16 = recurrent_16bit ? h0.to(dt).contiguous() : Tensor();
  // Else w_hh in acc_t: [4H, Hout].
  const Tensor w_hh_c = recurrent_16bit ? Tensor() : as_compute(w_hh, ct);

  const CudaForwardLoop<acc_t> loop{route,
                                    persistent ? &*persistent : nullptr,
                                    out_type(dt),
                                    need_backward,
                                    gates.data_ptr<acc_t>(),
                                    h0_c.data_ptr<acc_t>(),
                                    h.data_ptr<acc_t>(),
                                    c.data_ptr<acc_t>(),
                                    need_backward ? cells.data_ptr<acc_t>() : nullptr,
                                    y.data_ptr(),
                                    ptr_or_null<acc_t>(hist),
                                    ptr_or_null<acc_t>(w_hh_c),
                                    ptr_or_null<acc_t>(w_hr_c),
                                    ptr_or_null<acc_t>(h_raw),
                                    recurrent_16bit ? w_hh16.data_ptr() : nullptr,
                                    recurrent_16bit ? h0_16.data_ptr() : nullptr};
  check_loop_status("lstm_layer_forward",
                    lstm_cuda_forward_loop<acc_t>(steps_of(a, reverse), loop, blas, stream));
  // With a projection the gemm route left h of every step in hist: y is its rounding.
  if (need_hist && route == StepRoute::gemm) y.copy_(hist);

  if (!need_backward) gates = at::empty({0, G}, opts);
  if (!a.packed) y = y.view({a.T, a.B, Hout});
  return {y, h.to(dt), c.to(dt), gates, cells};
}

}  // namespace

DirectionForward forward_direction(const Tensor& x, const OptTensor& batch_sizes,
                                   const Tensor& h0, const Tensor& c0,
                                   const DirectionWeights& w, bool reverse, bool need_backward,
                                   cublasHandle_t blas, cudaStream_t stream) {
  const auto& [w_ih, w_hh, b_ih, b_hh, w_hr] = w;
  const LayerArgs a = check_layer_args(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr);
  if (compute_dtype(x.scalar_type()) == at::kDouble) {
    return forward_impl<double>(a, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                                need_backward, blas, stream);
  }
  return forward_impl<float>(a, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, need_backward,
                             blas, stream);
}

}  // namespace fused_lstm::cuda
