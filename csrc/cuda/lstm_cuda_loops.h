// The CUDA time loops of one layer direction of the layer op (lstm_layer_forward/backward,
// ops.cpp), on raw device buffers, on `stream`: each step's kernel launches and cuBLAS calls
// on the route the plan gives (cuda_plan.h), with the recurrent state, the cells and the
// gates in acc_t (float for float, half and bfloat16 layers; double). Torch-free: the impl
// (lstm_cuda_forward.cpp, lstm_cuda_backward.cpp) allocates the buffers, runs the
// whole-sequence GEMMs around the loops (x @ w_ih^T before the forward loop; grad_x and
// the weight gradients after the backward loop) and fills these structs. Each loop returns
// the first failed launch, copy or cuBLAS call and stops there.
//
// Gate columns are in PyTorch's order i, f, g, o (unlike the CPU loops' blocked order).
#pragma once

#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "cuda_steps.h"
#include "lstm_cuda_persistent.h"

namespace fused_lstm::cuda {

// How a time loop runs its recurrent products (chosen in cuda_plan.cpp).
enum class StepRoute {
  fused,  // our step kernels with the product inside (no projection): one launch per step
  gemm,   // a cuBLAS GEMM per step, then the pointwise kernel
};

// The element type of y, the layer's output.
enum class OutType { f32, f64, f16, bf16 };

template <typename acc_t>
struct CudaForwardLoop {
  StepRoute route;
  // The persistent forward's layout (lstm_cuda_persistent.h; float32 layers without a
  // projection on dense input), or null: the route's time loop runs.
  const PersistentForwardShape* persistent;
  OutType out;
  bool need_backward;  // save the activated gates and the cells
  acc_t* gates;        // [N, 4H]: x @ w_ih^T + biases in, activated gates out (need_backward)
  const acc_t* h0;     // [B, Hout], a copy of h's initial contents (read while h is written)
  acc_t* h;            // [B, Hout]: h0 in, h_n out
  acc_t* c;            // [B, H]: c0 in, c_n out
  acc_t* cells;        // [N, H] out, or null (inference)
  void* y;             // [N, Hout] out, in `out`
  // [N, Hout] h of every step in acc_t, where y is not in acc_t (else null: y serves): the
  // fused route reads each step's h_prev from it; the gemm route with a projection writes
  // h there, and the caller rounds it into y after the loop.
  acc_t* hist;
  const acc_t* w_hh;   // [4H, Hout] (null where w_hh_16bit serves)
  const acc_t* w_hr;   // [Hout, H] with a projection, else null
  acc_t* h_raw;        // [B, H] scratch with a projection, else null
  // float16/bfloat16 layers whose recurrent products run on tensor cores (gemm route, no
  // projection; FUSED_LSTM_CUDA_16BIT_GEMM), else null: w_hh [4H, Hout] and h0 [B, Hout] in
  // the layer's type `out`. Each step's product then multiplies h rounded to 16 bits: y's
  // rows of the previous step, and h0's for rows that start at this step.
  const void* w_hh_16bit;
  const void* h0_16bit;
};

// One direction's forward (lstm_cuda_forward_loop.cpp).
template <typename acc_t>
LoopStatus lstm_cuda_forward_loop(const CudaSteps& s, const CudaForwardLoop<acc_t>& f,
                                  cublasHandle_t blas, cudaStream_t stream);

template <typename acc_t>
struct CudaBackwardLoop {
  StepRoute route;
  const acc_t* gates;   // [N, 4H] activated gates saved by forward
  const acc_t* cells;   // [N, H] cell states saved by forward
  const acc_t* c0;      // [B, H]
  const acc_t* gy;      // [N, Hout] grad_y
  acc_t* dh;            // [B, Hout]: grad_h_n in, grad_h0 out
  acc_t* dc;            // [B, H]: grad_c_n in, grad_c0 out
  acc_t* dgates;        // [N, 4H] out: dL/d(gate pre-activations)
  const acc_t* w_hh;    // [4H, Hout]
  const acc_t* w_hh_t;  // [Hout, 4H] w_hh transposed (fused route), else null
  // [B, 4H] scratch for the d(gates) of each row's last step (fused route of a packed
  // reverse layer, whose rows leave the loop at different steps), else null.
  acc_t* dg_last;
  const acc_t* w_hr;    // [Hout, H] with a projection, else null
  acc_t* dh_total;      // [N, Hout] out with a projection: dL/dh of every step, else null
  acc_t* dh_raw;        // [B, H] scratch with a projection, else null
};

// One direction's backward through time (lstm_cuda_backward_loop.cpp): d(gates) of every
// step, grad_h0 and grad_c0 (and dh_total with a projection).
template <typename acc_t>
LoopStatus lstm_cuda_backward_loop(const CudaSteps& s, const CudaBackwardLoop<acc_t>& b,
                                   cublasHandle_t blas, cudaStream_t stream);

}  // namespace fused_lstm::cuda
