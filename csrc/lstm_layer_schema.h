// The schemas of the layer op (lstm_layer_forward/backward; their arguments are described in
// ops.cpp), in one place for the library that registers them (ops.cpp) and the CPU
// emulation of their CUDA code (tests/cuda_emulation), which registers them again under a
// library of its own.
#pragma once

namespace fused_lstm {

inline constexpr const char* kLstmLayerForwardSchema =
    "lstm_layer_forward(Tensor x, Tensor? batch_sizes, Tensor h0, Tensor c0, Tensor[] weights, "
    "bool has_bias, bool has_proj, bool bidirectional, bool reverse, bool need_backward) "
    "-> (Tensor y, Tensor h_n, Tensor c_n, Tensor[] saved)";

inline constexpr const char* kLstmLayerBackwardSchema =
    "lstm_layer_backward(Tensor grad_y, Tensor grad_h_n, Tensor grad_c_n, Tensor x, "
    "Tensor? batch_sizes, Tensor h0, Tensor c0, Tensor[] weights, bool has_bias, "
    "bool has_proj, bool bidirectional, bool reverse, Tensor y, Tensor[] saved) "
    "-> (Tensor grad_x, Tensor grad_h0, Tensor grad_c0, Tensor[] grad_weights)";

}  // namespace fused_lstm
