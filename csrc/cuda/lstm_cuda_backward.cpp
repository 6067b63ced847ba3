// The CUDA backward of one layer direction (lstm_cuda_loops.h).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <type_traits>

#include "cuda_blas.h"
#include "cuda_plan.h"
#include "lstm_cuda_kernels.h"
#include "lstm_cuda_loops.h"

namespace fused_lstm::cuda {

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// What the backward time loops read and write (pointers into backward_impl's
// tensors, all in acc_t).
template <typename acc_t>
struct CudaBackwardSteps {
  const LayerArgs& a;
  bool reverse;
  cudaStream_t stream;
  const acc_t* gates;  // [N, 4H] activated gates saved by forward
  const acc_t* cells;  // [N, H] cell states saved by forward
  const acc_t* c0;     // [B, H]
  const acc_t* gy;     // [N, Hout] grad_y
  acc_t* dh;           // [B, Hout]: grad_h_n in, grad_h0 out (library route)
  acc_t* dc;           // [B, H]: grad_c_n in, grad_c0 out
  acc_t* dgates;       // [N, 4H] out
  const acc_t* w_hh;   // [4H, Hout]

  // The time index of step k in this direction's order (the loops walk k down).
  int64_t time(int64_t k) const { return reverse ? a.T - 1 - k : k; }
  // The step before step k in this direction's order holds c_prev for its
  // rows; rows it lacked (packed, reverse) started from c0.
  int64_t prev_rows(int64_t k) const {
    return k > 0 ? std::min(a.rows[time(k)], a.rows[time(k - 1)]) : 0;
  }
  const acc_t* c_prev(int64_t k) const {
    return k > 0 ? cells + a.offset[time(k - 1)] * a.H : nullptr;
  }
};

// Fused route: each step's kernel turns the d(gates) of the step processed
// before it (the next one in time) into its dh. The loop so leaves one product
// for after it, grad_h0, from each row's last d(gates): all in one step except
// for packed reverse layers, whose rows leave the loop at different steps, so
// dg_last keeps them. w_hh_t: [Hout, 4H].
template <typename acc_t>
Tensor backward_steps_fused(const CudaBackwardSteps<acc_t>& L, const Tensor& dgates,
                            const Tensor& w_hh_c, const Tensor& w_hh_t, const Tensor& grad_h_n) {
  const LayerArgs& a = L.a;
  const int64_t H = a.H, G = 4 * a.H;
  const Tensor dg_last =
      a.packed && L.reverse ? at::empty({a.B, G}, dgates.options()) : Tensor();
  for (int64_t k = a.T - 1; k >= 0; --k) {
    const int64_t t = L.time(k), off = a.offset[t], rows = a.rows[t];
    const int64_t t_next = k < a.T - 1 ? L.time(k + 1) : -1;
    check_launch(lstm_backward_step<acc_t>(
                     rows, H, t_next >= 0 ? L.dgates + a.offset[t_next] * G : nullptr, G,
                     t_next >= 0 ? a.rows[t_next] : 0, L.dh, H, w_hh_t.data_ptr<acc_t>(),
                     L.gates + off * G, G, L.cells + off * H, H, L.c_prev(k), H, L.prev_rows(k),
                     L.c0, H, L.gy + off * H, H, L.dc, H, L.dgates + off * G, G,
                     ptr_or_null<acc_t>(dg_last), G, L.stream),
                 "lstm_backward_step");
  }
  if (a.T == 0) return grad_h_n;
  const int64_t t_last = L.time(0);  // every one of the B rows is in this step
  return at::mm(dg_last.defined() ? dg_last : dgates.narrow(0, a.offset[t_last], a.B), w_hh_c);
}

// Library route: per step the pointwise kernel, then dh = dgates @ w_hh
// through cuBLAS (or ATen); with a projection dh_raw = (dh + grad_y) @ w_hr
// first, through ATen.
template <typename acc_t>
void backward_steps_library(const CudaBackwardSteps<acc_t>& L, bool use_cublas, Tensor& dh,
                            const Tensor& dgates, const Tensor& gy, const Tensor& w_hh_c,
                            const Tensor& w_hr_c, const Tensor& dh_total, const Tensor& dh_raw) {
  const LayerArgs& a = L.a;
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;
  const cublasHandle_t blas = use_cublas ? at::cuda::getCurrentCUDABlasHandle() : nullptr;
  const acc_t* dh_raw_p = ptr_or_null<acc_t>(dh_raw);
  for (int64_t k = a.T - 1; k >= 0; --k) {
    const int64_t t = L.time(k), off = a.offset[t], rows = a.rows[t];
    const acc_t* dh_in = L.dh;
    const acc_t* dh_in2 = L.gy + off * Hout;
    int64_t dh_in_ld = Hout;
    if (a.has_proj) {
      // dh_total = dh + grad_y; dh_raw = dh_total @ w_hr
      Tensor dht = dh_total.narrow(0, off, rows);
      at::add_out(dht, dh.narrow(0, 0, rows), gy.narrow(0, off, rows));
      Tensor dh_raw_t = dh_raw.narrow(0, 0, rows);
      at::mm_out(dh_raw_t, dht, w_hr_c);
      dh_in = dh_raw_p;
      dh_in2 = nullptr;
      dh_in_ld = H;
    }
    check_launch(lstm_backward_pointwise<acc_t>(rows, H, L.gates + off * G, G, L.cells + off * H,
                                                H, L.c_prev(k), H, L.prev_rows(k), L.c0, H, dh_in,
                                                dh_in_ld, dh_in2, Hout, L.dc, H,
                                                L.dgates + off * G, G, L.stream),
                 "lstm_backward_pointwise");
    // dh[0:rows] = dgates @ w_hh: the gradient reaching h_prev.
    if (use_cublas) {
      gemm_rows<acc_t>(blas, rows, Hout, G, L.dgates + off * G, G, L.w_hh, Hout, false, acc_t(0),
                       L.dh, Hout);
    } else {
      Tensor dh_t = dh.narrow(0, 0, rows);
      at::mm_out(dh_t, dgates.narrow(0, off, rows), w_hh_c);
    }
  }
}

}  // namespace

