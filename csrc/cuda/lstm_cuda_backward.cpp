// The CUDA backward of one layer direction (lstm_cuda_impl.h).
#include <ATen/ATen.h>

#include <optional>

#include "cuda_impl_common.h"
#include "cuda_plan.h"
#include "lstm_cuda_impl.h"
#include "lstm_cuda_kernels.h"
#include "lstm_cuda_loops.h"

namespace fused_lstm::cuda {

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

template <typename acc_t>
DirectionBackward backward_impl(
    const LayerArgs& a, const Tensor& grad_y, const Tensor& grad_h_n, const Tensor& grad_c_n,
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& w_hr, const Tensor& y, const Tensor& gates, const Tensor& cells,
    bool reverse, cublasHandle_t blas, cudaStream_t stream) {
  const auto dt = x.scalar_type();
  const auto ct = compute_dtype(dt);
  const auto opts = x.options().dtype(ct);
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;

  const Tensor x2 = as_compute(x, ct).view({a.N, a.I});
  const Tensor y2 = as_compute(y, ct).view({a.N, Hout});
  const Tensor gy = as_compute(grad_y, ct).view({a.N, Hout});
  const Tensor gates_c = as_compute(gates, ct).view({a.N, G});
  const Tensor cells_c = as_compute(cells, ct).view({a.N, H});
  const Tensor h0_c = as_compute(h0, ct), c0_c = as_compute(c0, ct);
  const Tensor w_ih_c = as_compute(w_ih, ct), w_hh_c = as_compute(w_hh, ct);
  Tensor dh = fresh(grad_h_n, ct);            // dh: [B, Hout], becomes grad_h0
  Tensor dc = fresh(grad_c_n, ct);            // dc: [B, H], becomes grad_c0
  Tensor dgates = at::empty({a.N, G}, opts);  // dgates: [N, 4H]
  // dh_total: [N, Hout] dL/dh of every step (projection only).
  const Tensor dh_total = a.has_proj ? at::empty({a.N, Hout}, opts) : Tensor();
  const CudaSteps steps = steps_of(a, reverse);

  const StepRoute route = step_route(a, /*backward=*/true);
  const bool fused = route == StepRoute::fused;
  const Tensor w_hh_t = fused ? w_hh_c.t().contiguous() : Tensor();  // [Hout, 4H]
  const Tensor dg_last = fused && a.packed && reverse ? at::empty({a.B, G}, opts) : Tensor();
  const Tensor w_hr_c = a.has_proj ? as_compute(*w_hr, ct) : Tensor();      // [Hout, H]
  const Tensor dh_raw = a.has_proj ? at::empty({a.B, H}, opts) : Tensor();  // [B, H]
  const CudaBackwardLoop<acc_t> loop{route,
                                     gates_c.data_ptr<acc_t>(),
                                     cells_c.data_ptr<acc_t>(),
                                     c0_c.data_ptr<acc_t>(),
                                     gy.data_ptr<acc_t>(),
                                     dh.data_ptr<acc_t>(),
                                     dc.data_ptr<acc_t>(),
                                     dgates.data_ptr<acc_t>(),
                                     w_hh_c.data_ptr<acc_t>(),
                                     ptr_or_null<acc_t>(w_hh_t),
                                     ptr_or_null<acc_t>(dg_last),
                                     ptr_or_null<acc_t>(w_hr_c),
                                     ptr_or_null<acc_t>(dh_total),
                                     ptr_or_null<acc_t>(dh_raw)};
  check_loop_status("lstm_layer_backward",
                    lstm_cuda_backward_loop<acc_t>(steps, loop, blas, stream));

  // Whole-sequence gradients, each one GEMM or reduction over all N rows.
  Tensor grad_x = at::mm(dgates, w_ih_c);     // [N, I]
  Tensor grad_w_ih = at::mm(dgates.t(), x2);  // [4H, I]
  Tensor grad_w_hh;                           // [4H, Hout] = sum_t dgates_t^T h_prev_t
  if (a.T == 0) {
    grad_w_hh = at::zeros({G, Hout}, opts);
  } else if (a.packed) {
    // h_prev: [N, Hout], the state each row of each step started from: y of the
    // previous step in this direction's order, or h0 where the row starts fresh.
    // index[n] >= 0 names a row of y, index[n] = -(b + 1) row b of h0.
    Tensor index_cpu = at::empty({a.N}, at::TensorOptions().dtype(at::kLong));
    int64_t* idx = index_cpu.data_ptr<int64_t>();
    for (int64_t k = 0; k < a.T; ++k) {
      const int64_t t = steps.time(k), off = a.offset[t], rows = a.rows[t];
      const int64_t from_prev = steps.rows_from_prev(k);
      for (int64_t r = 0; r < rows; ++r) {
        idx[off + r] = r < from_prev ? a.offset[steps.time(k - 1)] + r : -(r + 1);
      }
    }
    const Tensor index = index_cpu.to(x.device());
    Tensor h_prev = at::empty({a.N, Hout}, opts);
    check_loop_status("lstm_layer_backward",
                      launch_status(lstm_gather_rows<acc_t>(
                                        a.N, Hout, index.data_ptr<int64_t>(),
                                        y2.data_ptr<acc_t>(), Hout, h0_c.data_ptr<acc_t>(),
                                        Hout, h_prev.data_ptr<acc_t>(), Hout, stream),
                                    "lstm_gather_rows"));
    grad_w_hh = at::mm(dgates.t(), h_prev);
  } else {
    // Dense: step t starts from y of its neighbour step, except the first one from h0.
    const int64_t rest = a.N - a.B;
    const int64_t first = reverse ? rest : 0;  // rows of the step that starts from h0
    grad_w_hh = at::mm(dgates.narrow(0, first, a.B).t(), h0_c);
    if (rest > 0) {
      grad_w_hh.addmm_(dgates.narrow(0, reverse ? 0 : a.B, rest).t(),
                       y2.narrow(0, reverse ? a.B : 0, rest));
    }
  }
  Tensor grad_b_ih = a.has_bias ? dgates.sum(0) : at::empty({0}, opts);
  Tensor grad_b_hh = a.has_bias ? grad_b_ih.clone() : at::empty({0}, opts);
  Tensor grad_w_hr = at::empty({0}, opts);
  if (a.has_proj) {
    // h_raw = o * tanh(c) of every step, recomputed from what forward saved.
    Tensor h_raw = at::empty({a.N, H}, opts);
    check_loop_status("lstm_layer_backward",
                      launch_status(lstm_hidden_from_saved<acc_t>(a.N, H, loop.gates, G,
                                                                  loop.cells, H,
                                                                  h_raw.data_ptr<acc_t>(), H,
                                                                  stream),
                                    "lstm_hidden_from_saved"));
    grad_w_hr = at::mm(dh_total.t(), h_raw);  // [Hout, H]
  }
  const auto wdt = w_ih.scalar_type();
  return {grad_x.view(x.sizes()).to(dt), dh.to(dt),         dc.to(dt),
          grad_w_ih.to(wdt),             grad_w_hh.to(wdt), grad_b_ih.to(wdt),
          grad_b_hh.to(wdt),             grad_w_hr.to(wdt)};
}

}  // namespace

DirectionBackward backward_direction(const Tensor& grad_y, const Tensor& grad_h_n,
                                     const Tensor& grad_c_n, const Tensor& x,
                                     const OptTensor& batch_sizes, const Tensor& h0,
                                     const Tensor& c0, const DirectionWeights& w, const Tensor& y,
                                     const Tensor& gates, const Tensor& cells, bool reverse,
                                     cublasHandle_t blas, cudaStream_t stream) {
  const auto& [w_ih, w_hh, b_ih, b_hh, w_hr] = w;
  const LayerArgs a = check_layer_args(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr);
  check_backward_args(a, grad_y, grad_h_n, grad_c_n, h0, c0, y, gates, cells);
  if (compute_dtype(x.scalar_type()) == at::kDouble) {
    return backward_impl<double>(a, grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, w_hr, y,
                                 gates, cells, reverse, blas, stream);
  }
  return backward_impl<float>(a, grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, w_hr, y,
                              gates, cells, reverse, blas, stream);
}

}  // namespace fused_lstm::cuda
