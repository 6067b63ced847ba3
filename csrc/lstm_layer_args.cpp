#include "lstm_layer_args.h"

namespace fused_lstm {

namespace {

void check_tensor(const at::Tensor& t, const char* name, at::IntArrayRef expected,
                  const at::Tensor& x) {
  TORCH_CHECK(t.sizes() == expected, "lstm_layer_forward: expected ", name, " of size ",
              expected, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "lstm_layer_forward: expected ", name,
              " of dtype ", x.scalar_type(), " (the input's), got ", t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), "lstm_layer_forward: expected ", name, " on ",
              x.device(), " (the input's device), got ", t.device());
}

}  // namespace

LayerArgs check_layer_args(const at::Tensor& x, const std::optional<at::Tensor>& batch_sizes,
                           const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                           const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                           const std::optional<at::Tensor>& b_hh,
                           const std::optional<at::Tensor>& w_hr) {
  LayerArgs a;
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
              "lstm_layer_forward: expected a float32, float64, float16 or bfloat16 input, got ",
              dt);
  a.packed = batch_sizes.has_value();
  a.has_bias = b_ih.has_value();
  a.has_proj = w_hr.has_value();
  TORCH_CHECK(b_ih.has_value() == b_hh.has_value(),
              "lstm_layer_forward: b_ih and b_hh must be given together");
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) % 4 == 0,
              "lstm_layer_forward: expected w_ih of size [4H, I], got ", w_ih.sizes());
  a.H = w_ih.size(0) / 4;
  a.I = w_ih.size(1);
  a.Hout = a.H;
  if (a.has_proj) {
    TORCH_CHECK(w_hr->dim() == 2 && w_hr->size(1) == a.H,
                "lstm_layer_forward: expected w_hr of size [proj_size, ", a.H, "], got ",
                w_hr->sizes());
    a.Hout = w_hr->size(0);
  }
  if (a.packed) {
    const auto& bs = *batch_sizes;
    TORCH_CHECK(bs.dim() == 1 && bs.scalar_type() == at::kLong && bs.device().is_cpu(),
                "lstm_layer_forward: expected batch_sizes as a 1-D int64 CPU tensor, got ",
                bs.dim(), "-D ", bs.scalar_type(), " on ", bs.device());
    TORCH_CHECK(x.dim() == 2, "lstm_layer_forward: packed input must be 2-D [N, I], got ",
                x.sizes());
    const auto bsc = bs.contiguous();
    const int64_t* p = bsc.data_ptr<int64_t>();
    a.T = bs.numel();
    a.B = a.T > 0 ? p[0] : 0;
    int64_t off = 0;
    for (int64_t t = 0; t < a.T; ++t) {
      TORCH_CHECK(p[t] > 0 && p[t] <= (t ? p[t - 1] : p[0]),
                  "lstm_layer_forward: batch_sizes must be positive and non-increasing, got ",
                  bs);
      a.offset.push_back(off);
      a.rows.push_back(p[t]);
      off += p[t];
    }
    a.N = off;
    TORCH_CHECK(x.size(0) == a.N, "lstm_layer_forward: packed input has ", x.size(0),
                " rows but batch_sizes sum to ", a.N);
  } else {
    TORCH_CHECK(x.dim() == 3, "lstm_layer_forward: expected input of size [T, B, I], got ",
                x.sizes());
    a.T = x.size(0);
    a.B = x.size(1);
    a.N = a.T * a.B;
    for (int64_t t = 0; t < a.T; ++t) {
      a.offset.push_back(t * a.B);
      a.rows.push_back(a.B);
    }
  }
  TORCH_CHECK(x.size(-1) == a.I, "lstm_layer_forward: expected input with ", a.I,
              " features (w_ih is ", w_ih.sizes(), "), got ", x.size(-1));
  check_tensor(h0, "h0", {a.B, a.Hout}, x);
  check_tensor(c0, "c0", {a.B, a.H}, x);
  check_tensor(w_ih, "w_ih", {4 * a.H, a.I}, x);
  check_tensor(w_hh, "w_hh", {4 * a.H, a.Hout}, x);
  if (a.has_bias) {
    check_tensor(*b_ih, "b_ih", {4 * a.H}, x);
    check_tensor(*b_hh, "b_hh", {4 * a.H}, x);
  }
  if (a.has_proj) check_tensor(*w_hr, "w_hr", {a.Hout, a.H}, x);
  return a;
}

void check_backward_args(const LayerArgs& a, const at::Tensor& grad_y,
                         const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
                         const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& y,
                         const at::Tensor& gates, const at::Tensor& cells) {
  const int64_t G = 4 * a.H;
  TORCH_CHECK(gates.numel() == a.N * G && cells.numel() == a.N * a.H,
              "lstm_layer_backward: expected saved gates [", a.N, ", ", G, "] and cells [", a.N,
              ", ", a.H, "] (run lstm_layer_forward with need_backward=True), got ", gates.sizes(),
              " and ", cells.sizes());
  TORCH_CHECK(grad_y.numel() == a.N * a.Hout && y.numel() == a.N * a.Hout,
              "lstm_layer_backward: expected grad_y and y with ", a.N * a.Hout,
              " elements, got ", grad_y.sizes(), " and ", y.sizes());
  TORCH_CHECK(grad_h_n.sizes() == h0.sizes() && grad_c_n.sizes() == c0.sizes(),
              "lstm_layer_backward: expected grad_h_n of size ", h0.sizes(),
              " and grad_c_n of size ", c0.sizes(), ", got ", grad_h_n.sizes(), " and ",
              grad_c_n.sizes());
}

}  // namespace fused_lstm
