// The variant op's CUDA forward and backward on checked arguments (lstm_variant_args.h):
// the buffers, the whole-sequence GEMMs (through ATen, on the arguments' device) and the
// time loops of variant_cuda_loops.h in between. ATen only (no c10/cuda headers): the
// binding (lstm_variant_cuda.cpp) checks the devices, picks the stream and the per-step
// GEMM, and calls these. They return exactly what the CPU binding returns for the same
// arguments (lstm_variant_cpu.cpp): outputs in the input's dtype, the same saved list.
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include <optional>
#include <tuple>
#include <vector>

#include "../lstm_variant_args.h"
#include "variant_cuda_loops.h"

namespace fused_lstm::cuda {

// y, h_n, c_n, cells, saved (ops.cpp, lstm_variant_forward).
using VariantForwardResult =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>;
// grad_x, grad_h0, grad_c0, grad_weights, grad_norm (ops.cpp, lstm_variant_backward).
using VariantBackwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor,
                                         std::vector<at::Tensor>, std::vector<at::Tensor>>;

// x: the op's input as given (its shape and dtype shape the outputs). T: v.compute's type.
template <typename T>
VariantForwardResult variant_forward_impl(const VariantArgs& v, const at::Tensor& x,
                                          bool reverse, bool need_backward,
                                          const RowGemm<T>& gemm, cudaStream_t stream);

template <typename T>
VariantBackwardResult variant_backward_impl(
    const VariantArgs& v, const at::Tensor& x, bool reverse, const at::Tensor& grad_y,
    const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
    const std::optional<at::Tensor>& grad_cells, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& y, const at::Tensor& cells, const std::vector<at::Tensor>& saved,
    const RowGemm<T>& gemm, cudaStream_t stream);

}  // namespace fused_lstm::cuda
