// A stand-in for <cuda_runtime.h> that runs the CUDA code of both ops on the CPU, for
// tests/test_cuda_emulated.py and tests/test_cuda_variant_emulated.py on machines without
// a GPU: every "device" pointer is host memory, a stream is nothing, a copy is memcpy, and
// a kernel launch runs its thread blocks one after the other, each block's threads as real
// threads (so __syncthreads is a barrier, __shared__ memory is shared by the block, and a
// warp shuffle exchanges values through memory). tests/cuda_emulation/build.py rewrites
// `kernel<<<grid, block, shmem, stream>>>(args)` in a copy of each .cu file into
// fused_lstm_emulate_launch(grid, block, shmem, stream, kernel, args). This checks the
// arithmetic, the indexing and the synchronisation the kernels ask for (a missing
// __syncthreads can still pass here), not speed, and nothing of the GPU itself (memory
// model, launch limits, the toolkit's math functions).
#pragma once

#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorUnknown = 999 };
enum cudaMemcpyKind { cudaMemcpyDeviceToDevice = 3 };
struct CUstream_st;
using cudaStream_t = CUstream_st*;

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx;
inline dim3 blockIdx, blockDim, gridDim;
inline std::barrier<>* fused_lstm_emulated_barrier = nullptr;
inline std::vector<double> fused_lstm_emulated_lanes;  // one value per thread of the block

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "an emulated CUDA error"; }
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind,
                                   cudaStream_t) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

inline void __syncthreads() { fused_lstm_emulated_barrier->arrive_and_wait(); }

inline unsigned fused_lstm_emulated_thread() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

// Every thread of the block calls it together (as every shuffle in the kernels it runs
// is): the values go through memory between two barriers. float and double round-trip
// through double exactly.
template <typename T>
T __shfl_xor_sync(unsigned, T v, int lane_mask) {
  const unsigned me = fused_lstm_emulated_thread();
  fused_lstm_emulated_lanes[me] = static_cast<double>(v);
  __syncthreads();
  const T other = static_cast<T>(fused_lstm_emulated_lanes[me ^ static_cast<unsigned>(lane_mask)]);
  __syncthreads();
  return other;
}

template <typename Kernel, typename... Args>
void fused_lstm_emulate_launch(dim3 grid, dim3 block, size_t, cudaStream_t, Kernel kernel,
                               Args... args) {
  gridDim = grid;
  blockDim = block;
  const unsigned n = block.x * block.y * block.z;
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = dim3(bx, by, bz);
        std::barrier<> barrier(n);
        fused_lstm_emulated_barrier = &barrier;
        fused_lstm_emulated_lanes.assign(n, 0.0);
        std::vector<std::thread> threads;
        threads.reserve(n);
        for (unsigned tz = 0; tz < block.z; ++tz) {
          for (unsigned ty = 0; ty < block.y; ++ty) {
            for (unsigned tx = 0; tx < block.x; ++tx) {
              threads.emplace_back([=] {
                threadIdx = dim3(tx, ty, tz);
                kernel(args...);
              });
            }
          }
        }
        for (std::thread& t : threads) t.join();
      }
    }
  }
}
