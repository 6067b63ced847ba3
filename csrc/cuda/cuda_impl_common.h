// What the CUDA impls of both ops (lstm_cuda_forward.cpp, lstm_cuda_backward.cpp,
// variant_cuda_impl.cpp) share around their torch-free time loops: the steps of checked
// arguments, and the loops' failures as the ops' errors.
#pragma once

#include <c10/util/Exception.h>

#include "../lstm_layer_args.h"
#include "cuda_steps.h"

namespace fused_lstm::cuda {

inline CudaSteps steps_of(const LayerArgs& a, bool reverse) {
  return {a.T, a.B, a.I, a.H, a.Hout, a.N, a.offset.data(), a.rows.data(), reverse};
}

inline void check_loop_status(const char* op, const LoopStatus& status) {
  if (status.ok()) return;
  TORCH_CHECK(status.blas == 0, op, ": ", status.what,
              " failed with cuBLAS status ", status.blas);
  TORCH_CHECK(false, op, ": ", status.what, " failed: ", cudaGetErrorString(status.error));
}

}  // namespace fused_lstm::cuda
