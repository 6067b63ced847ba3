// The schemas of the variant op (lstm_variant_forward/backward; their arguments are described
// in ops.cpp), in one place for the library that registers them (ops.cpp) and the CPU
// emulation of their CUDA code (tests/cuda_emulation), which registers them again under a
// library of its own.
#pragma once

namespace fused_lstm {

inline constexpr const char* kLstmVariantForwardSchema =
    "lstm_variant_forward(Tensor x, Tensor? batch_sizes, Tensor h0, Tensor c0, "
    "Tensor[] weights, bool has_bias, bool has_proj, bool reverse, Tensor[] norm, "
    "float norm_eps, bool norm_state, Tensor? recurrent_mask, Tensor? zoneout_h, "
    "Tensor? zoneout_c, bool need_backward) "
    "-> (Tensor y, Tensor h_n, Tensor c_n, Tensor cells, Tensor[] saved)";

inline constexpr const char* kLstmVariantBackwardSchema =
    "lstm_variant_backward(Tensor grad_y, Tensor grad_h_n, Tensor grad_c_n, "
    "Tensor? grad_cells, Tensor x, Tensor? batch_sizes, Tensor h0, Tensor c0, "
    "Tensor[] weights, bool has_bias, bool has_proj, bool reverse, Tensor[] norm, "
    "float norm_eps, bool norm_state, Tensor? recurrent_mask, Tensor? zoneout_h, "
    "Tensor? zoneout_c, Tensor y, Tensor cells, Tensor[] saved) "
    "-> (Tensor grad_x, Tensor grad_h0, Tensor grad_c0, Tensor[] grad_weights, "
    "Tensor[] grad_norm)";

}  // namespace fused_lstm
