#include "variant_cuda_impl.h"

#include <array>

#include "cuda_impl_common.h"

namespace fused_lstm::cuda {

namespace {

using at::Tensor;

template <typename T>
VariantCudaState<T> state_of(const VariantArgs& v) {
  const bool norm = !v.norm.empty();
  const auto param = [&](int k) { return norm ? v.norm[k].data_ptr<T>() : nullptr; };
  VariantCudaState<T> s;
  s.h0 = v.h0.data_ptr<T>();
  s.c0 = v.c0.data_ptr<T>();
  s.w_hh = v.w_hh.data_ptr<T>();
  s.w_hr = ptr_or_null<T>(v.w_hr);
  s.bias = ptr_or_null<T>(v.bias);
  s.recurrent_mask = ptr_or_null<T>(v.recurrent_mask);
  s.zh = ptr_or_null<T>(v.zoneout_h);
  s.zh_ld = zoneout_row_stride(v.zoneout_h);
  s.zc = ptr_or_null<T>(v.zoneout_c);
  s.zc_ld = zoneout_row_stride(v.zoneout_c);
  s.ln_ih_w = param(0);
  s.ln_ih_b = param(1);
  s.ln_hh_w = param(2);
  s.ln_hh_b = param(3);
  s.ln_c_w = param(4);
  s.ln_c_b = param(5);
  s.eps = static_cast<T>(v.eps);
  s.norm_state = v.norm_state;
  return s;
}

// An empty tensor where the options need no buffer.
Tensor maybe_empty(bool needed, at::IntArrayRef size, const at::TensorOptions& opts) {
  return needed ? at::empty(size, opts) : Tensor();
}

}  // namespace


template <typename T>
VariantForwardResult variant_forward_impl(const VariantArgs& v, const Tensor& x, bool reverse,
                                          bool need_backward, const RowGemm<T>& gemm,
                                          cudaStream_t stream) {
  const LayerArgs& a = v.a;
  const int64_t G = 4 * a.H;
  const bool ln = !v.norm.empty();
  const auto opts = v.x.options();
  std::array<Tensor, kVariantSavedCount> saved;
  if (need_backward) {
    saved = variant_saved_buffers(v);
  } else {
    for (Tensor& t : saved) t = at::empty({0}, opts);
  }
  // gates [N, 4H] = x @ w_ih^T for every step at once (LN_ih and the rest in the loop)
  Tensor gates = need_backward ? saved[kAct] : at::empty({a.N, G}, opts);
  at::mm_out(gates, v.x, v.w_ih.t());
  Tensor y = at::empty({a.N, a.Hout}, opts), cells = at::empty({a.N, a.H}, opts);
  // h_n, c_n: h0, c0 for rows without a step (T = 0), overwritten for the rest
  Tensor h_n = fresh(v.h0, v.compute), c_n = fresh(v.c0, v.compute);
  const Tensor h_in = maybe_empty(v.recurrent_mask.defined() || a.packed, {a.B, a.Hout}, opts);
  const Tensor r_raw = maybe_empty(ln, {a.B, G}, opts);
  const Tensor h_raw_step = maybe_empty(a.has_proj && !need_backward, {a.B, a.H}, opts);
  const Tensor h_new = maybe_empty(a.has_proj && v.zoneout_h.defined(), {a.B, a.Hout}, opts);
  const auto out = [&](VariantSaved k) {
    return need_backward && saved[k].numel() ? saved[k].data_ptr<T>() : nullptr;
  };
  VariantCudaForward<T> f;
  f.gates = gates.data_ptr<T>();
  f.gx_hat = out(kGxHat);
  f.gx_stats = out(kGxStats);
  f.r_hat = out(kRHat);
  f.r_stats = out(kRStats);
  f.cand = out(kCand);
  f.c_stats = out(kCStats);
  f.h_raw = out(kHRaw);
  f.cells = cells.data_ptr<T>();
  f.y = y.data_ptr<T>();
  f.h_n = h_n.data_ptr<T>();
  f.c_n = c_n.data_ptr<T>();
  f.h_in = ptr_or_null<T>(h_in);
  f.r_raw = ptr_or_null<T>(r_raw);
  f.h_raw_step = ptr_or_null<T>(h_raw_step);
  f.h_new = ptr_or_null<T>(h_new);
  check_loop_status("lstm_variant_forward",
               variant_forward_loop<T>(steps_of(a, reverse), state_of<T>(v), f, gemm, stream));
  std::vector<Tensor> saved_list;
  if (need_backward) saved_list.assign(saved.begin(), saved.end());
  return {as_sequence(y, x, v.dtype), h_n.to(v.dtype), c_n.to(v.dtype),
          as_sequence(cells, x, v.dtype), saved_list};
}

template <typename T>
VariantBackwardResult variant_backward_impl(
    const VariantArgs& v, const Tensor& x, bool reverse, const Tensor& grad_y,
    const Tensor& grad_h_n, const Tensor& grad_c_n, const std::optional<Tensor>& grad_cells,
    const Tensor& h0, const Tensor& c0, const Tensor& y, const Tensor& cells,
    const std::vector<Tensor>& saved, const RowGemm<T>& gemm, cudaStream_t stream) {
  constexpr const char* op = "lstm_variant_backward";
  const LayerArgs& a = v.a;
  const int64_t G = 4 * a.H;
  const bool ln = !v.norm.empty();
  auto [gy, gc, yc, cc, s, dh, dc] =
      variant_grad_inputs(op, v, grad_y, grad_h_n, grad_c_n, grad_cells, h0, c0, y, cells, saved);
  const auto opts = v.x.options();
  Tensor dgates = at::empty({a.N, G}, opts);
  Tensor d_gx = ln ? at::empty({a.N, G}, opts) : dgates;
  Tensor dr = ln ? at::empty({a.N, G}, opts) : dgates;
  Tensor d_proj = maybe_empty(a.has_proj, {a.N, a.Hout}, opts);
  Tensor h_in = at::empty({a.N, a.Hout}, opts);
  const Tensor d_n = maybe_empty(ln, {a.N, a.H}, opts);
  const Tensor d_raw = maybe_empty(a.has_proj, {a.B, a.H}, opts);
  const Tensor dh_in = maybe_empty(v.recurrent_mask.defined(), {a.B, a.Hout}, opts);
  Tensor d_bias = maybe_empty(a.has_bias || ln, {G}, opts);
  Tensor d_ln_ih_w = maybe_empty(ln, {G}, opts), d_ln_hh_w = maybe_empty(ln, {G}, opts);
  Tensor d_ln_c_w = maybe_empty(ln, {a.H}, opts), d_ln_c_b = maybe_empty(ln, {a.H}, opts);
  const auto in = [&](VariantSaved k) { return s[k].numel() ? s[k].data_ptr<T>() : nullptr; };
  VariantCudaBackward<T> b;
  b.act = in(kAct);
  b.gx_hat = in(kGxHat);
  b.gx_stats = in(kGxStats);
  b.r_hat = in(kRHat);
  b.r_stats = in(kRStats);
  b.cand = in(kCand);
  b.c_stats = in(kCStats);
  b.y = yc.data_ptr<T>();
  b.cells = cc.data_ptr<T>();
  b.grad_y = gy.data_ptr<T>();
  b.grad_cells = ptr_or_null<T>(gc);
  b.dh = dh.data_ptr<T>();
  b.dc = dc.data_ptr<T>();
  b.dgates = dgates.data_ptr<T>();
  b.d_gx = ln ? d_gx.data_ptr<T>() : nullptr;
  b.dr = ln ? dr.data_ptr<T>() : nullptr;
  b.d_proj = ptr_or_null<T>(d_proj);
  b.h_in = h_in.data_ptr<T>();
  b.d_n = ptr_or_null<T>(d_n);
  b.d_raw = ptr_or_null<T>(d_raw);
  b.dh_in = ptr_or_null<T>(dh_in);
  b.d_bias = ptr_or_null<T>(d_bias);
  b.d_ln_ih_w = ptr_or_null<T>(d_ln_ih_w);
  b.d_ln_hh_w = ptr_or_null<T>(d_ln_hh_w);
  b.d_ln_c_w = ptr_or_null<T>(d_ln_c_w);
  b.d_ln_c_b = ptr_or_null<T>(d_ln_c_b);
  check_loop_status(op, variant_backward_loop<T>(steps_of(a, reverse), state_of<T>(v), b, gemm,
                                            stream));
  // The whole-sequence gradients of x and the weights: grad_x [N, I] = d_gx @ w_ih;
  // grad_w_ih [4H, I] = d_gx^T @ x; grad_w_hh [4H, Hout] = dr^T @ h_in; grad_w_hr
  // [Hout, H] = d_proj^T @ h_raw. Each its own tensor (no output aliases another).
  std::vector<Tensor> grad_weights{at::mm(d_gx.t(), v.x).to(v.dtype),
                                   at::mm(dr.t(), h_in).to(v.dtype)};
  if (a.has_bias) {
    grad_weights.push_back(d_bias.to(v.dtype, false, true));
    grad_weights.push_back(d_bias.to(v.dtype, false, true));
  }
  if (a.has_proj) {
    grad_weights.push_back(at::mm(d_proj.t(), s[kHRaw].view({a.N, a.H})).to(v.dtype));
  }
  std::vector<Tensor> grad_norm;
  if (ln) {
    for (const Tensor& t : {d_ln_ih_w, d_bias, d_ln_hh_w, d_bias, d_ln_c_w, d_ln_c_b}) {
      grad_norm.push_back(t.to(v.dtype, false, true));
    }
  }
  const Tensor grad_x = at::mm(d_gx, v.w_ih).view(x.sizes()).to(v.dtype);
  return {grad_x, dh.to(v.dtype), dc.to(v.dtype), grad_weights, grad_norm};
}

#define FUSED_LSTM_INSTANTIATE(T)                                                           \
  template VariantForwardResult variant_forward_impl<T>(const VariantArgs&, const Tensor&,  \
                                                        bool, bool, const RowGemm<T>&,      \
                                                        cudaStream_t);                      \
  template VariantBackwardResult variant_backward_impl<T>(                                  \
      const VariantArgs&, const Tensor&, bool, const Tensor&, const Tensor&, const Tensor&, \
      const std::optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&,            \
      const Tensor&, const std::vector<Tensor>&, const RowGemm<T>&, cudaStream_t);
FUSED_LSTM_INSTANTIATE(float)
FUSED_LSTM_INSTANTIATE(double)
#undef FUSED_LSTM_INSTANTIATE

}  // namespace fused_lstm::cuda
