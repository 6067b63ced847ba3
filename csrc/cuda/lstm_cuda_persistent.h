// The persistent forward of one LSTM layer direction: one launch runs the recurrence of
// all T steps, on sm_90 thread-block clusters that hand h between their CTAs through
// distributed shared memory (lstm_cuda_persistent.cu). Not chosen by the route chooser:
// only FUSED_LSTM_CUDA_STEP=persistent asks for it (cuda_plan.cpp), and it has not yet
// run on a GPU (benchmarks/NOTES.md, "The persistent kernel: written, not yet run").
//
// Like lstm_cuda_kernels.h, this header and its .cu depend on the CUDA toolkit only (no
// torch headers); the caller runs the input-projection GEMM and hands raw device pointers
// in. Index arithmetic is 64-bit.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace fused_lstm::cuda {

// How the persistent forward lays one layer direction out on the GPU.
struct PersistentForwardShape {
  int units_per_cta = 0;     // hidden units each CTA owns, all four gate rows of them (8 or 16)
  int cluster_size = 0;      // CTAs per cluster: H / units_per_cta (1..16; above 8 non-portable)
  int rows_per_cluster = 0;  // batch rows each cluster runs, padded to 4 or 8
  int clusters = 0;          // independent clusters, each a slice of the batch
  size_t smem_bytes = 0;     // dynamic shared memory per CTA
};

// Whether the persistent forward can run a float32 layer direction (no projection, dense
// input) of batch B and hidden size H on the current device, and if so how (*shape).
// Takes 1 <= B <= 16, and H <= 128 a multiple of 8 or 128 < H <= 256 a multiple of 16; a
// device of compute capability 9.0 or above running the kernel's sm_90 code (not PTX of an
// older architecture); the shared memory and cluster size that the device accepts
// (cudaOccupancyMaxActiveClusters >= 1). Returns false otherwise, with no CUDA error left
// behind (a failed query's error is cleared).
bool lstm_persistent_forward_shape(int64_t B, int64_t H, PersistentForwardShape* shape);

// The recurrence of one layer direction, all T steps in one launch on `stream`, with the
// shape lstm_persistent_forward_shape gave for (B, H) on this device.
//
// In:  pre   [T, B, 4H]  x W_ih^T + b_ih + b_hh of every step (gate order i, f, g, o),
//                        time-major; step t's rows start at t * B * 4H.
//      w_hh  [4H, H]     row-major.
//      h0    [B, H]      c0 [B, H]
// Out: y     [T, B, H]   h of every step (at its time index: reverse walks t = T-1 .. 0).
//      pre   <- activated gates i, f, g, o of every step, in place (only if save_gates).
//      cells [T, B, H]   c of every step, or null.
//      h_n   [B, H]      c_n [B, H]: h and c after the last step processed.
// h_n may alias h0 and c_n may alias c0: every CTA of a cluster reads its rows of h0 and
// c0 before the cluster's first barrier, and one thread writes each element of h_n and c_n
// after the last step; clusters own disjoint rows. No other buffers may overlap.
// T == 0 or B == 0 launches nothing and returns cudaSuccess (h_n, c_n untouched). Returns
// the launch status, not the kernel's completion; cudaErrorInvalidValue if the shape does
// not match (B, H).
cudaError_t lstm_persistent_forward(const PersistentForwardShape& shape, int64_t T, int64_t B,
                                    int64_t H, bool reverse, float* pre, const float* w_hh,
                                    const float* h0, const float* c0, float* y, float* cells,
                                    float* h_n, float* c_n, bool save_gates,
                                    cudaStream_t stream);

}  // namespace fused_lstm::cuda
