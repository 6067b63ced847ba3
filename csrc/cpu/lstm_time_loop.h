// The CPU time loops of one LSTM layer direction, on raw row-major buffers.
//
// The binding (lstm_cpu.cpp) does the whole-sequence work around the forward
// loop (the input projection of all steps where it runs before the loop);
// lstm_backward holds the backward loop and the gradient GEMMs of its blocks.
// How the threads share them the plan of the call says (cpu_plan.h).
// The loops hold what must run step by step, with no allocation inside.
//
// Gate columns are in the blocked order of gate_layout.h.
//
// The loops are templates on In, the type of the GEMM operands (x, h, the
// weights, d(gates)); gates, cells and the recurrent gradients are in
// T = Acc<In>. In = float or double: everything in one type. In = bfloat16:
// the GEMMs multiply bfloat16 operands (weights pair-packed, see
// gemm_kernels.h) into float, h is rounded to bfloat16 as it is written to y, and
// d(gates) as it is written for the GEMMs; no projection on this route.
#pragma once

#include "../lstm_layer_args.h"
#include "cpu_gemm.h"
#include "cpu_plan.h"
#include "gate_layout.h"

namespace fused_lstm::cpu {

// The input projection x_t @ w_ih^T is either precomputed for all steps in
// `gates` (x null), or computed step by step inside the loop (x given), which
// keeps the gate buffer in cache and, when nothing is saved, one step long.
template <typename In, typename T = Acc<In>>
struct ForwardLoop {
  const In* x;       // [N, I], or null when gates already hold x @ w_ih^T
  const In* w_ih_t;  // [I, 4H] w_ih^T, blocked columns in panels of 128 columns (with x)
  const In* w_hh_t;  // [Hout, 4H] w_hh^T, the same
                     // (gate_rows_to_panels in gate_layout.h, gemm_nn_panels in cpu_gemm.h)
  const T* w_hr_t;   // [H, Hout]  w_hr^T, or null
  const T* bias;     // [4H] blocked, b_ih + b_hh, or null
  const In* h0;      // [B, Hout]
  T* gates;         // [N, 4H] blocked (or [B, 4H] for one step at a time, see below).
                    // in: x @ w_ih^T unless x is given; out: activated gates if saving
  bool gates_all_steps;  // gates has a row block per step (else one, reused)
  T* c;             // [B, H]    in: c0; out: c_n
  In* y;            // [N, Hout] out: h of every step
  T* cells;         // [N, H] out: c after every step, or null (inference)
  T* h_raw;         // [B, H] workspace when projecting, else null
};

// forward_loop.cpp; split: the plan's (cpu_plan.h).
template <typename In>
void lstm_forward_loop(const LayerArgs& a, bool reverse, const LoopSplit& split,
                       const ForwardLoop<In>& f);

template <typename In, typename T = Acc<In>>
struct BackwardLoop {
  const In* w_hh;   // [4H, Hout] blocked rows
  const T* w_hr;    // [Hout, H] or null
  const T* grad_y;  // [N, Hout]
  const T* gates;   // [N, 4H] blocked, activated gates saved by forward
  const T* cells;   // [N, H] cell states saved by forward
  const T* c0;      // [B, H]
  T* dh;            // [B, Hout] in: grad_h_n; out: grad_h0
  T* dc;            // [B, H]    in: grad_c_n; out: grad_c0
  In* dgates;       // [rows of a block, 4H] blocked. out: dL/d(gate pre-activations);
                    // step t's rows land from row block_row[t] on (set by lstm_backward)
  const int64_t* block_row;
  T* dh_total;      // [N, Hout] out: dL/dh of every step (projection only), else null
  T* dh_raw;        // [B, H] workspace (projection only), else null
};

// What backward turns d(gates) into, block by block.
template <typename In, typename T = Acc<In>>
struct BackwardGradients {
  const In* x;        // [N, I]
  const In* y;        // [N, Hout] h of every step (h_prev of the next)
  const In* h0;       // [B, Hout]
  const In* w_ih;     // [4H, I] blocked rows (pair-packed for bfloat16), the B of dgates @ w_ih
  T* grad_x;          // [N, I] out
  T* grad_w_ih_t;     // [I, 4H] blocked columns, out
  T* grad_w_hh_t;     // [Hout, 4H] blocked columns, out
  T* grad_bias;       // [4H] blocked, in: zeros; out: column sums of d(gates); null without bias
};

// The backward of the whole sequence (backward_loop.cpp): the steps, from the last back
// to the first, in blocks of about plan.block_rows rows, each block's d(gates) turned into
// gradients while it is still in cache, by the plan's route. b.dgates and b.block_row
// are set here.
template <typename In>
void lstm_backward(const LayerArgs& a, bool reverse, const BackwardPlan& plan,
                   const BackwardLoop<In>& b, const BackwardGradients<In>& g);

// out: [B, width], each row's value after its last step, gathered from seq: [N, width].
template <typename T>
void gather_last_rows(const LayerArgs& a, bool reverse, const T* seq, int64_t width, T* out);

// h_n: [B, Hout], each row's state after its last step, gathered from y: [N, Hout].
template <typename T>
void gather_final_hidden(const LayerArgs& a, bool reverse, const T* y, T* h_n) {
  gather_last_rows(a, reverse, y, a.Hout, h_n);
}

// Time index of the k-th step a direction processes.
inline int64_t step_time(const LayerArgs& a, bool reverse, int64_t k) {
  return reverse ? a.T - 1 - k : k;
}

}  // namespace fused_lstm::cpu
