// The CUDA forward time loop of one layer direction (lstm_cuda_loops.h).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <optional>
#include <type_traits>

#include "cuda_blas.h"
#include "cuda_plan.h"
#include "lstm_cuda_kernels.h"
#include "lstm_cuda_persistent.h"
#include "lstm_cuda_loops.h"

namespace fused_lstm::cuda {

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// One forward pointwise step, picking the kernel for the output dtype `dt`.
// y (may be null) is the base of the output buffer; the step's rows start
// y_offset elements in.
template <typename acc_t>
cudaError_t forward_step(at::ScalarType dt, int64_t rows, int64_t H, acc_t* gates,
                         int64_t gates_ld, acc_t* c, acc_t* c_save, acc_t* h, int64_t h_ld,
                         void* y, int64_t y_offset, int64_t y_ld, bool save_gates,
                         cudaStream_t stream) {
  if constexpr (std::is_same_v<acc_t, double>) {
    double* yp = y ? static_cast<double*>(y) + y_offset : nullptr;
    return lstm_forward_pointwise<double, double>(rows, H, gates, gates_ld, c, H, c_save, H, h,
                                                  h_ld, yp, y_ld, save_gates, stream);
  } else {
    switch (dt) {
      case at::kHalf: {
        __half* yp = y ? static_cast<__half*>(y) + y_offset : nullptr;
        return lstm_forward_pointwise<float, __half>(rows, H, gates, gates_ld, c, H, c_save, H,
                                                     h, h_ld, yp, y_ld, save_gates, stream);
      }
      case at::kBFloat16: {
        __nv_bfloat16* yp = y ? static_cast<__nv_bfloat16*>(y) + y_offset : nullptr;
        return lstm_forward_pointwise<float, __nv_bfloat16>(
            rows, H, gates, gates_ld, c, H, c_save, H, h, h_ld, yp, y_ld, save_gates, stream);
      }
      case at::kFloat: {
        float* yp = y ? static_cast<float*>(y) + y_offset : nullptr;
        return lstm_forward_pointwise<float, float>(rows, H, gates, gates_ld, c, H, c_save, H,
                                                    h, h_ld, yp, y_ld, save_gates, stream);
      }
      default:
        break;
    }
    TORCH_CHECK(false, "lstm_layer_forward: no CUDA kernel for dtype ", dt);
    return cudaErrorInvalidValue;
  }
}

// One forward step with the recurrent product inside, picking the kernel for
// the output dtype `dt`. y (may be null) is the base of the output buffer; the
// step's rows start y_offset elements in.
template <typename acc_t>
cudaError_t fused_forward_step(at::ScalarType dt, int64_t rows, int64_t H, acc_t* gates,
                               const acc_t* w_hh, const acc_t* h_prev, int64_t h_prev_rows,
                               const acc_t* h0, acc_t* c, acc_t* c_save, acc_t* h_out,
                               acc_t* h_last, void* y, int64_t y_offset, bool save_gates,
                               cudaStream_t stream) {
  const int64_t G = 4 * H;
  if constexpr (std::is_same_v<acc_t, double>) {
    double* yp = y ? static_cast<double*>(y) + y_offset : nullptr;
    return lstm_forward_step<double, double>(rows, H, gates, G, w_hh, h_prev, H, h_prev_rows, h0,
                                             H, c, H, c_save, H, h_out, H, h_last, H, yp, H,
                                             save_gates, stream);
  } else {
    switch (dt) {
      case at::kHalf: {
        __half* yp = y ? static_cast<__half*>(y) + y_offset : nullptr;
        return lstm_forward_step<float, __half>(rows, H, gates, G, w_hh, h_prev, H, h_prev_rows,
                                                h0, H, c, H, c_save, H, h_out, H, h_last, H, yp,
                                                H, save_gates, stream);
      }
      case at::kBFloat16: {
        __nv_bfloat16* yp = y ? static_cast<__nv_bfloat16*>(y) + y_offset : nullptr;
        return lstm_forward_step<float, __nv_bfloat16>(rows, H, gates, G, w_hh, h_prev, H,
                                                       h_prev_rows, h0, H, c, H, c_save, H,
                                                       h_out, H, h_last, H, yp, H, save_gates,
                                                       stream);
      }
      case at::kFloat: {
        float* yp = y ? static_cast<float*>(y) + y_offset : nullptr;
        return lstm_forward_step<float, float>(rows, H, gates, G, w_hh, h_prev, H, h_prev_rows,
                                               h0, H, c, H, c_save, H, h_out, H, h_last, H, yp,
                                               H, save_gates, stream);
      }
      default:
        break;
    }
    TORCH_CHECK(false, "lstm_layer_forward: no CUDA kernel for dtype ", dt);
    return cudaErrorInvalidValue;
  }
}

// What the forward time loops read and write (pointers into forward_impl's
// tensors, all in acc_t except y).
template <typename acc_t>
struct CudaForwardSteps {
  const LayerArgs& a;
  bool reverse;
  bool need_backward;  // save the activated gates and the cells
  at::ScalarType dt;   // the layer's (and y's) dtype
  cudaStream_t stream;
  acc_t* gates;        // [N, 4H]: x @ w_ih^T + biases in, activated gates out (need_backward)
  acc_t* h;            // [B, Hout]: h0 in, h_n out
  acc_t* c;            // [B, H]: c0 in, c_n out
  acc_t* cells;        // [N, H] or null
  void* y;             // [N, Hout] in dt
  const acc_t* w_hh;   // [4H, Hout]

