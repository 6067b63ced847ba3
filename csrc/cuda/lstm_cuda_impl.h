// The CUDA forward and backward of one layer direction (lstm_layer_args.h checks the
// arguments): the buffers, the whole-sequence GEMMs (through ATen, on the
// arguments' device) and the time loops of lstm_cuda_loops.h in between, on the route
// cuda_plan.cpp picks. ATen only (no c10/cuda headers): the binding (lstm_cuda.cpp) checks
// the devices and hands in the stream and the cuBLAS handle. They produce the same buffers
// with the same meaning as the CPU binding (lstm_cpu.cpp), except that the saved gates keep
// the natural i, f, g, o column order.
//
// float16/bfloat16 inputs run in float32 (gates, cells, the recurrent state and all
// accumulation) and are rounded to the input dtype on the way out. acc_t: float or double.
#pragma once

#include <ATen/ATen.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <optional>

#include "../lstm_layer_args.h"
#include "../lstm_layer_directions.h"

namespace fused_lstm::cuda {

// One direction's forward (the op's shapes for one direction, csrc/ops.cpp): h0 [B, Hout],
// c0 [B, H], w its weights. Checks the shapes (check_layer_args), then runs in acc_t
// double for float64 layers, float otherwise.
DirectionForward forward_direction(const at::Tensor& x,
                                   const std::optional<at::Tensor>& batch_sizes,
                                   const at::Tensor& h0, const at::Tensor& c0,
                                   const DirectionWeights& w, bool reverse, bool need_backward,
                                   cublasHandle_t blas, cudaStream_t stream);

// One direction's backward: h0, grad_h_n [B, Hout]; c0, grad_c_n [B, H]; y, gates, cells
// what its forward returned.
DirectionBackward backward_direction(const at::Tensor& grad_y, const at::Tensor& grad_h_n,
                                     const at::Tensor& grad_c_n, const at::Tensor& x,
                                     const std::optional<at::Tensor>& batch_sizes,
                                     const at::Tensor& h0, const at::Tensor& c0,
                                     const DirectionWeights& w, const at::Tensor& y,
                                     const at::Tensor& gates, const at::Tensor& cells,
                                     bool reverse, cublasHandle_t blas, cudaStream_t stream);

}  // namespace fused_lstm::cuda
