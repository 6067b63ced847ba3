// CUDA binding of the fused_lstm ops: the whole-sequence and per-step GEMMs run
// through ATen (cuBLAS) on the current stream, the per-step pointwise work in
// the kernels of lstm_cuda_kernels.cu. Mirrors the CPU binding (lstm_cpu.cpp)
// step for step, so both produce the same buffers with the same meaning.
//
// float16/bfloat16 inputs run in float32 (gates, cells, the recurrent state and
// all accumulation) and are rounded to the input dtype on the way out.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <initializer_list>
#include <tuple>
#include <type_traits>

#include "../lstm_layer_args.h"
#include "lstm_cuda_kernels.h"

namespace fused_lstm::cuda {

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

const Tensor* opt(const OptTensor& t) { return t.has_value() ? &*t : nullptr; }

void check_launch(cudaError_t err, const char* kernel) {
  TORCH_CHECK(err == cudaSuccess, "fused_lstm: launching ", kernel, " failed: ",
              cudaGetErrorString(err));
}

struct Named {
  const char* name;
  const Tensor* t;  // null: an absent optional argument
};

// All tensor arguments must sit on one CUDA device. The dispatcher routes a call
// here as soon as any argument is on CUDA, so a CPU tensor in the mix lands
// here too and is reported by name.
void check_same_cuda_device(const char* op, std::initializer_list<Named> tensors) {
  const Named* first = nullptr;
  for (const Named& n : tensors) {
    if (n.t != nullptr && n.t->defined() && n.t->is_cuda()) {
      first = &n;
      break;
    }
  }
  TORCH_CHECK(first != nullptr, op, ": the CUDA kernel was called without a CUDA tensor");
  const c10::Device device = first->t->device();
  for (const Named& n : tensors) {
    if (n.t == nullptr || !n.t->defined()) continue;
    TORCH_CHECK(n.t->device() == device, op,
                ": expected all tensors on the same CUDA device, but ", first->name, " is on ",
                device, " and ", n.name, " is on ", n.t->device());
  }
}

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

template <typename acc_t>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> forward_impl(
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
  const Tensor w_hh_t = as_compute(w_hh, ct).t();                // [Hout, 4H]
  const Tensor w_hr_t = a.has_proj ? as_compute(*w_hr, ct).t() : Tensor();  // [H, Hout]
  const Tensor h_raw = a.has_proj ? at::empty({a.B, H}, opts) : Tensor();   // [B, H]

  acc_t* gates_p = gates.data_ptr<acc_t>();
  acc_t* h_p = h.data_ptr<acc_t>();
  acc_t* c_p = c.data_ptr<acc_t>();
  acc_t* cells_p = need_backward ? cells.data_ptr<acc_t>() : nullptr;
  acc_t* h_raw_p = ptr_or_null<acc_t>(h_raw);
  void* y_p = y.data_ptr();

  for (int64_t k = 0; k < a.T; ++k) {
    const int64_t t = reverse ? a.T - 1 - k : k;
    const int64_t off = a.offset[t], rows = a.rows[t];
    // gates[off : off + rows] += h[0:rows] @ w_hh^T
    Tensor h_t = h.narrow(0, 0, rows);
    gates.narrow(0, off, rows).addmm_(h_t, w_hh_t);
    // Projection: the kernel writes h_raw, the GEMM below the state and y.
    check_launch(forward_step<acc_t>(dt, rows, H, gates_p + off * G, G, c_p,
                                     cells_p ? cells_p + off * H : nullptr,
                                     a.has_proj ? h_raw_p : h_p, a.has_proj ? H : Hout,
                                     a.has_proj ? nullptr : y_p, off * Hout, Hout, need_backward,
                                     stream),
                 "lstm_forward_pointwise");
    if (a.has_proj) {
      // h[0:rows] = h_raw[0:rows] @ w_hr^T, the state carried to the next step.
      at::mm_out(h_t, h_raw.narrow(0, 0, rows), w_hr_t);
      y.narrow(0, off, rows).copy_(h_t);
    }
  }

  if (!need_backward) gates = at::empty({0, G}, opts);
  if (!a.packed) y = y.view({a.T, a.B, Hout});
  return {y, h.to(dt), c.to(dt), gates, cells};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_forward_cuda(
    const Tensor& x, const OptTensor& batch_sizes, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, bool reverse, bool need_backward) {
  check_same_cuda_device("lstm_layer_forward",
                         {{"x", &x}, {"h0", &h0}, {"c0", &c0}, {"w_ih", &w_ih},
                          {"w_hh", &w_hh}, {"b_ih", opt(b_ih)}, {"b_hh", opt(b_hh)},
                          {"w_hr", opt(w_hr)}});
  const LayerArgs a = check_layer_args(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  if (compute_dtype(x.scalar_type()) == at::kDouble) {
    return forward_impl<double>(a, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                                need_backward, stream);
  }
  return forward_impl<float>(a, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, need_backward,
                             stream);
}

template <typename acc_t>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> backward_impl(
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
  const Tensor w_hr_c = a.has_proj ? as_compute(*w_hr, ct) : Tensor();
  Tensor dh = fresh(grad_h_n, ct);            // dh: [B, Hout], becomes grad_h0
  Tensor dc = fresh(grad_c_n, ct);            // dc: [B, H], becomes grad_c0
  Tensor dgates = at::empty({a.N, G}, opts);  // dgates: [N, 4H]
  // dh_total: [N, Hout] dL/dh of every step; dh_raw: [B, H] (projection only).
  const Tensor dh_total = a.has_proj ? at::empty({a.N, Hout}, opts) : Tensor();
  const Tensor dh_raw = a.has_proj ? at::empty({a.B, H}, opts) : Tensor();

  const acc_t* gy_p = gy.data_ptr<acc_t>();
  const acc_t* gates_p = gates_c.data_ptr<acc_t>();
  const acc_t* cells_p = cells_c.data_ptr<acc_t>();
  const acc_t* c0_p = c0_c.data_ptr<acc_t>();
  acc_t* dh_p = dh.data_ptr<acc_t>();
  acc_t* dc_p = dc.data_ptr<acc_t>();
  acc_t* dgates_p = dgates.data_ptr<acc_t>();
  acc_t* dh_raw_p = ptr_or_null<acc_t>(dh_raw);

  for (int64_t k = a.T - 1; k >= 0; --k) {
    const int64_t t = reverse ? a.T - 1 - k : k;
    const int64_t off = a.offset[t], rows = a.rows[t];
    // The previous step (in this direction's order) holds c_prev for its rows;
    // rows it lacked (packed, reverse) started from c0.
    const int64_t t_prev = k > 0 ? (reverse ? a.T - k : k - 1) : -1;
    const int64_t rows_prev = k > 0 ? std::min(rows, a.rows[t_prev]) : 0;
    const acc_t* c_prev = k > 0 ? cells_p + a.offset[t_prev] * H : nullptr;

    Tensor dh_t = dh.narrow(0, 0, rows);
    const acc_t* dh_in = dh_p;
    const acc_t* dh_in2 = gy_p + off * Hout;
    int64_t dh_in_ld = Hout;
    if (a.has_proj) {
      // dh_total = dh + grad_y; dh_raw = dh_total @ w_hr
      Tensor dht = dh_total.narrow(0, off, rows);
      at::add_out(dht, dh_t, gy.narrow(0, off, rows));
      Tensor dh_raw_t = dh_raw.narrow(0, 0, rows);
      at::mm_out(dh_raw_t, dht, w_hr_c);
      dh_in = dh_raw_p;
      dh_in2 = nullptr;
      dh_in_ld = H;
    }
    check_launch(lstm_backward_pointwise<acc_t>(rows, H, gates_p + off * G, G, cells_p + off * H,
                                                H, c_prev, H, rows_prev, c0_p, H, dh_in,
                                                dh_in_ld, dh_in2, Hout, dc_p, H,
                                                dgates_p + off * G, G, stream),
                 "lstm_backward_pointwise");
    // dh[0:rows] = dgates @ w_hh: the gradient reaching h_prev.
    at::mm_out(dh_t, dgates.narrow(0, off, rows), w_hh_c);
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
      const int64_t t = reverse ? a.T - 1 - k : k;
      const int64_t off = a.offset[t], rows = a.rows[t];
      const int64_t t_prev = k > 0 ? (reverse ? a.T - k : k - 1) : -1;
      const int64_t from_prev = k > 0 ? std::min(rows, a.rows[t_prev]) : 0;
      for (int64_t r = 0; r < rows; ++r) {
        idx[off + r] = r < from_prev ? a.offset[t_prev] + r : -(r + 1);
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
    check_launch(lstm_hidden_from_saved<acc_t>(a.N, H, gates_p, G, cells_p, H,
                                               h_raw.data_ptr<acc_t>(), H, stream),
                 "lstm_hidden_from_saved");
    grad_w_hr = at::mm(dh_total.t(), h_raw);  // [Hout, H]
  }
  const auto wdt = w_ih.scalar_type();
  return {grad_x.view(x.sizes()).to(dt), dh.to(dt),         dc.to(dt),
          grad_w_ih.to(wdt),             grad_w_hh.to(wdt), grad_b_ih.to(wdt),
          grad_b_hh.to(wdt),             grad_w_hr.to(wdt)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>
lstm_layer_backward_cuda(const Tensor& grad_y, const Tensor& grad_h_n, const Tensor& grad_c_n,
                         const Tensor& x, const OptTensor& batch_sizes, const Tensor& h0,
                         const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                         const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
                         const Tensor& y, const Tensor& gates, const Tensor& cells,
                         bool reverse) {
  check_same_cuda_device(
      "lstm_layer_backward",
      {{"grad_y", &grad_y}, {"grad_h_n", &grad_h_n}, {"grad_c_n", &grad_c_n}, {"x", &x},
       {"h0", &h0}, {"c0", &c0}, {"w_ih", &w_ih}, {"w_hh", &w_hh}, {"b_ih", opt(b_ih)},
       {"b_hh", opt(b_hh)}, {"w_hr", opt(w_hr)}, {"y", &y}, {"gates", &gates},
       {"cells", &cells}});
  const LayerArgs a = check_layer_args(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr);
  const int64_t G = 4 * a.H;
  check_backward_args(a, grad_y, grad_h_n, grad_c_n, h0, c0, y, gates, cells);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  if (compute_dtype(x.scalar_type()) == at::kDouble) {
    return backward_impl<double>(a, grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, w_hr, y,
                                 gates, cells, reverse, stream);
  }
  return backward_impl<float>(a, grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, w_hr, y,
                              gates, cells, reverse, stream);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CUDA, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_cuda);
  m.impl("lstm_layer_backward", &lstm_layer_backward_cuda);
}

}  // namespace fused_lstm::cuda
