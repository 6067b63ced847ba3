// Included right after `#pragma GCC target("avx2,fma,f16c,bmi,bmi2...")` in a
// vector_kernels_<isa>.cpp: the pragma does not define the feature macros that
// sleef.h and ATen's vec headers test, so this defines the ones of the AVX2
// level. The AVX512 file adds its own four after it. No include guard: each
// including file wants the definitions at that point.
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#ifndef __BMI__
#define __BMI__ 1
#endif
#ifndef __BMI2__
#define __BMI2__ 1
#endif
