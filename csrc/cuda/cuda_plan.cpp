#include "cuda_plan.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

#include "cuda_blas.h"

namespace fused_lstm::cuda {

// The fused steps win while the recurrent product is small, cuBLAS above. On
// an H200 (benchmarks/NOTES.md, "CUDA: the two step routes"), training ran
// fused / with cuBLAS at these fractions of cuDNN's speed: B = 16 H = 128
// 0.27x / 0.06x, B = 128 H = 128 0.47x / 0.31x, B = 64 H = 256 1.19x / 1.01x,
// B = 64 H = 512 0.77x / 1.00x, B = 1 H = 1024 0.46x / 0.93x. At H = 512 and
// B = 1 the forward alone was 14% faster fused, the backward 18% slower.
// FUSED_LSTM_CUDA_STEP=fused|gemm overrides the choice (layers with a
// projection always take cuBLAS).
StepRoute step_route(const LayerArgs& a, bool backward) {
  const char* env = std::getenv("FUSED_LSTM_CUDA_STEP");
  const std::string want = env ? env : "";
  TORCH_CHECK(want.empty() || want == "fused" || want == "gemm",
              "fused_lstm: FUSED_LSTM_CUDA_STEP must be 'fused' or 'gemm', got '", want, "'");
  const StepRoute library = cublas_gemm_found() ? StepRoute::gemm : StepRoute::aten;
  if (a.has_proj || want == "gemm") return library;
  if (want == "fused") return StepRoute::fused;
  const bool small = a.H <= 256 && a.B <= 128;
  const bool one_row_forward = !backward && a.B == 1 && a.H <= 512;
  return small || one_row_forward ? StepRoute::fused : library;
}

}  // namespace fused_lstm::cuda
