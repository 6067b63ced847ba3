#include "lstm_variant_args.h"

#include "lstm_layer_directions.h"

namespace fused_lstm {

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

void check_like(const char* op, const Tensor& t, const char* name, const Tensor& x) {
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": expected ", name, " of dtype ",
              x.scalar_type(), " (the input's), got ", t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), op, ": expected ", name, " on ", x.device(), ", got ",
              t.device());
}

// A zoneout operand: [N, width] (one row per row of x) or [width] (every row).
void check_zoneout(const char* op, const Tensor& z, const char* name, const LayerArgs& a,
                   int64_t width, const Tensor& x) {
  check_like(op, z, name, x);
  TORCH_CHECK((z.dim() == 2 && z.size(0) == a.N && z.size(1) == width) ||
                  (z.dim() == 1 && z.size(0) == width),
              op, ": expected ", name, " of size [", a.N, ", ", width, "] (one row per row of "
              "x) or [", width, "], got ", z.sizes());
}

// Each saved buffer's width, and whether these options need it (lstm_variant_forward's
// buffers are [N, width], or empty).
struct SavedLayout {
  std::array<int64_t, kVariantSavedCount> width;
  std::array<bool, kVariantSavedCount> present;
};

SavedLayout saved_layout(const VariantArgs& v) {
  const int64_t G = 4 * v.a.H, H = v.a.H;
  const bool ln = !v.norm.empty(), proj = v.a.has_proj;
  return {{G, G, 2, G, 2, H, 2, H}, {true, ln, ln, ln, ln, true, ln, proj}};
}

}  // namespace

VariantArgs check_variant_args(const char* op, const Tensor& x, const OptTensor& batch_sizes,
                               const Tensor& h0, const Tensor& c0,
                               const std::vector<Tensor>& weights, bool has_bias,
                               bool has_proj, bool reverse, const std::vector<Tensor>& norm,
                               double norm_eps, bool norm_state,
                               const OptTensor& recurrent_mask, const OptTensor& zoneout_h,
                               const OptTensor& zoneout_c) {
  const auto w = split_direction_weights(op, weights, has_bias, has_proj, false, reverse)[0];
  VariantArgs v;
  v.a = check_layer_args(x, batch_sizes, h0, c0, w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr);
  const LayerArgs& a = v.a;
  const int64_t G = 4 * a.H;
  TORCH_CHECK(norm.empty() || norm.size() == 6, op, ": expected no norm parameters or six "
              "(ln_ih weight, bias, ln_hh weight, bias, ln_c weight, bias), got ", norm.size());
  for (size_t k = 0; k < norm.size(); ++k) {
    const int64_t want = k < 4 ? G : a.H;
    check_like(op, norm[k], "a norm parameter", x);
    TORCH_CHECK(norm[k].dim() == 1 && norm[k].size(0) == want, op, ": expected norm parameter ",
                k, " of size [", want, "], got ", norm[k].sizes());
  }
  TORCH_CHECK(norm_eps >= 0, op, ": expected norm_eps >= 0, got ", norm_eps);
  if (recurrent_mask) {
    check_like(op, *recurrent_mask, "recurrent_mask", x);
    TORCH_CHECK(recurrent_mask->sizes() == at::IntArrayRef({a.B, a.Hout}), op,
                ": expected recurrent_mask of size [", a.B, ", ", a.Hout, "], got ",
                recurrent_mask->sizes());
  }
  if (zoneout_h) check_zoneout(op, *zoneout_h, "zoneout_h", a, a.Hout, x);
  if (zoneout_c) check_zoneout(op, *zoneout_c, "zoneout_c", a, a.H, x);

  v.dtype = x.scalar_type();
  v.compute = compute_dtype(v.dtype);
  const auto c = [&](const Tensor& t) { return as_compute(t, v.compute); };
  v.x = c(x).reshape({a.N, a.I});
  v.h0 = c(h0);
  v.c0 = c(c0);
  v.w_ih = c(w.w_ih);
  v.w_hh = c(w.w_hh);
  if (has_bias) v.bias = c(*w.b_ih) + c(*w.b_hh);
  if (has_proj) v.w_hr = c(*w.w_hr);
  for (const Tensor& t : norm) v.norm.push_back(c(t));
  v.eps = norm_eps;
  v.norm_state = norm_state;
  if (recurrent_mask) v.recurrent_mask = c(*recurrent_mask);
  if (zoneout_h) v.zoneout_h = c(*zoneout_h);
  if (zoneout_c) v.zoneout_c = c(*zoneout_c);
  return v;
}

