// csrc/cuda/lstm_cuda_persistent.h for the CPU emulation of the CUDA code: the persistent
// forward (thread-block clusters, distributed shared memory) is not emulated, so no shape
// takes it and the route chooser's time loops run.
#include "../../csrc/cuda/lstm_cuda_persistent.h"

namespace fused_lstm::cuda {

bool lstm_persistent_forward_shape(int64_t, int64_t, PersistentForwardShape*) { return false; }

cudaError_t lstm_persistent_forward(const PersistentForwardShape&, int64_t, int64_t, int64_t,
                                    bool, float*, const float*, const float*, const float*,
                                    float*, float*, float*, float*, bool, cudaStream_t) {
  return cudaErrorInvalidValue;
}

}  // namespace fused_lstm::cuda
