// Every threshold of the CUDA routes and every environment switch of the CUDA backend, in one
// place (the kernels' own launch shapes live with them: kStep* in lstm_cuda_kernels.cu, the
// persistent kernel's layout in lstm_cuda_persistent.cu). The constants are named as in
// benchmarks/NOTES.md ("The two step routes"), where the measurements that set them are.
//
// Switches, read at every call (tests switch them between calls):
//   FUSED_LSTM_CUDA_STEP=fused|gemm  every time loop on that step route (layers with a
//                                    projection always take gemm);
//   FUSED_LSTM_CUDA_STEP=persistent  the persistent forward where it can run (not yet run on a
//                                    GPU, so only ever chosen by this switch);
//   FUSED_LSTM_CUDA_VARIANT_OP=1     the variant op's CUDA kernels may run (not yet run on a
//                                    GPU; fused_lstm/ops.py reads it too, once, at import);
//   FUSED_LSTM_CUDA_16BIT_GEMM=1     float16 and bfloat16 layers multiply 16-bit operands on
//                                    tensor cores in the forward (not yet run on a GPU):
//                                    the input projection, and on the gemm route without a
//                                    projection the recurrent product of h rounded to 16 bits.
// Which route a call takes is decided from its sizes in cuda_plan.cpp.
#pragma once

#include <cstdint>

namespace fused_lstm::cuda {

struct CudaTuning {
  // The fused step kernels (the recurrent product inside, one launch a step) up to this
  // hidden size and batch; a cuBLAS GEMM per step above.
  static constexpr int64_t kMaxHiddenForFusedSteps = 256;
  static constexpr int64_t kMaxRowsForFusedSteps = 128;
  // ... and the forward of one-row batches up to this hidden size.
  static constexpr int64_t kMaxHiddenForOneRowFusedForward = 512;
};

// FUSED_LSTM_CUDA_STEP; an unknown value is an error naming the valid ones.
enum class ForcedStepRoute { none, fused, gemm, persistent };
ForcedStepRoute forced_step_route();

// FUSED_LSTM_CUDA_VARIANT_OP == "1".
bool cuda_variant_op_switched_on();

// FUSED_LSTM_CUDA_16BIT_GEMM == "1".
bool cuda_16bit_gemm_switched_on();

}  // namespace fused_lstm::cuda
