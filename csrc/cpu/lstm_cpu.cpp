// CPU binding of the fused_lstm ops: turns tensors into the time loops of
// lstm_time_loop.cpp and does the whole-sequence GEMMs around them through ATen.
//
// float16/bfloat16 inputs run in float32 (gates, cells and accumulation) and
// are rounded back to the input dtype on the way out.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cstring>
#include <tuple>

#include "../lstm_layer_args.h"
#include "lstm_time_loop.h"

namespace fused_lstm::cpu {

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// A contiguous copy in the compute dtype that the caller may overwrite.
Tensor fresh(const Tensor& t, at::ScalarType dtype) {
  return at::empty(t.sizes(), t.options().dtype(dtype)).copy_(t);
}

// A contiguous view or copy in the compute dtype, read-only.
Tensor as_compute(const Tensor& t, at::ScalarType dtype) { return t.to(dtype).contiguous(); }

template <typename T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

void check_cpu(const Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), "fused_lstm CPU kernel: expected tensors on the CPU, got ",
              x.device());
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_forward_cpu(
    const Tensor& x, const OptTensor& batch_sizes, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, bool reverse, bool need_backward) {
  check_cpu(x);
  const LayerArgs a = check_layer_args(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr);
  const auto dt = x.scalar_type();
  const auto ct = compute_dtype(dt);
  const auto opts = x.options().dtype(ct);

  // gates: [N, 4H] = x @ w_ih^T + b_ih + b_hh, for all steps in one GEMM.
  const Tensor x2 = as_compute(x, ct).view({a.N, a.I});
  Tensor gates = at::empty({a.N, 4 * a.H}, opts);
  if (a.has_bias) {
    at::addmm_out(gates, as_compute(*b_ih, ct) + as_compute(*b_hh, ct), x2,
                  as_compute(w_ih, ct).t());
  } else {
    at::mm_out(gates, x2, as_compute(w_ih, ct).t());
  }
  Tensor h = fresh(h0, ct);                     // h: [B, Hout], becomes h_n
  Tensor c = fresh(c0, ct);                     // c: [B, H], becomes c_n
  Tensor y = at::empty({a.N, a.Hout}, opts);    // y: [N, Hout]
  Tensor cells = at::empty({need_backward ? a.N : 0, a.H}, opts);  // cells: [N, H]
  const Tensor w_hh_c = as_compute(w_hh, ct);
  const Tensor w_hr_c = a.has_proj ? as_compute(*w_hr, ct) : Tensor();
  const Tensor h_raw = a.has_proj ? at::empty({a.B, a.H}, opts) : Tensor();  // [B, H]

  AT_DISPATCH_FLOATING_TYPES(ct, "lstm_layer_forward_cpu", [&] {
    ForwardLoop<scalar_t> f{w_hh_c.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(w_hr_c),
                            gates.data_ptr<scalar_t>(),  h.data_ptr<scalar_t>(),
                            c.data_ptr<scalar_t>(),      y.data_ptr<scalar_t>(),
                            need_backward ? cells.data_ptr<scalar_t>() : nullptr,
                            ptr_or_null<scalar_t>(h_raw)};
    lstm_forward_loop<scalar_t>(a, reverse, f);
  });

  if (!need_backward) gates = at::empty({0, 4 * a.H}, opts);
  if (!a.packed) y = y.view({a.T, a.B, a.Hout});
  return {y.to(dt), h.to(dt), c.to(dt), gates, cells};
}