template <typename acc_t>
DirectionBackward backward_impl(
    const LayerArgs& a, const Tensor& grad_y, const Tensor& grad_h_n, const Tensor& grad_c_n,
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& w_hr, const Tensor& y, const Tensor& gates, const Tensor& cells,
    bool reverse, cudaStream_t stream) {
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

  const CudaBackwardSteps<acc_t> loop{a,
                                 reverse,
                                 stream,
                                 gates_c.data_ptr<acc_t>(),
                                 cells_c.data_ptr<acc_t>(),
                                 c0_c.data_ptr<acc_t>(),
                                 gy.data_ptr<acc_t>(),
                                 dh.data_ptr<acc_t>(),
                                 dc.data_ptr<acc_t>(),
                                 dgates.data_ptr<acc_t>(),
                                 w_hh_c.data_ptr<acc_t>()};
  const StepRoute route = step_route(a, /*backward=*/true);
  if (route == StepRoute::fused) {
    dh = backward_steps_fused(loop, dgates, w_hh_c, w_hh_c.t().contiguous(), dh);
  } else {
    const Tensor w_hr_c = a.has_proj ? as_compute(*w_hr, ct) : Tensor();      // [Hout, H]
    const Tensor dh_raw = a.has_proj ? at::empty({a.B, H}, opts) : Tensor();  // [B, H]
    backward_steps_library(loop, route == StepRoute::gemm, dh, dgates, gy, w_hh_c, w_hr_c,
                           dh_total, dh_raw);
  }

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
      const int64_t t = loop.time(k), off = a.offset[t], rows = a.rows[t];
      const int64_t from_prev = loop.prev_rows(k);
      for (int64_t r = 0; r < rows; ++r) {
        idx[off + r] = r < from_prev ? a.offset[loop.time(k - 1)] + r : -(r + 1);
      }
    }
    const Tensor index = index_cpu.to(x.device());
    Tensor h_prev = at::empty({a.N, Hout}, opts);
    check_launch(lstm_gather_rows<acc_t>(a.N, Hout, index.data_ptr<int64_t>(),
                                         y2.data_ptr<acc_t>(), Hout, h0_c.data_ptr<acc_t>(),
                                         Hout, h_prev.data_ptr<acc_t>(), Hout, stream),
                 "lstm_gather_rows");
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
    check_launch(lstm_hidden_from_saved<acc_t>(a.N, H, loop.gates, G, loop.cells, H,
                                               h_raw.data_ptr<acc_t>(), H, stream),
                 "lstm_hidden_from_saved");
    grad_w_hr = at::mm(dh_total.t(), h_raw);  // [Hout, H]
  }
  const auto wdt = w_ih.scalar_type();
  return {grad_x.view(x.sizes()).to(dt), dh.to(dt),         dc.to(dt),
          grad_w_ih.to(wdt),             grad_w_hh.to(wdt), grad_b_ih.to(wdt),
          grad_b_hh.to(wdt),             grad_w_hr.to(wdt)};
}

template DirectionBackward backward_impl<float>(const LayerArgs&, const Tensor&, const Tensor&,
                                                const Tensor&, const Tensor&, const Tensor&,
                                                const Tensor&, const Tensor&, const Tensor&,
                                                const OptTensor&, const Tensor&, const Tensor&,
                                                const Tensor&, bool, cudaStream_t);
template DirectionBackward backward_impl<double>(const LayerArgs&, const Tensor&, const Tensor&,
                                                 const Tensor&, const Tensor&, const Tensor&,
                                                 const Tensor&, const Tensor&, const Tensor&,
                                                 const OptTensor&, const Tensor&, const Tensor&,
                                                 const Tensor&, bool, cudaStream_t);

}  // namespace fused_lstm::cuda
