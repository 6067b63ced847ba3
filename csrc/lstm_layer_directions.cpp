#include "lstm_layer_directions.h"

namespace fused_lstm {

std::vector<DirectionWeights> split_direction_weights(const char* op,
                                                      const std::vector<at::Tensor>& weights,
                                                      bool has_bias, bool has_proj,
                                                      bool bidirectional, bool reverse) {
  TORCH_CHECK(!(bidirectional && reverse), op,
              ": reverse runs one direction back to front; a bidirectional layer runs both "
              "(expected reverse=False with bidirectional=True)");
  const int64_t directions = bidirectional ? 2 : 1;
  const int64_t per_direction = 2 + (has_bias ? 2 : 0) + (has_proj ? 1 : 0);
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == directions * per_direction, op,
              ": expected ", directions * per_direction, " weights (", per_direction,
              " per direction: w_ih, w_hh", has_bias ? ", b_ih, b_hh" : "",
              has_proj ? ", w_hr" : "", "), got ", weights.size());
  std::vector<DirectionWeights> out(directions);
  for (int64_t d = 0; d < directions; ++d) {
    const at::Tensor* w = weights.data() + d * per_direction;
    DirectionWeights& dw = out[d];
    dw.w_ih = w[0];
    dw.w_hh = w[1];
    if (has_bias) {
      dw.b_ih = w[2];
      dw.b_hh = w[3];
    }
    if (has_proj) dw.w_hr = w[per_direction - 1];
  }
  return out;
}

void check_layer_states(const char* op, const at::Tensor& h0, const at::Tensor& c0,
                        int64_t directions) {
  TORCH_CHECK(h0.dim() == 3 && h0.size(0) == directions && c0.dim() == 3 &&
                  c0.size(0) == directions,
              op, ": expected h0 and c0 of size [", directions,
              ", B, ...] (one state per direction), got ", h0.sizes(), " and ", c0.sizes());
}

void check_layer_backward_args(const at::Tensor& grad_y, const at::Tensor& grad_h_n,
                               const at::Tensor& grad_c_n, const at::Tensor& h0,
                               const at::Tensor& c0, const at::Tensor& y,
                               const std::vector<at::Tensor>& saved, int64_t directions) {
  constexpr const char* op = "lstm_layer_backward";
  check_layer_states(op, h0, c0, directions);
  TORCH_CHECK(grad_h_n.sizes() == h0.sizes() && grad_c_n.sizes() == c0.sizes(), op,
              ": expected grad_h_n of size ", h0.sizes(), " and grad_c_n of size ", c0.sizes(),
              ", got ", grad_h_n.sizes(), " and ", grad_c_n.sizes());
  const int64_t features = directions * h0.size(2);
  TORCH_CHECK(y.dim() >= 1 && grad_y.dim() >= 1 && y.size(-1) == features &&
                  grad_y.size(-1) == features,
              op, ": expected y and grad_y with ", features, " features, got ", y.sizes(),
              " and ", grad_y.sizes());
  TORCH_CHECK(static_cast<int64_t>(saved.size()) == 2 * directions, op, ": expected ",
              2 * directions, " saved buffers (gates and cells per direction, from "
              "lstm_layer_forward with need_backward=True), got ", saved.size());
}

}  // namespace fused_lstm
