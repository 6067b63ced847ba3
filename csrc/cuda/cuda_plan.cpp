#include "cuda_plan.h"

#include "cuda_tuning.h"

namespace fused_lstm::cuda {

// The fused steps win while the recurrent product is small, cuBLAS above. On
// an H200 (benchmarks/NOTES.md, "CUDA: the two step routes"), training ran
// fused / with cuBLAS at these fractions of cuDNN's speed: B = 16 H = 128
// 0.27x / 0.06x, B = 128 H = 128 0.47x / 0.31x, B = 64 H = 256 1.19x / 1.01x,
// B = 64 H = 512 0.77x / 1.00x, B = 1 H = 1024 0.46x / 0.93x. At H = 512 and
// B = 1 the forward alone was 14% faster fused, the backward 18% slower.
// FUSED_LSTM_CUDA_STEP=fused|gemm overrides the choice (layers with a
// projection always take cuBLAS); =persistent leaves it to this chooser for
// every loop the persistent forward does not run (backward, and the forward
// shapes persistent_forward_plan refuses).
StepRoute step_route(const LayerArgs& a, bool backward) {
  const ForcedStepRoute want = forced_step_route();
  if (a.has_proj || want == ForcedStepRoute::gemm) return StepRoute::gemm;
  if (want == ForcedStepRoute::fused) return StepRoute::fused;
  const bool small =
      a.H <= CudaTuning::kMaxHiddenForFusedSteps && a.B <= CudaTuning::kMaxRowsForFusedSteps;
  const bool one_row_forward =
      !backward && a.B == 1 && a.H <= CudaTuning::kMaxHiddenForOneRowFusedForward;
  return small || one_row_forward ? StepRoute::fused : StepRoute::gemm;
}

// Not yet run on a GPU (benchmarks/NOTES.md, "The persistent kernel: written, not yet
// run"), so only asked for by name, never chosen from the sizes.
std::optional<PersistentForwardShape> persistent_forward_plan(const LayerArgs& a,
                                                              at::ScalarType dtype) {
  if (forced_step_route() != ForcedStepRoute::persistent) return std::nullopt;
  if (dtype != at::kFloat || a.packed || a.has_proj || a.T < 1) return std::nullopt;
  PersistentForwardShape shape;
  if (!lstm_persistent_forward_shape(a.B, a.H, &shape)) return std::nullopt;
  return shape;
}

}  // namespace fused_lstm::cuda
