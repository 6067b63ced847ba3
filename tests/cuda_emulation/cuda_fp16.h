// A stand-in for <cuda_fp16.h> in the CPU emulation of the CUDA code: __half is c10::Half,
// whose conversion from float rounds to nearest even as __float2half_rn does.
#pragma once

#include <c10/util/Half.h>

using __half = c10::Half;
inline __half __float2half_rn(float v) { return c10::Half(v); }