// h_prev: [N, Hout], the state each row of each step started from: y of the
// previous step in this direction's order, or h0 where the row starts fresh.
template <typename T>
void gather_h_prev(const LayerArgs& a, bool reverse, const T* y, const T* h0, T* h_prev) {
  const int64_t Hout = a.Hout;
  for (int64_t k = 0; k < a.T; ++k) {
    const int64_t t = step_time(a, reverse, k);
    const int64_t rows = a.rows[t];
    int64_t from_prev = 0;
    T* dst = h_prev + a.offset[t] * Hout;
    if (k > 0) {
      const int64_t tp = step_time(a, reverse, k - 1);
      from_prev = std::min(rows, a.rows[tp]);
      std::memcpy(dst, y + a.offset[tp] * Hout, sizeof(T) * from_prev * Hout);
    }
    std::memcpy(dst + from_prev * Hout, h0 + from_prev * Hout,
                sizeof(T) * (rows - from_prev) * Hout);
  }
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward_cpu(
    const Tensor& grad_y, const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& x,
    const OptTensor& batch_sizes, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    const Tensor& y, const Tensor& gates, const Tensor& cells, bool reverse) {
  check_cpu(x);
  const LayerArgs a = check_layer_args(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr);
  const auto dt = x.scalar_type();
  const auto ct = compute_dtype(dt);
  const auto opts = x.options().dtype(ct);
  const int64_t G = 4 * a.H;
  TORCH_CHECK(gates.numel() == a.N * G && cells.numel() == a.N * a.H,
              "lstm_layer_backward: expected saved gates [", a.N, ", ", G, "] and cells [", a.N,
              ", ", a.H, "] (run lstm_layer_forward with need_backward=True), got ", gates.sizes(),
              " and ", cells.sizes());
  TORCH_CHECK(grad_y.numel() == a.N * a.Hout && y.numel() == a.N * a.Hout,
              "lstm_layer_backward: expected grad_y and y with ", a.N * a.Hout,
              " elements, got ", grad_y.sizes(), " and ", y.sizes());

  const Tensor x2 = as_compute(x, ct).view({a.N, a.I});
  const Tensor y2 = as_compute(y, ct).view({a.N, a.Hout});
  const Tensor gy = as_compute(grad_y, ct).view({a.N, a.Hout});
  const Tensor gates_c = as_compute(gates, ct).view({a.N, G});
  const Tensor cells_c = as_compute(cells, ct).view({a.N, a.H});
  const Tensor h0_c = as_compute(h0, ct), c0_c = as_compute(c0, ct);
  const Tensor w_ih_c = as_compute(w_ih, ct), w_hh_c = as_compute(w_hh, ct);
  const Tensor w_hr_c = a.has_proj ? as_compute(*w_hr, ct) : Tensor();
  Tensor dh = fresh(grad_h_n, ct);  // dh: [B, Hout], becomes grad_h0
  Tensor dc = fresh(grad_c_n, ct);  // dc: [B, H], becomes grad_c0
  Tensor dgates = at::empty({a.N, G}, opts);  // dgates: [N, 4H]
  const Tensor dh_total = a.has_proj ? at::empty({a.N, a.Hout}, opts) : Tensor();
  const Tensor dh_raw = a.has_proj ? at::empty({a.B, a.H}, opts) : Tensor();

  AT_DISPATCH_FLOATING_TYPES(ct, "lstm_layer_backward_cpu", [&] {
    BackwardLoop<scalar_t> b{w_hh_c.data_ptr<scalar_t>(),   ptr_or_null<scalar_t>(w_hr_c),
                             gy.data_ptr<scalar_t>(),       gates_c.data_ptr<scalar_t>(),
                             cells_c.data_ptr<scalar_t>(),  c0_c.data_ptr<scalar_t>(),
                             dh.data_ptr<scalar_t>(),       dc.data_ptr<scalar_t>(),
                             dgates.data_ptr<scalar_t>(),   ptr_or_null<scalar_t>(dh_total),
                             ptr_or_null<scalar_t>(dh_raw)};
    lstm_backward_loop<scalar_t>(a, reverse, b);
  });

  // Whole-sequence gradients, each one GEMM or reduction over all N rows.
  Tensor grad_x = at::mm(dgates, w_ih_c);            // [N, I]
  Tensor grad_w_ih = at::mm(dgates.t(), x2);         // [4H, I]
  Tensor grad_w_hh;                                  // [4H, Hout] = sum_t dgates_t^T h_prev_t
  if (a.packed) {
    Tensor h_prev = at::empty({a.N, a.Hout}, opts);
    AT_DISPATCH_FLOATING_TYPES(ct, "gather_h_prev", [&] {
      gather_h_prev<scalar_t>(a, reverse, y2.data_ptr<scalar_t>(), h0_c.data_ptr<scalar_t>(),
                              h_prev.data_ptr<scalar_t>());
    });
    grad_w_hh = at::mm(dgates.t(), h_prev);
  } else {
    // Dense: step t starts from y of its neighbour step, except the first one from h0.
    const int64_t rest = a.N - a.B;
    const int64_t first = reverse ? rest : 0;  // rows of the step that starts from h0
    grad_w_hh = at::mm(dgates.narrow(0, first, a.B).t(), h0_c);
    grad_w_hh.addmm_(dgates.narrow(0, reverse ? 0 : a.B, rest).t(),
                     y2.narrow(0, reverse ? a.B : 0, rest));
  }
  Tensor grad_b_ih = a.has_bias ? dgates.sum(0) : at::empty({0}, opts);
  Tensor grad_b_hh = a.has_bias ? grad_b_ih.clone() : at::empty({0}, opts);
  Tensor grad_w_hr = at::empty({0}, opts);
  if (a.has_proj) {
    // h_raw = o * tanh(c) of every step, recomputed from what forward saved.
    const Tensor h_raw = gates_c.narrow(1, 3 * a.H, a.H) * cells_c.tanh();
    grad_w_hr = at::mm(dh_total.t(), h_raw);  // [Hout, H]
  }
  const auto wdt = w_ih.scalar_type();
  return {grad_x.view(x.sizes()).to(dt), dh.to(dt),           dc.to(dt),
          grad_w_ih.to(wdt),             grad_w_hh.to(wdt),   grad_b_ih.to(wdt),
          grad_b_hh.to(wdt),             grad_w_hr.to(wdt)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_cpu);
  m.impl("lstm_layer_backward", &lstm_layer_backward_cpu);
}

}  // namespace fused_lstm::cpu
