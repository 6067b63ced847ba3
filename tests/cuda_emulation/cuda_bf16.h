// A stand-in for <cuda_bf16.h> in the CPU emulation of the CUDA code: __nv_bfloat16 is
// c10::BFloat16, whose conversion from float rounds to nearest even as
// __float2bfloat16_rn does.
#pragma once

#include <c10/util/BFloat16.h>

using __nv_bfloat16 = c10::BFloat16;
inline __nv_bfloat16 __float2bfloat16_rn(float v) { return c10::BFloat16(v); }
