// Picks the pointwise kernel table for this CPU, once.
#include "lstm_pointwise.h"

#include <ATen/Version.h>

#include <string>

namespace fused_lstm::cpu {

namespace {

// ATen's own verdict ("DEFAULT", "AVX2", "AVX512", ...): it checks the CPU and
// honours ATEN_CPU_CAPABILITY, so both libraries agree on what runs.
template <typename T, typename Getter>
const PointwiseKernels<T>& choose(Getter avx512, Getter avx2, Getter fallback) {
  const std::string cap = at::get_cpu_capability();
  const PointwiseKernels<T>* table = nullptr;
  if (cap == "AVX512") table = avx512();
  if (!table && (cap == "AVX512" || cap == "AVX2")) table = avx2();
  if (!table) table = fallback();
  return *table;
}

}  // namespace

template <>
const PointwiseKernels<float>& pointwise_kernels<float>() {
  static const PointwiseKernels<float>& table = choose<float>(
      &pointwise_kernels_f32_AVX512, &pointwise_kernels_f32_AVX2, &pointwise_kernels_f32_DEFAULT);
  return table;
}

template <>
const PointwiseKernels<double>& pointwise_kernels<double>() {
  static const PointwiseKernels<double>& table = choose<double>(
      &pointwise_kernels_f64_AVX512, &pointwise_kernels_f64_AVX2, &pointwise_kernels_f64_DEFAULT);
  return table;
}

}  // namespace fused_lstm::cpu