  // The time index of step k in this direction's order.
  int64_t time(int64_t k) const { return reverse ? a.T - 1 - k : k; }
};

// Fused route: each step reads h_prev from the previous step's rows of hist
// ([N, H], h of every step in acc_t), or from h0 for rows that start at this
// step. It also writes its h into L.h, so that L.h ends up holding h_n.
template <typename acc_t>
void forward_steps_fused(const CudaForwardSteps<acc_t>& L, acc_t* hist, bool y_is_hist,
                         const acc_t* h0) {
  const LayerArgs& a = L.a;
  const int64_t H = a.H, G = 4 * a.H;
  for (int64_t k = 0; k < a.T; ++k) {
    const int64_t t = L.time(k), off = a.offset[t], rows = a.rows[t];
    const int64_t t_prev = k > 0 ? L.time(k - 1) : -1;
    const int64_t prev_rows = k > 0 ? std::min(rows, a.rows[t_prev]) : 0;
    check_launch(fused_forward_step<acc_t>(
                     L.dt, rows, H, L.gates + off * G, L.w_hh,
                     k > 0 ? hist + a.offset[t_prev] * H : nullptr, prev_rows, h0, L.c,
                     L.cells ? L.cells + off * H : nullptr, hist + off * H, L.h,
                     y_is_hist ? nullptr : L.y, off * H, L.need_backward, L.stream),
                 "lstm_forward_step");
  }
}

// Library route: per step, gates += h @ w_hh^T through cuBLAS (or ATen), then
// the pointwise kernel; with a projection, h = h_raw @ w_hr^T through ATen.
template <typename acc_t>
void forward_steps_library(const CudaForwardSteps<acc_t>& L, bool use_cublas, Tensor& gates,
                           Tensor& h,
                           Tensor& y, const Tensor& w_hh_c, const Tensor& w_hr_c,
                           const Tensor& h_raw) {
  const LayerArgs& a = L.a;
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;
  const cublasHandle_t blas = use_cublas ? at::cuda::getCurrentCUDABlasHandle() : nullptr;
  acc_t* h_raw_p = ptr_or_null<acc_t>(h_raw);
  for (int64_t k = 0; k < a.T; ++k) {
    const int64_t t = L.time(k), off = a.offset[t], rows = a.rows[t];
    // gates[off : off + rows] += h[0:rows] @ w_hh^T
    if (use_cublas) {
      gemm_rows<acc_t>(blas, rows, G, Hout, L.h, Hout, L.w_hh, Hout, true, acc_t(1),
                       L.gates + off * G, G);
    } else {
      gates.narrow(0, off, rows).addmm_(h.narrow(0, 0, rows), w_hh_c.t());
    }
    // Projection: the kernel writes h_raw, the GEMM below the state and y.
    check_launch(forward_step<acc_t>(L.dt, rows, H, L.gates + off * G, G, L.c,
                                     L.cells ? L.cells + off * H : nullptr,
                                     a.has_proj ? h_raw_p : L.h, a.has_proj ? H : Hout,
                                     a.has_proj ? nullptr : L.y, off * Hout, Hout,
                                     L.need_backward, L.stream),
                 "lstm_forward_pointwise");
    if (a.has_proj) {
      // h[0:rows] = h_raw[0:rows] @ w_hr^T, the state carried to the next step.
      Tensor h_t = h.narrow(0, 0, rows);
      at::mm_out(h_t, h_raw.narrow(0, 0, rows), w_hr_c.t());
      y.narrow(0, off, rows).copy_(h_t);
    }
  }
}

// Persistent route: the whole recurrence in one launch (lstm_cuda_persistent.h), where
// persistent_forward_plan takes the layer direction (float32 only). Returns whether it
// ran. Reads L.gates ([T, B, 4H] pre-activations; activated gates out if need_backward),
// h0 and L.c (c0); writes y [T, B, H], L.cells, and h_n, c_n into L.h, L.c.
template <typename acc_t>
bool forward_persistent(const CudaForwardSteps<acc_t>& L, const Tensor& h0) {
  if constexpr (std::is_same_v<acc_t, float>) {
    const std::optional<PersistentForwardShape> shape = persistent_forward_plan(L.a, L.dt);
    if (!shape) return false;
    const Tensor h0_c = as_compute(h0, at::kFloat);  // read while L.h is written
    check_launch(lstm_persistent_forward(*shape, L.a.T, L.a.B, L.a.H, L.reverse, L.gates,
                                         L.w_hh, h0_c.data_ptr<float>(), L.c,
                                         static_cast<float*>(L.y), L.cells, L.h, L.c,
                                         L.need_backward, L.stream),
                 "lstm_persistent_forward");
    return true;
  } else {
    return false;
  }
}

}  // namespace

