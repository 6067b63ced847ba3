// The CUDA backend's routing decision, in one place: how a layer direction's time loop
// runs its recurrent products (cuda_plan.cpp, from the sizes and FUSED_LSTM_CUDA_STEP).
#pragma once

#include "../lstm_layer_args.h"

namespace fused_lstm::cuda {

// How a time loop runs its recurrent products.
enum class StepRoute {
  fused,  // our step kernels with the product inside (no projection): one launch per step
  gemm,   // a cuBLAS GEMM per step, then the pointwise kernel
  aten,   // the same through at::addmm_/mm_out, where cuBLAS's entry points were not found
};

StepRoute step_route(const LayerArgs& a, bool backward);

}  // namespace fused_lstm::cuda
