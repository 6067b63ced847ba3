// One LSTM layer of one or two directions, built on a device's one-direction forward and
// backward: what both bindings share about the op's layout (the weights list, states of
// [D, B, .], the output's halves, grad_x summed over the directions). Each binding says
// how its directions run side by side (the CPU: one per core; CUDA: one after the other).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace fused_lstm {

// One direction's weights: w_ih [4H, I], w_hh [4H, Hout], b_ih and b_hh [4H] (with a bias),
// w_hr [Hout, H] (with a projection).
struct DirectionWeights {
  at::Tensor w_ih, w_hh;
  std::optional<at::Tensor> b_ih, b_hh, w_hr;
};

// The op's weights list (per direction, in nn.LSTM's order: w_ih, w_hh, then b_ih, b_hh
// with a bias, then w_hr with a projection), split per direction. Checks its length and
// the flags: `op` names the op in errors.
std::vector<DirectionWeights> split_direction_weights(const char* op,
                                                      const std::vector<at::Tensor>& weights,
                                                      bool has_bias, bool has_proj,
                                                      bool bidirectional, bool reverse);

// h0: [D, B, Hout], c0: [D, B, H] for D directions; throws naming the expected shape.
void check_layer_states(const char* op, const at::Tensor& h0, const at::Tensor& c0,
                        int64_t directions);

// What lstm_layer_backward receives besides the forward arguments, at the layer's level:
// grad_h_n, grad_c_n like h0, c0; y and grad_y with D * Hout features; two saved buffers
// (gates, cells) per direction. Each direction's own checks follow (check_backward_args).
void check_layer_backward_args(const at::Tensor& grad_y, const at::Tensor& grad_h_n,
                               const at::Tensor& grad_c_n, const at::Tensor& h0,
                               const at::Tensor& c0, const at::Tensor& y,
                               const std::vector<at::Tensor>& saved, int64_t directions);

// y, h_n, c_n, gates, cells of one direction (lstm_layer_forward of ops.cpp, for one).
using DirectionForward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
// grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr of one.
using DirectionBackward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                     at::Tensor, at::Tensor, at::Tensor>;
using LayerForward = std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>;
using LayerBackward = std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>;

// [D, ...] from each direction's tensor (a view for one direction).
inline at::Tensor stack_directions(const std::vector<at::Tensor>& per_direction) {
  return per_direction.size() == 1 ? per_direction[0].unsqueeze(0) : at::stack(per_direction);
}

// The layer's forward: forward(d, h0_d, c0_d, reverse_d) runs direction d (its h0 [B, Hout],
// c0 [B, H]) and returns DirectionForward; run_each(n, fn) calls fn(d) for every d < n.
// y: [T, B, D * Hout] (or [N, D * Hout]), each direction's half copied in as it finishes.
template <typename Forward, typename RunEach>
LayerForward layer_forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                           int64_t directions, bool reverse, const Forward& forward,
                           const RunEach& run_each) {
  if (directions == 1) {
    auto [y, h_n, c_n, gates, cells] = forward(0, h0[0], c0[0], reverse);
    return {y, h_n.unsqueeze(0), c_n.unsqueeze(0), {gates, cells}};
  }
  const int64_t Hout = h0.size(2);
  std::vector<int64_t> y_size(x.sizes().begin(), x.sizes().end());
  y_size.back() = directions * Hout;
  at::Tensor y = at::empty(y_size, x.options());
  std::vector<DirectionForward> out(directions);
  run_each(directions, [&](int64_t d) {
    out[d] = forward(d, h0[d], c0[d], d == 1);
    y.narrow(-1, d * Hout, Hout).copy_(std::get<0>(out[d]));
    std::get<0>(out[d]) = at::Tensor();
  });
  std::vector<at::Tensor> h_n, c_n, saved;
  for (auto& [y_d, h_d, c_d, gates, cells] : out) {
    h_n.push_back(h_d);
    c_n.push_back(c_d);
    saved.push_back(gates);
    saved.push_back(cells);
  }
  return {y, stack_directions(h_n), stack_directions(c_n), saved};
}

// The layer's backward: backward(d, grad_y_d, grad_h_n_d, grad_c_n_d, y_d, gates_d,
// cells_d, reverse_d) returns direction d's DirectionBackward. grad_weights come in the
// order of the weights list (biases only with a bias, w_hr only with a projection).
template <typename Backward, typename RunEach>
LayerBackward layer_backward(const at::Tensor& grad_y, const at::Tensor& grad_h_n,
                             const at::Tensor& grad_c_n, const at::Tensor& y,
                             const std::vector<at::Tensor>& saved, int64_t directions,
                             bool reverse, bool has_bias, bool has_proj,
                             const Backward& backward, const RunEach& run_each) {
  const int64_t Hout = grad_h_n.size(2);
  std::vector<DirectionBackward> g(directions);
  run_each(directions, [&](int64_t d) {
    const bool one = directions == 1;
    g[d] = backward(d, one ? grad_y : grad_y.narrow(-1, d * Hout, Hout), grad_h_n[d],
                    grad_c_n[d], one ? y : y.narrow(-1, d * Hout, Hout), saved[2 * d],
                    saved[2 * d + 1], one ? reverse : d == 1);
  });
  at::Tensor grad_x = std::get<0>(g[0]);
  std::vector<at::Tensor> grad_h0, grad_c0, grad_weights;
  for (int64_t d = 0; d < directions; ++d) {
    auto& [gx, gh0, gc0, gw_ih, gw_hh, gb_ih, gb_hh, gw_hr] = g[d];
    if (d > 0) grad_x = grad_x.add_(gx);
    grad_h0.push_back(gh0);
    grad_c0.push_back(gc0);
    grad_weights.push_back(gw_ih);
    grad_weights.push_back(gw_hh);
    if (has_bias) {
      grad_weights.push_back(gb_ih);
      grad_weights.push_back(gb_hh);
    }
    if (has_proj) grad_weights.push_back(gw_hr);
  }
  return {grad_x, stack_directions(grad_h0), stack_directions(grad_c0), grad_weights};
}

}  // namespace fused_lstm