std::array<Tensor, kVariantSavedCount> variant_saved_buffers(const VariantArgs& v) {
  const LayerArgs& a = v.a;
  const auto opts = v.x.options();
  const SavedLayout l = saved_layout(v);
  std::array<Tensor, kVariantSavedCount> saved;
  for (int k = 0; k < kVariantSavedCount; ++k) {
    saved[k] = l.present[k] ? at::empty({a.N, l.width[k]}, opts) : at::empty({0}, opts);
  }
  return saved;
}

void check_variant_backward_args(const char* op, const VariantArgs& v, const Tensor& grad_y,
                                 const Tensor& grad_h_n, const Tensor& grad_c_n,
                                 const OptTensor& grad_cells, const Tensor& h0,
                                 const Tensor& c0, const Tensor& y, const Tensor& cells,
                                 const std::vector<Tensor>& saved) {
  const LayerArgs& a = v.a;
  TORCH_CHECK(saved.size() == kVariantSavedCount, op, ": expected ", int(kVariantSavedCount),
              " saved tensors (from lstm_variant_forward with need_backward=True), got ",
              saved.size());
  // Every buffer the options need, at its size (lstm_variant_forward's for these arguments).
  const SavedLayout l = saved_layout(v);
  for (int k = 0; k < kVariantSavedCount; ++k) {
    const int64_t want = l.present[k] ? a.N * l.width[k] : 0;
    TORCH_CHECK(saved[k].numel() == want, op, ": expected saved tensor ", k, " with ", want,
                " elements (from lstm_variant_forward with need_backward=True and the same "
                "options), got ", saved[k].sizes());
  }
  TORCH_CHECK(grad_y.numel() == a.N * a.Hout && y.numel() == a.N * a.Hout &&
                  cells.numel() == a.N * a.H,
              op, ": expected grad_y and y with ", a.N * a.Hout, " elements and cells with ",
              a.N * a.H, ", got ", grad_y.sizes(), ", ", y.sizes(), " and ", cells.sizes());
  TORCH_CHECK(grad_h_n.sizes() == h0.sizes() && grad_c_n.sizes() == c0.sizes(), op,
              ": expected grad_h_n of size ", h0.sizes(), " and grad_c_n of size ", c0.sizes(),
              ", got ", grad_h_n.sizes(), " and ", grad_c_n.sizes());
  if (grad_cells) {
    TORCH_CHECK(grad_cells->numel() == a.N * a.H, op, ": expected grad_cells with ",
                a.N * a.H, " elements, got ", grad_cells->sizes());
  }
}

VariantGradInputs variant_grad_inputs(const char* op, const VariantArgs& v,
                                      const Tensor& grad_y, const Tensor& grad_h_n,
                                      const Tensor& grad_c_n, const OptTensor& grad_cells,
                                      const Tensor& h0, const Tensor& c0, const Tensor& y,
                                      const Tensor& cells, const std::vector<Tensor>& saved) {
  check_variant_backward_args(op, v, grad_y, grad_h_n, grad_c_n, grad_cells, h0, c0, y, cells,
                              saved);
  const auto& a = v.a;
  const auto c = [&](const Tensor& t) { return as_compute(t, v.compute); };
  VariantGradInputs g;
  g.gy = c(grad_y).reshape({a.N, a.Hout});
  g.gc = grad_cells ? c(*grad_cells).reshape({a.N, a.H}) : Tensor();
  g.y = c(y).reshape({a.N, a.Hout});
  g.cells = c(cells).reshape({a.N, a.H});
  for (const Tensor& t : saved) g.saved.push_back(c(t));
  g.dh = fresh(grad_h_n, v.compute);
  g.dc = fresh(grad_c_n, v.compute);
  return g;
}

}  // namespace fused_lstm
