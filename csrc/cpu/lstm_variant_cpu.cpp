// CPU binding of the variant op (lstm_variant_forward/backward, ops.cpp): checks its
// arguments, lays out the weights and buffers, runs the time loops of variant_loop.h, and
// after the backward loop the whole-sequence GEMMs of the gradients.
// float16 and bfloat16 run in float32 and are rounded back on the way out.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <vector>

#include "../lstm_layer_args.h"
#include "../lstm_variant_args.h"
#include "cpu_gemm.h"
#include "cpu_plan.h"
#include "gate_layout.h"
#include "lstm_time_loop.h"
#include "variant_loop.h"

namespace fused_lstm::cpu {

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// The arguments, checked (lstm_variant_args.h), on the CPU.
VariantArgs variant_args(const char* op, const Tensor& x, const OptTensor& batch_sizes,
                         const Tensor& h0, const Tensor& c0, const std::vector<Tensor>& weights,
                         bool has_bias, bool has_proj, bool reverse,
                         const std::vector<Tensor>& norm, double norm_eps, bool norm_state,
                         const OptTensor& recurrent_mask, const OptTensor& zoneout_h,
                         const OptTensor& zoneout_c) {
  TORCH_CHECK(x.device().is_cpu(), op, ": expected tensors on the CPU, got ", x.device());
  return check_variant_args(op, x, batch_sizes, h0, c0, weights, has_bias, has_proj, reverse,
                            norm, norm_eps, norm_state, recurrent_mask, zoneout_h, zoneout_c);
}

template <typename T>
VariantState<T> state_of(const VariantArgs& v) {
  const bool norm = !v.norm.empty();
  const auto param = [&](int k) { return norm ? v.norm[k].data_ptr<T>() : nullptr; };
  return {v.h0.data_ptr<T>(), v.c0.data_ptr<T>(), ptr_or_null<T>(v.recurrent_mask),
          ptr_or_null<T>(v.zoneout_h), zoneout_row_stride(v.zoneout_h),
          ptr_or_null<T>(v.zoneout_c), zoneout_row_stride(v.zoneout_c),
          param(0), param(1), param(2), param(3), param(4), param(5),
          static_cast<T>(v.eps), v.norm_state};
}

using VariantForwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor, std::vector<Tensor>>;

VariantForwardResult lstm_variant_forward_cpu(
    const Tensor& x, const OptTensor& batch_sizes, const Tensor& h0, const Tensor& c0,
    const std::vector<Tensor>& weights, bool has_bias, bool has_proj, bool reverse,
    const std::vector<Tensor>& norm, double norm_eps, bool norm_state,
    const OptTensor& recurrent_mask, const OptTensor& zoneout_h, const OptTensor& zoneout_c,
    bool need_backward) {
  const VariantArgs v =
      variant_args("lstm_variant_forward", x, batch_sizes, h0, c0, weights, has_bias, has_proj,
                   reverse, norm, norm_eps, norm_state, recurrent_mask, zoneout_h, zoneout_c);
  const LayerArgs& a = v.a;
  const int64_t G = 4 * a.H;
  const auto opts = v.x.options();
  std::array<Tensor, kVariantSavedCount> saved;
  if (need_backward) {
    saved = variant_saved_buffers(v);
  } else {
    for (Tensor& t : saved) t = at::empty({0}, opts);
  }
  Tensor y = at::empty({a.N, a.Hout}, opts), cells = at::empty({a.N, a.H}, opts);
  // h_n, c_n: h0, c0 for rows without a step (T = 0), overwritten for the rest
  Tensor h_n = fresh(v.h0, v.compute), c_n = fresh(v.c0, v.compute);
  const auto panels = [&](int64_t K) {
    return at::empty({(G + kPanelWidth - 1) / kPanelWidth * kPanelWidth * K}, opts);
  };
  Tensor w_ih_t = panels(a.I), w_hh_t = panels(a.Hout);
  const Tensor w_hr_t = has_proj ? v.w_hr.t().contiguous() : Tensor();
  AT_DISPATCH_FLOATING_TYPES(v.compute, "lstm_variant_forward", [&] {
    using T = scalar_t;
    rows_to_panels<T>(v.w_ih.data_ptr<T>(), G, a.I, w_ih_t.data_ptr<T>());
    rows_to_panels<T>(v.w_hh.data_ptr<T>(), G, a.Hout, w_hh_t.data_ptr<T>());
    const auto out = [&](VariantSaved k) {
      return need_backward && saved[k].numel() ? saved[k].data_ptr<T>() : nullptr;
    };
    const VariantForward<T> f{v.x.data_ptr<T>(), w_ih_t.data_ptr<T>(), w_hh_t.data_ptr<T>(),
                              ptr_or_null<T>(w_hr_t), ptr_or_null<T>(v.bias), need_backward,
                              out(kAct), out(kGxHat), out(kGxStats), out(kRHat), out(kRStats),
                              out(kCand), out(kCStats), out(kHRaw), cells.data_ptr<T>(),
                              y.data_ptr<T>()};
    lstm_variant_forward_loop<T>(a, reverse, plan_variant_threads(a), state_of<T>(v), f);
    gather_last_rows<T>(a, reverse, y.data_ptr<T>(), a.Hout, h_n.data_ptr<T>());
    gather_last_rows<T>(a, reverse, cells.data_ptr<T>(), a.H, c_n.data_ptr<T>());
  });
  std::vector<Tensor> saved_list;
  if (need_backward) saved_list.assign(saved.begin(), saved.end());
  return {as_sequence(y, x, v.dtype), h_n.to(v.dtype), c_n.to(v.dtype),
          as_sequence(cells, x, v.dtype), saved_list};
}

using VariantBackwardResult =
    std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>, std::vector<Tensor>>;

VariantBackwardResult lstm_variant_backward_cpu(
    const Tensor& grad_y, const Tensor& grad_h_n, const Tensor& grad_c_n,
    const OptTensor& grad_cells, const Tensor& x, const OptTensor& batch_sizes,
    const Tensor& h0, const Tensor& c0, const std::vector<Tensor>& weights, bool has_bias,
    bool has_proj, bool reverse, const std::vector<Tensor>& norm, double norm_eps,
    bool norm_state, const OptTensor& recurrent_mask, const OptTensor& zoneout_h,
    const OptTensor& zoneout_c, const Tensor& y, const Tensor& cells,
    const std::vector<Tensor>& saved) {
  constexpr const char* op = "lstm_variant_backward";
  const VariantArgs v = variant_args(op, x, batch_sizes, h0, c0, weights, has_bias, has_proj,
                                     reverse, norm, norm_eps, norm_state, recurrent_mask,
                                     zoneout_h, zoneout_c);
  const LayerArgs& a = v.a;
  const int64_t G = 4 * a.H;
  const bool ln = !v.norm.empty();
  auto [gy, gc, yc, cc, s, dh, dc] =
      variant_grad_inputs(op, v, grad_y, grad_h_n, grad_c_n, grad_cells, h0, c0, y, cells, saved);
  const auto opts = v.x.options();
  Tensor dgates = at::empty({a.N, G}, opts);
  Tensor d_gx = ln ? at::empty({a.N, G}, opts) : dgates;
  Tensor dr = ln ? at::empty({a.N, G}, opts) : Tensor();
  Tensor d_proj = has_proj ? at::empty({a.N, a.Hout}, opts) : Tensor();
  Tensor h_in = at::empty({a.N, a.Hout}, opts);
  const int64_t threads = plan_variant_threads(a);
  Tensor d_norm = ln ? at::zeros({threads, variant_norm_grads(a.H)}, opts) : Tensor();
  AT_DISPATCH_FLOATING_TYPES(v.compute, "lstm_variant_backward", [&] {
    using T = scalar_t;
    const VariantBackward<T> b{
        v.w_hh.data_ptr<T>(), ptr_or_null<T>(v.w_hr), s[kAct].data_ptr<T>(),
        ln ? s[kGxHat].data_ptr<T>() : nullptr, ln ? s[kGxStats].data_ptr<T>() : nullptr,
        ln ? s[kRHat].data_ptr<T>() : nullptr, ln ? s[kRStats].data_ptr<T>() : nullptr,
        s[kCand].data_ptr<T>(), ln ? s[kCStats].data_ptr<T>() : nullptr, cc.data_ptr<T>(),
        yc.data_ptr<T>(), gy.data_ptr<T>(), ptr_or_null<T>(gc), dh.data_ptr<T>(),
        dc.data_ptr<T>(), dgates.data_ptr<T>(), ln ? d_gx.data_ptr<T>() : nullptr,
        ptr_or_null<T>(dr), ptr_or_null<T>(d_proj),
        h_in.data_ptr<T>(), ptr_or_null<T>(d_norm)};
    lstm_variant_backward_loop<T>(a, reverse, threads, state_of<T>(v), b);
  });
  // The whole-sequence gradients of x and the weights.
  std::vector<Tensor> grad_norm;
  if (ln) {
    const Tensor per = d_norm.sum(0);
    for (int k = 0; k < 6; ++k) {
      const int64_t width = k < 4 ? G : a.H, from = k < 4 ? k * G : 4 * G + (k - 4) * a.H;
      grad_norm.push_back(per.narrow(0, from, width).to(norm[k].scalar_type()));
    }
  }
  // (Our GEMMs rather than at::mm: the BLAS libtorch links is several times slower on
  // some CPUs, cpu_gemm.h.)
  const Tensor d_rec = ln ? dr : dgates;
  Tensor grad_x = at::empty({a.N, a.I}, opts), grad_w_ih = at::empty({G, a.I}, opts);
  Tensor grad_w_hh = at::empty({G, a.Hout}, opts);
  Tensor grad_w_hr = has_proj ? at::empty({a.Hout, a.H}, opts) : Tensor();
  AT_DISPATCH_FLOATING_TYPES(v.compute, "lstm_variant_backward", [&] {
    using T = scalar_t;
    // grad_x [N, I] = d_gx @ w_ih; grad_w_ih [4H, I] = d_gx^T @ x; grad_w_hh [4H, Hout] =
    // d_rec^T @ h_in; grad_w_hr [Hout, H] = d_proj^T @ h_raw.
    parallel_gemm_nn<T>(a.N, a.I, G, d_gx.data_ptr<T>(), G, v.w_ih.data_ptr<T>(), a.I,
                        grad_x.data_ptr<T>(), a.I, false);
    parallel_gemm_tn<T>(a.N, G, a.I, d_gx.data_ptr<T>(), G, v.x.data_ptr<T>(), a.I,
                        grad_w_ih.data_ptr<T>(), a.I, false);
    parallel_gemm_tn<T>(a.N, G, a.Hout, d_rec.data_ptr<T>(), G, h_in.data_ptr<T>(), a.Hout,
                        grad_w_hh.data_ptr<T>(), a.Hout, false);
    if (has_proj) {
      parallel_gemm_tn<T>(a.N, a.Hout, a.H, d_proj.data_ptr<T>(), a.Hout,
                          s[kHRaw].data_ptr<T>(), a.H, grad_w_hr.data_ptr<T>(), a.H, false);
    }
  });
  std::vector<Tensor> grad_weights{grad_w_ih.to(v.dtype), grad_w_hh.to(v.dtype)};
  if (has_bias) {
    const Tensor db = dgates.sum(0).to(v.dtype);
    grad_weights.push_back(db);
    grad_weights.push_back(db.clone());
  }
  if (has_proj) grad_weights.push_back(grad_w_hr.to(v.dtype));
  grad_x = grad_x.view(x.sizes()).to(v.dtype);
  return {grad_x, dh.to(v.dtype), dc.to(v.dtype), grad_weights, grad_norm};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) {
  m.impl("lstm_variant_forward", &lstm_variant_forward_cpu);
  m.impl("lstm_variant_backward", &lstm_variant_backward_cpu);
}

}  // namespace fused_lstm::cpu
