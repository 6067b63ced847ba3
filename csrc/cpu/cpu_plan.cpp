#include "cpu_plan.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "gate_layout.h"

namespace fused_lstm::cpu {

namespace {

// bfloat16 calls multiply bfloat16 GEMM operands where the CPU has AVX512_BF16 (and no
// switch or cap says otherwise); with a projection, or elsewhere, they run in float32.
bool bf16_operands(const LayerArgs& a, at::ScalarType dtype) {
  return dtype == at::kBFloat16 && !a.has_proj && tuning().bf16_gemm;
}

// Bytes of one GEMM operand element: bfloat16, or the compute dtype (float for float16).
int64_t operand_bytes(at::ScalarType dtype, bool bf16) {
  return bf16 ? 2 : dtype == at::kDouble ? 8 : 4;
}

// Threads that share a step: all of them (at most one per gate chunk) from min_macs
// multiply-adds per step, and none inside another parallel region (the two directions
// of a bidirectional layer each run on a thread of their own).
int64_t step_threads(const LayerArgs& a, int64_t min_macs) {
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), chunk_count(a.H));
  const int64_t macs = a.B * 4 * a.H * a.Hout;
  if (threads <= 1 || macs < min_macs || at::in_parallel_region()) return 1;
  return threads;
}

// By batch rows where w_hh^T fits each core's L2 and every thread gets enough rows to
// keep the GEMM tile busy; else by hidden units.
LoopSplit loop_split(const LayerArgs& a, int64_t min_macs, int64_t operand) {
  const int64_t threads = step_threads(a, min_macs);
  const int64_t w_hh_bytes = operand * a.Hout * 4 * a.H;
  const bool by_rows = threads > 1 && w_hh_bytes <= Tuning::kMaxRowSplitWeightBytes &&
                       a.B >= Tuning::kMinRowsPerThread * threads;
  return {threads, by_rows};
}

// A call of one step (streaming: T = 1, carrying the state) spends more on the blocked
// copies of the weights than on its GEMMs, which read each weight once: it runs them on
// the weights as they are. Every dtype computed in float or double (float16, and bfloat16
// where its GEMM operands are not bfloat16, included); bfloat16 operands and projections
// keep the blocked route.
bool natural_weights(const LayerArgs& a, bool bf16) {
  return a.T <= Tuning::kMaxNaturalWeightSteps && a.T > 0 && !bf16 && !a.has_proj;
}

// The one-step route's pointwise pass: rows per thread's share, so that a share holds at
// least kMinParallelStepCells cells (fewer rows than two shares: the calling thread alone).
int64_t step_row_grain(const LayerArgs& a) {
  return std::max<int64_t>(1, Tuning::kMinParallelStepCells / std::max<int64_t>(a.H, 1));
}

// The one-step route by hidden units (the threads split the units, our GEMMs take the
// weights as their A operand), where it measured faster than ATen's GEMMs on the weights
// as they are: from kMinRowsForUnitStep batch rows, or kMinRowsForUnitStepLarge where the
// weights are large (fewer rows: ATen's GEMMs stream the weights faster); up to
// kMaxRowsForUnitStep rows, kMaxRowsForUnitStepAvx512 for float on AVX-512 (past them
// ATen's GEMMs win). Never where the BLAS serves our GEMMs. Its units per task, or 0.
int64_t step_unit_chunk(const LayerArgs& a, at::ScalarType dtype) {
  const Tuning& t = tuning();
  if (t.step_unit_chunk >= 0) return t.step_unit_chunk;
  const bool f64 = dtype == at::kDouble;
  if ((f64 ? t.f64_gemm : t.f32_gemm) == GemmKernel::kBlas) return 0;
  const int64_t weight_bytes = (f64 ? 8 : 4) * 4 * a.H * (a.I + a.Hout);
  const int64_t min_rows = weight_bytes > Tuning::kLargeStepWeightBytes
                               ? Tuning::kMinRowsForUnitStepLarge
                               : Tuning::kMinRowsForUnitStep;
  const int64_t max_rows = !f64 && t.isa == VectorIsa::kAvx512 ? Tuning::kMaxRowsForUnitStepAvx512
                                                               : Tuning::kMaxRowsForUnitStep;
  if (a.B < min_rows || a.B > max_rows) return 0;
  // Tasks of kStepUnitChunk units, smaller where H would leave a thread without one
  // (whole vectors of 16 units).
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t per_thread = (a.H + threads - 1) / threads;
  return std::clamp<int64_t>((per_thread + 15) / 16 * 16, 16, Tuning::kStepUnitChunk);
}

}  // namespace

ForwardPlan plan_forward(const LayerArgs& a, at::ScalarType dtype) {
  const bool bf16 = bf16_operands(a, dtype);
  const bool natural = natural_weights(a, bf16);
  // The one-step route has no loop: ATen's GEMMs (threaded inside), then the pointwise
  // pass shared out by step_row_grain; or one parallel region by units (step_unit_chunk).
  const LoopSplit split =
      natural ? LoopSplit{}
              : loop_split(a, Tuning::kMinParallelForwardStepMacs, operand_bytes(dtype, bf16));
  return {bf16, a.B >= Tuning::kMinRowsForStepInput && !natural, natural, split,
          step_row_grain(a), natural ? step_unit_chunk(a, dtype) : 0};
}

BackwardPlan plan_backward(const LayerArgs& a, at::ScalarType dtype) {
  const bool bf16 = bf16_operands(a, dtype);
  const int64_t operand = operand_bytes(dtype, bf16);
  const int64_t accumulate = bf16 ? 4 : operand;
  const LoopSplit split = loop_split(a, Tuning::kMinParallelBackwardStepMacs, operand);
  const int64_t G = 4 * a.H;
  BackwardRoute route = BackwardRoute::kBlocks;
  if (split.by_rows && (a.I + a.Hout) * G * accumulate <= Tuning::kMaxOwnWeightGradientBytes) {
    route = BackwardRoute::kOwnRows;
  } else if (at::get_num_threads() >= 2 && !at::in_parallel_region() && split.threads == 1 &&
             operand * G * a.Hout <= Tuning::kMaxRowSplitWeightBytes &&
             a.N * G * (a.I + 2 * a.Hout) >= Tuning::kMinOverlapMacs) {
    route = BackwardRoute::kOverlapped;
  }
  return {bf16, natural_weights(a, bf16), route, split, Tuning::kBackwardBlockRows,
          step_row_grain(a)};
}

int64_t plan_variant_threads(const LayerArgs& a) {
  const int64_t threads = step_threads(a, Tuning::kMinParallelForwardStepMacs);
  return std::max<int64_t>(1, std::min(threads, a.B / Tuning::kMinRowsPerThread));
}

}  // namespace fused_lstm::cpu
