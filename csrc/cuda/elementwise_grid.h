// The [rows, cols] element grid of the pointwise CUDA kernels (lstm_cuda_kernels.cu,
// variant_cuda_kernels.cu): threadIdx.x/blockIdx.x over the columns (so a warp touches
// consecutive addresses of one row), threadIdx.y/blockIdx.y over the rows, both with
// grid-stride loops so any size fits the grid limits. CUDA only (no torch headers).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace fused_lstm::cuda {

// The largest grid dimension y (and the one launch_shape also keeps x within).
constexpr int64_t kMaxGridDim = 65535;

struct LaunchShape {
  dim3 grid;
  dim3 block;
};

// Block: up to 256 threads along the columns (rounded up to a warp multiple),
// the rest of the 256 along the rows, so narrow layers still fill a block.
inline LaunchShape launch_shape(int64_t rows, int64_t cols) {
  constexpr int64_t kThreadsPerBlock = 256;
  const int64_t bx = std::min<int64_t>(kThreadsPerBlock, (cols + 31) / 32 * 32);
  const int64_t by = kThreadsPerBlock / bx;
  const int64_t gx = std::min<int64_t>((cols + bx - 1) / bx, kMaxGridDim);
  const int64_t gy = std::min<int64_t>((rows + by - 1) / by, kMaxGridDim);
  return {dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)),
          dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by))};
}

// The grid-stride loops' starts and steps, in int64_t (T * B * 4H may exceed 2^31).
__device__ __forceinline__ int64_t first_row() {
  return static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y;
}
__device__ __forceinline__ int64_t row_step() {
  return static_cast<int64_t>(gridDim.y) * blockDim.y;
}
__device__ __forceinline__ int64_t first_col() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t col_step() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

}  // namespace fused_lstm::cuda