template <typename acc_t>
DirectionForward forward_impl(
    const LayerArgs& a, const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    bool reverse, bool need_backward, cudaStream_t stream) {
  const auto dt = x.scalar_type();
  const auto ct = compute_dtype(dt);
  const auto opts = x.options().dtype(ct);
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;

  // gates: [N, 4H] = x @ w_ih^T + b_ih + b_hh, for all steps in one GEMM.
  const Tensor x2 = as_compute(x, ct).view({a.N, a.I});
  Tensor gates = at::empty({a.N, G}, opts);
  if (a.has_bias) {
    at::addmm_out(gates, as_compute(*b_ih, ct) + as_compute(*b_hh, ct), x2,
                  as_compute(w_ih, ct).t());
  } else {
    at::mm_out(gates, x2, as_compute(w_ih, ct).t());
  }
  Tensor h = fresh(h0, ct);                      // h: [B, Hout], becomes h_n
  Tensor c = fresh(c0, ct);                      // c: [B, H], becomes c_n
  Tensor y = at::empty({a.N, Hout}, x.options());  // y: [N, Hout] in the input dtype
  Tensor cells = at::empty({need_backward ? a.N : 0, H}, opts);  // cells: [N, H]
  const Tensor w_hh_c = as_compute(w_hh, ct);                    // [4H, Hout]

  const CudaForwardSteps<acc_t> loop{a,
                                reverse,
                                need_backward,
                                dt,
                                stream,
                                gates.data_ptr<acc_t>(),
                                h.data_ptr<acc_t>(),
                                c.data_ptr<acc_t>(),
                                need_backward ? cells.data_ptr<acc_t>() : nullptr,
                                y.data_ptr(),
                                w_hh_c.data_ptr<acc_t>()};
  if (!forward_persistent(loop, h0)) {
    const StepRoute route = step_route(a, /*backward=*/false);
    if (route == StepRoute::fused) {
      // hist is y itself when y is acc_t.
      const bool y_is_hist = dt == ct;
      const Tensor hist = y_is_hist ? y : at::empty({a.N, Hout}, opts);
      const Tensor h0_c = as_compute(h0, ct);  // read while h is written
      forward_steps_fused(loop, hist.data_ptr<acc_t>(), y_is_hist, h0_c.data_ptr<acc_t>());
    } else {
      const Tensor w_hr_c = a.has_proj ? as_compute(*w_hr, ct) : Tensor();     // [Hout, H]
      const Tensor h_raw = a.has_proj ? at::empty({a.B, H}, opts) : Tensor();  // [B, H]
      forward_steps_library(loop, route == StepRoute::gemm, gates, h, y, w_hh_c, w_hr_c,
                            h_raw);
    }
  }

  if (!need_backward) gates = at::empty({0, G}, opts);
  if (!a.packed) y = y.view({a.T, a.B, Hout});
  return {y, h.to(dt), c.to(dt), gates, cells};
}

template DirectionForward forward_impl<float>(const LayerArgs&, const Tensor&, const Tensor&,
                                              const Tensor&, const Tensor&, const Tensor&,
                                              const OptTensor&, const OptTensor&,
                                              const OptTensor&, bool, bool, cudaStream_t);
template DirectionForward forward_impl<double>(const LayerArgs&, const Tensor&, const Tensor&,
                                               const Tensor&, const Tensor&, const Tensor&,
                                               const OptTensor&, const OptTensor&,
                                               const OptTensor&, bool, bool, cudaStream_t);

}  // namespace fused_lstm::cuda
