// Picks the pointwise kernel table for this CPU, once.
#include "vector_kernels.h"

#include <ATen/Version.h>

#include <string>

namespace fused_lstm::cpu {

namespace {

// ATen's own verdict ("DEFAULT", "AVX2", "AVX512", ...): it checks the CPU and
// honours ATEN_CPU_CAPABILITY, so both libraries agree on what runs.
template <typename T, typename Getter>
const VectorKernels<T>& choose(Getter avx512, Getter avx2, Getter fallback) {
  const std::string cap = at::get_cpu_capability();
  const VectorKernels<T>* table = nullptr;
  if (cap == "AVX512") table = avx512();
  if (!table && (cap == "AVX512" || cap == "AVX2")) table = avx2();
  if (!table) table = fallback();
  return *table;
}

}  // namespace

template <>
const VectorKernels<float>& vector_kernels<float>() {
  static const VectorKernels<float>& table = choose<float>(
      &vector_kernels_f32_AVX512, &vector_kernels_f32_AVX2, &vector_kernels_f32_DEFAULT);
  return table;
}

template <>
const VectorKernels<double>& vector_kernels<double>() {
  static const VectorKernels<double>& table = choose<double>(
      &vector_kernels_f64_AVX512, &vector_kernels_f64_AVX2, &vector_kernels_f64_DEFAULT);
  return table;
}

}  // namespace fused_lstm::cpu
