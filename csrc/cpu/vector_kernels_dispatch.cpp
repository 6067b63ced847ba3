// Picks the pointwise kernel table for this CPU, once.
#include "vector_kernels.h"

#include "cpu_tuning.h"

namespace fused_lstm::cpu {

namespace {

// The instruction set cpu_tuning.cpp chose (ATen's verdict, which honours
// ATEN_CPU_CAPABILITY, capped by ONEDNN_MAX_CPU_ISA), or the next one below
// it that this build holds.
template <typename T, typename Getter>
const VectorKernels<T>& choose(Getter avx512, Getter avx2, Getter fallback) {
  const VectorIsa isa = tuning().isa;
  const VectorKernels<T>* table = nullptr;
  if (isa == VectorIsa::kAvx512) table = avx512();
  if (!table && isa >= VectorIsa::kAvx2) table = avx2();
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
