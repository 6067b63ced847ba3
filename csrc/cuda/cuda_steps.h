// What the CUDA time loops of both ops share (lstm_cuda_loops.h, variant_cuda_loops.h):
// the steps of one layer direction and how a loop reports a failure. Torch-free.
#pragma once

#include <algorithm>
#include <cstdint>

#include <cuda_runtime.h>

namespace fused_lstm::cuda {

// The steps of one direction: step t owns rows [offset[t], offset[t] + rows[t]) of x, y,
// the gates and the cells (LayerArgs's layout, ../lstm_layer_args.h), walked from the last
// step to the first when reverse.
struct CudaSteps {
  int64_t T, B, I, H, Hout, N;
  const int64_t* offset;
  const int64_t* rows;
  bool reverse;
  // The time index of the k-th step the forward processes.
  int64_t time(int64_t k) const { return reverse ? T - 1 - k : k; }
  // How many of the k-th step's rows continue from the step processed before it (its rows
  // [0, rows_from_prev(k)), at the same row); the rest start from h0 and c0: all of the
  // first step's, and the rows a packed reverse layer gains.
  int64_t rows_from_prev(int64_t k) const {
    return k > 0 ? std::min(rows[time(k)], rows[time(k - 1)]) : 0;
  }
};

// What went wrong, if anything: the launch, copy or cuBLAS call that failed first, and its
// status (a CUDA error; for a cuBLAS call cudaErrorUnknown, with cuBLAS's status in blas).
struct LoopStatus {
  cudaError_t error = cudaSuccess;
  const char* what = nullptr;
  int blas = 0;  // a cublasStatus_t: CUBLAS_STATUS_SUCCESS is 0
  bool ok() const { return error == cudaSuccess; }
};

inline LoopStatus launch_status(cudaError_t error, const char* what) { return {error, what, 0}; }

// A cuBLAS call's status (cuda_blas.h: a cublasStatus_t, 0 when it succeeded).
inline LoopStatus blas_status(int status, const char* what) {
  return status == 0 ? LoopStatus{} : LoopStatus{cudaErrorUnknown, what, status};
}

// Inside a loop returning LoopStatus: stop at the first failed launch or copy (call returns
// cudaError_t), or cuBLAS call (FUSED_LSTM_TRY_BLAS: call returns cublasStatus_t), naming it.
#define FUSED_LSTM_TRY(call, name)                                                 \
  do {                                                                             \
    const cudaError_t err_ = (call);                                               \
    if (err_ != cudaSuccess) return ::fused_lstm::cuda::launch_status(err_, name); \
  } while (0)
#define FUSED_LSTM_TRY_BLAS(call, name)                                            \
  do {                                                                             \
    const ::fused_lstm::cuda::LoopStatus status_ =                                 \
        ::fused_lstm::cuda::blas_status(static_cast<int>(call), name);             \
    if (!status_.ok()) return status_;                                             \
  } while (0)

}  // namespace fused_lstm::cuda
