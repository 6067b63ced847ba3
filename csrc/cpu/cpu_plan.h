// How one call of the layer op runs on the CPU: the CPU backend's routing decisions,
// made once per call (per direction) from the layer's sizes and the Tuning
// (cpu_tuning.h). Every one of them is in cpu_plan.cpp.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "../lstm_layer_args.h"
#include "cpu_tuning.h"

namespace fused_lstm::cpu {

// How the threads share a time loop.
struct LoopSplit {
  int64_t threads = 1;   // threads on the loop (1: the calling thread alone)
  bool by_rows = false;  // they split the batch rows, each running the whole loop on its
                         // own rows with no barrier; else they split the hidden units and
                         // meet at a barrier every step
};

enum class BackwardRoute {
  kOwnRows,     // route 1: rows split; each thread turns its d(gates) into its rows of
                // grad_x and weight gradients of its own, summed at the end
  kOverlapped,  // route 2: the loop on one thread; a second turns each finished chunk of
                // steps into gradients meanwhile
  kBlocks,      // route 3: the loop (split as LoopSplit says), then each block's
                // gradient GEMMs split over all threads
};

struct ForwardPlan {
  bool bf16_operands;   // GEMM operands in bfloat16, accumulation in float (else every
                        // buffer in the compute dtype)
  bool input_per_step;  // x @ w_ih^T step by step inside the loop (else one GEMM over all
                        // steps before it)
  bool natural_weights; // one step: its GEMMs on the weights as they are (ATen's GEMMs,
                        // or ours by units: step_unit_chunk), with no blocked copy of
                        // them, and the pointwise pass on gates in nn.LSTM's order
  LoopSplit split;
  int64_t step_row_grain;  // one step: rows of the pointwise pass per thread's share
  int64_t step_unit_chunk; // one step with many rows: hidden units per task of the threads'
                           // split of the step (GEMMs with the weights as the A operand,
                           // then the pointwise pass); 0: ATen's GEMMs, then the pass by rows
};

struct BackwardPlan {
  bool bf16_operands;
  bool natural_weights;  // as the forward's: the one step's d(gates) in nn.LSTM's gate
                         // order and every GEMM on the weights as they are
  BackwardRoute route;
  LoopSplit split;     // the backward loop's (route 1: by rows; route 2: one thread)
  int64_t block_rows;  // rows of d(gates) turned into gradients at a time
  int64_t step_row_grain;  // as the forward's
};

// Threads of the variant op's loops (variant_loop.h), each running the whole sequence on
// batch rows of its own.
int64_t plan_variant_threads(const LayerArgs& a);

// dtype: the layer's (the input's) dtype.
ForwardPlan plan_forward(const LayerArgs& a, at::ScalarType dtype);
BackwardPlan plan_backward(const LayerArgs& a, at::ScalarType dtype);

}  // namespace fused_lstm::cpu
