// The CUDA backend's routing decision, in one place: how a layer direction's time loop
// runs its recurrent products (cuda_plan.cpp, from the sizes and FUSED_LSTM_CUDA_STEP).
#pragma once

#include <optional>

#include "../lstm_layer_args.h"
#include "lstm_cuda_loops.h"
#include "lstm_cuda_persistent.h"

namespace fused_lstm::cuda {

StepRoute step_route(const LayerArgs& a, bool backward);

// The persistent forward (lstm_cuda_persistent.h: the whole recurrence in one launch) and
// its layout, for a forward layer direction of dtype `dtype` on the current device; nullopt
// where the time loop of step_route runs instead. Never chosen by default: only
// FUSED_LSTM_CUDA_STEP=persistent asks for it, and even then only float32 layers without
// a projection on dense input, of a batch and hidden size the kernel takes
// (lstm_persistent_forward_shape) on an sm_90 or newer GPU, get it.
std::optional<PersistentForwardShape> persistent_forward_plan(const LayerArgs& a,
                                                              at::ScalarType dtype);

}  // namespace fused_lstm::cuda
