// Pointwise kernels built for AVX512. Only the functions defined below the pragma
// use AVX512 instructions, and they are reached only after the runtime check in
// vector_kernels_dispatch.cpp, so the library still loads on older CPUs.
//
// Headers whose inline code must stay baseline are included before the pragma.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <type_traits>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/irange.h>

#include "vector_kernels.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2")
#include "avx2_feature_macros.h"
// and the macros of the target list's AVX512 entries:
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#include "vector_kernels_impl.h"

FUSED_LSTM_DEFINE_VARIANT(AVX512)
#else
namespace fused_lstm::cpu {
const VectorKernels<float>* vector_kernels_f32_AVX512() { return nullptr; }
const VectorKernels<double>* vector_kernels_f64_AVX512() { return nullptr; }
}  // namespace fused_lstm::cpu
#endif
