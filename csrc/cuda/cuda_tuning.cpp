#include "cuda_tuning.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace fused_lstm::cuda {

ForcedStepRoute forced_step_route() {
  const char* env = std::getenv("FUSED_LSTM_CUDA_STEP");
  const std::string want = env ? env : "";
  if (want.empty()) return ForcedStepRoute::none;
  if (want == "fused") return ForcedStepRoute::fused;
  if (want == "gemm") return ForcedStepRoute::gemm;
  if (want == "persistent") return ForcedStepRoute::persistent;
  TORCH_CHECK(false,
              "fused_lstm: FUSED_LSTM_CUDA_STEP must be 'fused', 'gemm' or 'persistent', got '",
              want, "'");
}

namespace {

bool switched_on(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && std::string(value) == "1";
}

}  // namespace

bool cuda_variant_op_switched_on() { return switched_on("FUSED_LSTM_CUDA_VARIANT_OP"); }

bool cuda_16bit_gemm_switched_on() { return switched_on("FUSED_LSTM_CUDA_16BIT_GEMM"); }

}  // namespace fused_lstm::cuda
