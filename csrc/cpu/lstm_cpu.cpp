// CPU binding of the fused_lstm ops: turns tensors into the forward time loop
// (forward_loop.cpp) and the backward (backward_loop.cpp), both declared in
// lstm_time_loop.h, with the forward's whole-sequence input GEMM and the weight
// layouts around them.
//
// float16 inputs run in float32 (gates, cells and accumulation) and are
// rounded back to float16 on the way out. bfloat16 inputs do the same where the
// CPU lacks AVX512_BF16 or the layer projects; elsewhere their GEMMs multiply
// bfloat16 operands into float32 (the route of lstm_time_loop.h), as nn.LSTM's
// oneDNN kernels do. The saved gates and cells are float32 either way, in the
// blocked column order of gate_layout.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../lstm_layer_args.h"
#include "../lstm_layer_directions.h"
#include "cpu_gemm.h"
#include "cpu_plan.h"
#include "gate_layout.h"
#include "lstm_time_loop.h"
#include "vector_kernels.h"

namespace fused_lstm::cpu {

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// A fresh buffer of many MiB costs a page fault per 4 KiB on first touch. Where the
// kernel gives transparent huge pages on request, ask for them: one fault per 2 MiB
// (NOTES.md row 6).
Tensor with_huge_pages(Tensor t) {
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t end = begin + t.nbytes();
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1), last = end & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  return t;
}

void check_cpu(const Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), "fused_lstm CPU kernel: expected tensors on the CPU, got ",
              x.device());
}

// w: [4H, K] natural rows -> [4H, K] blocked rows, the B operand of
// dgates @ w. bfloat16: pair-packed, [2H, K] words.
template <typename In>
Tensor rows_operand(const Tensor& w, int64_t H) {
  const int64_t K = w.size(1), G = 4 * H;
  const Tensor src = as_compute(w, c10::CppTypeToScalarType<In>::value);
  Tensor blocked = at::empty({G, K}, src.options());
  gate_rows_to_blocked<In>(src.data_ptr<In>(), H, K, blocked.data_ptr<In>());
  if constexpr (std::is_same_v<In, c10::BFloat16>) {
    Tensor out = at::empty({G / 2, 2 * K}, src.options());
    pack_row_pairs(reinterpret_cast<const uint16_t*>(blocked.data_ptr()), K, G, K,
                   reinterpret_cast<uint32_t*>(out.data_ptr()), K);
    return out;
  } else {
    return blocked;
  }
}

// w: [4H, K] natural rows -> w^T: [K, 4H] in blocked columns, the B operand of
// x @ w^T, stored as one [K, 128] panel per gate chunk (gate_layout.h).
// bfloat16: pair-packed, K rows become ceil(K/2) rows of words; a word holds
// two neighbours of a row of w, so this is the transpose of w read as 32-bit
// words (w padded to an even width), moved bit for bit.
//
// Panels, not a plain w^T: a plain w^T has 4H elements per row, so the block
// of it a thread multiplies each step is many short runs 4H apart; a panel
// streams as one run, and is cheaper to write (NOTES.md rows 18 and 36). So the
// whole-sequence input GEMM of small batches takes panels as well.
template <typename In>
Tensor transposed_operand(const Tensor& w, int64_t H) {
  constexpr bool pairs = std::is_same_v<In, c10::BFloat16>;
  using Word = std::conditional_t<pairs, float, In>;  // the unit moved
  const int64_t K = w.size(1), rows = panel_rows<In>(K);
  const auto it = c10::CppTypeToScalarType<In>::value;
  const Tensor src = pairs && K % 2 ? at::constant_pad_nd(w.to(it), {0, 1}) : as_compute(w, it);
  Tensor out = at::empty({chunk_count(H), rows, kColumnStride<In> * kPanelWidth}, src.options());
  gate_rows_to_panels<Word>(reinterpret_cast<const Word*>(src.data_ptr()), H, rows,
                            reinterpret_cast<Word*>(out.data_ptr()));
  return out;
}

template <typename In>
DirectionForward forward_impl(
    const LayerArgs& a, const ForwardPlan& plan, const Tensor& x, const Tensor& h0,
    const Tensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    bool reverse, bool need_backward) {
  using AccT = Acc<In>;
  const auto dt = x.scalar_type();
  const auto ct = c10::CppTypeToScalarType<AccT>::value;   // gates, cells
  const auto it = c10::CppTypeToScalarType<In>::value;  // GEMM operands, h
  const auto opts = x.options().dtype(ct);
  const int64_t G = 4 * a.H;
  const Tensor x2 = as_compute(x, it).view({a.N, a.I});  // [N, I]
  // With enough rows per step the input projection runs inside the time loop,
  // step by step, so inference needs a gate buffer one step long; at small batch
  // one GEMM over all steps comes first (the plan says which).
  const bool input_per_step = plan.input_per_step;
  // [I, 4H] w_ih^AccT and [Hout, 4H] w_hh^AccT, blocked columns in panels
  const Tensor w_ih_t = transposed_operand<In>(w_ih, a.H);
  const Tensor w_hh_t = transposed_operand<In>(w_hh, a.H);
  const Tensor w_hr_t = a.has_proj ? as_compute(*w_hr, ct).t().contiguous() : Tensor();
  const Tensor bias = a.has_bias ? at::empty({G}, opts) : Tensor();  // [4H] blocked
  const Tensor h0_c = as_compute(h0, it);
  const bool gates_all_steps = need_backward || !input_per_step;
  // gates: [N or B, 4H]
  Tensor gates = with_huge_pages(at::empty({gates_all_steps ? a.N : a.B, G}, opts));
  Tensor c = fresh(c0, ct);                  // c: [B, H], becomes c_n
  Tensor y = with_huge_pages(at::empty({a.N, a.Hout}, x.options().dtype(it)));  // y: [N, Hout]
  Tensor h_n = fresh(h0, it);                // h_n: [B, Hout]
  Tensor cells = with_huge_pages(at::empty({need_backward ? a.N : 0, a.H}, opts));  // [N, H]
  const Tensor h_raw = a.has_proj ? at::empty({a.B, a.H}, opts) : Tensor();  // [B, H]

  if (a.has_bias) {
    const Tensor bi = as_compute(*b_ih, ct), bh = as_compute(*b_hh, ct);
    const AccT* pi = bi.data_ptr<AccT>();
    const AccT* ph = bh.data_ptr<AccT>();
    AccT* pb = bias.data_ptr<AccT>();
    for (int64_t col = 0; col < G; ++col) {
      const int64_t row = natural_gate_row(a.H, col);
      pb[col] = pi[row] + ph[row];
    }
  }
  if (!input_per_step) {
    // gates = x @ w_ih^AccT for all steps at once; the bias is added in the pointwise pass.
    parallel_gemm_nn_panels<In>(a.N, G, a.I, x2.data_ptr<In>(), a.I, w_ih_t.data_ptr<In>(),
                                gates.data_ptr<AccT>(), G, false);
  }
  ForwardLoop<In> f{input_per_step ? x2.data_ptr<In>() : nullptr,
                    ptr_or_null<In>(w_ih_t),
                    ptr_or_null<In>(w_hh_t),
                    ptr_or_null<AccT>(w_hr_t),
                    ptr_or_null<AccT>(bias),
                    h0_c.data_ptr<In>(),
                    gates.data_ptr<AccT>(),
                    gates_all_steps,
                    c.data_ptr<AccT>(),
                    y.data_ptr<In>(),
                    need_backward ? cells.data_ptr<AccT>() : nullptr,
                    ptr_or_null<AccT>(h_raw)};
  lstm_forward_loop<In>(a, reverse, plan.split, f);
  gather_final_hidden<In>(a, reverse, y.data_ptr<In>(), h_n.data_ptr<In>());

  if (!need_backward) gates = at::empty({0, G}, opts);
  if (!a.packed) y = y.view({a.T, a.B, a.Hout});
  return {y.to(dt), h_n.to(dt), c.to(dt), gates, cells};
}

// The one step's GEMMs and pointwise pass with the threads splitting the hidden units
// (the plan's step_unit_chunk > 0, many batch rows): for each chunk of u units, the
// gates of those units for every row, G_u^T [4, u, B] = W_u [4u, K] @ [x; h0]^T [K, B],
// with the weights as they are as the A operand of our GEMM (rows g H + j of w_ih and
// w_hh, nothing copied), then transposed to rows [B, 4u] for the variant op's pointwise
// pass with no option on, the same pass as the other one-step route (the same bits from
// the same gate pre-activations; the GEMMs round differently), over u units. One parallel
// region for the whole step. x [B, I], h0 [B, H], w_ih [4H, I], w_hh [4H, H]; chunk: units
// per task (cut to H); st: the pass's pointers for all H units (gates unset); gates_out:
// null, or [B, 4H] <- activated gates, nn.LSTM's order.
template <typename T>
void one_step_by_units(const LayerArgs& a, int64_t chunk, const T* x, const T* h0,
                       const T* w_ih, const T* w_hh, const VariantForwardStep<T>& st,
                       T* gates_out) {
  const int64_t B = a.B, H = a.H, I = a.I, G = 4 * H;
  chunk = std::min(chunk, std::max<int64_t>(H, 1));
  const auto& vk = vector_kernels<T>();
  const std::unique_ptr<T[]> xh_t(new T[(I + H) * B]);  // [I + H, B]: x^T over h0^T
  vk.transpose(x, I, xh_t.get(), B, B, I);
  vk.transpose(h0, H, xh_t.get() + I * B, B, B, H);
  const int64_t chunks = (H + chunk - 1) / chunk;
  at::parallel_for(0, chunks, 1, [&](int64_t q0, int64_t q1) {
    // scratch, uninitialised: G_u^T [4, u, B], its rows [B, 4u], the bias of the units [4u]
    const std::unique_ptr<T[]> gt(new T[4 * chunk * B]), rows(new T[B * 4 * chunk]),
        bias(new T[4 * chunk]);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t j0 = q * chunk, u = std::min(chunk, H - j0);
      for (int64_t g = 0; g < 4; ++g) {  // G_u^T [4, u, B]
        T* out = gt.get() + g * u * B;
        gemm_nn<T>(u, B, I, w_ih + (g * H + j0) * I, I, xh_t.get(), B, out, B, false);
        gemm_nn<T>(u, B, H, w_hh + (g * H + j0) * H, H, xh_t.get() + I * B, B, out, B, true);
        if (st.bias) std::copy(st.bias + g * H + j0, st.bias + g * H + j0 + u, bias.get() + g * u);
      }
      vk.transpose(gt.get(), B, rows.get(), 4 * u, 4 * u, B);  // [B, 4u]
      VariantForwardStep<T> s = st;
      s.gates = rows.get();
      s.gates_ld = 4 * u;
      s.bias = st.bias ? bias.get() : nullptr;
      s.c_prev += j0;
      s.cand += j0;
      s.c_out += j0;
      s.h += j0;
      vk.variant_forward(s, B, u);
      if (gates_out) {
        for (int64_t r = 0; r < B; ++r)
          for (int64_t g = 0; g < 4; ++g)
            std::copy_n(rows.get() + r * 4 * u + g * u, u, gates_out + r * G + g * H + j0);
      }
    }
  });
}

// One step (the plan's natural_weights), all in nn.LSTM's gate order: gates = x @ w_ih^T +
// h0 @ w_hh^T on the weights as they are (a blocked copy of them costs more than the GEMMs,
// which read each weight once), then the variant op's pointwise pass with no option on,
// which reads gates in that order (the same gate math as the blocked pass, so the same
// bits). At few rows ATen's GEMMs, then the pass split by rows; with many, the threads
// split the hidden units (one_step_by_units). Saved for backward_one_step: the activated
// gates [B, 4H] in nn.LSTM's order and c [B, H]. No projection. x [1, B, I] (or packed
// [B, I]); h0 [B, Hout]; c0 [B, H].
template <typename T>
DirectionForward forward_one_step(const LayerArgs& a, const ForwardPlan& plan, const Tensor& x,
                                  const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                                  const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                                  bool need_backward) {
  const at::NoGradGuard no_grad;  // ATen ops below, maybe on a worker thread
  const auto dt = x.scalar_type();
  const auto ct = c10::CppTypeToScalarType<T>::value;
  const int64_t G = 4 * a.H;
  const Tensor x_c = as_compute(x, ct).view({a.B, a.I});  // [B, I]
  const Tensor h0_c = as_compute(h0, ct);                  // [B, H]
  const Tensor w_ih_c = as_compute(w_ih, ct), w_hh_c = as_compute(w_hh, ct);  // [4H, I], [4H, H]
  const Tensor bias = a.has_bias ? as_compute(*b_ih, ct) + as_compute(*b_hh, ct) : Tensor();  // [4H]
  const Tensor c0_c = as_compute(c0, ct);
  Tensor c = at::empty({a.B, a.H}, c0_c.options());  // [B, H], becomes c_n
  // [B, H] the step's c saved for backward: a buffer of its own, as the op's outputs may
  // not alias one another (else c itself)
  Tensor cells = need_backward ? at::empty({a.B, a.H}, c0_c.options()) : c;
  Tensor y = at::empty({a.B, a.H}, c0_c.options());  // [B, H]: the step's h
  VariantForwardStep<T> st{nullptr, G, ptr_or_null<T>(bias),
                           c0_c.data_ptr<T>(), a.H,
                           nullptr, 0,
                           nullptr, nullptr, T(0), false,
                           cells.data_ptr<T>(), a.H,  // c^ is c: no option changes it
                           nullptr,
                           c.data_ptr<T>(), a.H,
                           y.data_ptr<T>(), a.H};
  Tensor gates;  // [B, 4H] activated, nn.LSTM's order (kept for backward)
  if (plan.step_unit_chunk > 0) {
    gates = need_backward ? at::empty({a.B, G}, c0_c.options()) : Tensor();
    one_step_by_units<T>(a, plan.step_unit_chunk, x_c.data_ptr<T>(), h0_c.data_ptr<T>(),
                         w_ih_c.data_ptr<T>(), w_hh_c.data_ptr<T>(), st,
                         need_backward ? gates.data_ptr<T>() : nullptr);
  } else {
    gates = at::mm(x_c, w_ih_c.t());  // [B, 4H]
    gates.addmm_(h0_c, w_hh_c.t());
    st.gates = gates.data_ptr<T>();
    at::parallel_for(0, a.B, plan.step_row_grain, [&](int64_t r0, int64_t r1) {
      VariantForwardStep<T> rows = st;
      rows.gates += r0 * G;
      rows.c_prev += r0 * a.H;
      rows.cand += r0 * a.H;
      rows.c_out += r0 * a.H;
      rows.h += r0 * a.H;
      vector_kernels<T>().variant_forward(rows, r1 - r0, a.H);
    });
  }
  const Tensor h_n = y.to(dt, /*non_blocking=*/false, /*copy=*/true);  // [B, H]
  return {(a.packed ? y : y.view({1, a.B, a.H})).to(dt), h_n, c.to(dt),
          need_backward ? gates : at::empty({0, G}, c.options()),
          need_backward ? cells : at::empty({0, a.H}, c.options())};
}

// One direction: h0 [B, Hout], c0 [B, H].
DirectionForward forward_direction(const Tensor& x, const OptTensor& batch_sizes,
                                   const Tensor& h0, const Tensor& c0,
                                   const DirectionWeights& w, bool reverse, bool need_backward) {
  const auto& [w_ih, w_hh, b_ih, b_hh, w_hr] = w;
  const LayerArgs a = check_layer_args(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr);
  const ForwardPlan plan = plan_forward(a, x.scalar_type());
  if (plan.bf16_operands) {
    return forward_impl<c10::BFloat16>(a, plan, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                                       need_backward);
  }
  return AT_DISPATCH_FLOATING_TYPES(compute_dtype(x.scalar_type()), "lstm_layer_forward_cpu", [&] {
    if (plan.natural_weights) {
      return forward_one_step<scalar_t>(a, plan, x, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                        need_backward);
    }
    return forward_impl<scalar_t>(a, plan, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                                  need_backward);
  });
}

// One step (the plan's natural_weights), on what forward_one_step saved: the variant op's
// pointwise backward with no option on gives d(gates) in nn.LSTM's order, and every
// gradient is one ATen GEMM on the weights as they are. No projection. h0, grad_h_n
// [B, Hout]; c0, grad_c_n [B, H]; gates [B, 4H] activated, nn.LSTM's order; cells [B, H].
template <typename T>
DirectionBackward backward_one_step(const LayerArgs& a, const BackwardPlan& plan,
                                    const Tensor& grad_y, const Tensor& grad_h_n,
                                    const Tensor& grad_c_n,
                                    const Tensor& x, const Tensor& h0, const Tensor& c0,
                                    const Tensor& w_ih, const Tensor& w_hh, const Tensor& gates,
                                    const Tensor& cells) {
  const at::NoGradGuard no_grad;  // ATen ops below, maybe on a worker thread
  const auto dt = x.scalar_type();
  const auto ct = c10::CppTypeToScalarType<T>::value;
  const auto opts = x.options().dtype(ct);
  const int64_t G = 4 * a.H, H = a.H;
  // dL/dh of the step: through y and h_n alike, [B, H]
  const Tensor dh = as_compute(grad_y, ct).view({a.B, a.Hout}) + as_compute(grad_h_n, ct);
  const Tensor act = as_compute(gates, ct).view({a.B, G});
  const Tensor c_step = as_compute(cells, ct).view({a.B, H});
  const Tensor c0_c = as_compute(c0, ct);
  Tensor dc = fresh(grad_c_n, ct);  // [B, H], becomes grad_c0
  Tensor dg = at::empty({a.B, G}, opts);  // [B, 4H] nn.LSTM's order
  VariantBackwardStep<T> st{act.data_ptr<T>(), G,
                            c_step.data_ptr<T>(), H,
                            nullptr,
                            c0_c.data_ptr<T>(), H,
                            nullptr, 0,
                            nullptr, nullptr, false,
                            dh.data_ptr<T>(), H,
                            dc.data_ptr<T>(), H,
                            dg.data_ptr<T>(), G,
                            nullptr, nullptr,
                            nullptr};
  at::parallel_for(0, a.B, plan.step_row_grain, [&](int64_t r0, int64_t r1) {
    std::vector<T> work(H);  // the pass's scratch [H]
    VariantBackwardStep<T> rows = st;
    rows.act += r0 * G;
    rows.cand += r0 * H;
    rows.c_prev += r0 * H;
    rows.dh += r0 * H;
    rows.dc += r0 * H;
    rows.dgates += r0 * G;
    rows.work = work.data();
    vector_kernels<T>().variant_backward(rows, r1 - r0, H);
  });
  const Tensor w_ih_c = as_compute(w_ih, ct), w_hh_c = as_compute(w_hh, ct);
  const Tensor grad_x = at::mm(dg, w_ih_c);                                 // [B, I]
  const Tensor grad_h0 = at::mm(dg, w_hh_c);                                // [B, Hout]
  const Tensor grad_w_ih = at::mm(dg.t(), as_compute(x, ct).view({a.B, a.I}));  // [4H, I]
  const Tensor grad_w_hh = at::mm(dg.t(), as_compute(h0, ct));             // [4H, Hout]
  const Tensor grad_b_ih = a.has_bias ? dg.sum(0) : at::empty({0}, opts);
  const Tensor grad_b_hh = a.has_bias ? grad_b_ih.clone() : at::empty({0}, opts);
  const auto wdt = w_ih.scalar_type();
  return {grad_x.view(x.sizes()).to(dt), grad_h0.to(dt),          dc.to(dt),
          grad_w_ih.to(wdt),             grad_w_hh.to(wdt),       grad_b_ih.to(wdt),
          grad_b_hh.to(wdt),             at::empty({0}, opts).to(wdt)};
}

template <typename In>
DirectionBackward backward_impl(const LayerArgs& a, const BackwardPlan& plan, const Tensor& grad_y,
                                const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& x,
                                const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                                const Tensor& w_hh, const OptTensor& w_hr, const Tensor& y,
                                const Tensor& gates, const Tensor& cells, bool reverse) {
  using AccT = Acc<In>;
  const auto dt = x.scalar_type();
  const auto ct = c10::CppTypeToScalarType<AccT>::value;
  const auto it = c10::CppTypeToScalarType<In>::value;
  const auto opts = x.options().dtype(ct);
  const int64_t G = 4 * a.H;
  const Tensor x2 = as_compute(x, it).view({a.N, a.I});
  const Tensor y2 = as_compute(y, it).view({a.N, a.Hout});
  const Tensor gy = as_compute(grad_y, ct).view({a.N, a.Hout});
  const Tensor gates_c = as_compute(gates, ct).view({a.N, G});
  const Tensor cells_c = as_compute(cells, ct).view({a.N, a.H});
  const Tensor h0_c = as_compute(h0, it), c0_c = as_compute(c0, ct);
  Tensor w_ih_b = rows_operand<In>(w_ih, a.H);  // [4H, I]    blocked rows
  Tensor w_hh_b = rows_operand<In>(w_hh, a.H);  // [4H, Hout] blocked rows
  const Tensor w_hr_c = a.has_proj ? as_compute(*w_hr, ct) : Tensor();
  Tensor dh = fresh(grad_h_n, ct);  // dh: [B, Hout], becomes grad_h0
  Tensor dc = fresh(grad_c_n, ct);  // dc: [B, H], becomes grad_c0
  const Tensor dh_total = a.has_proj ? at::empty({a.N, a.Hout}, opts) : Tensor();
  const Tensor dh_raw = a.has_proj ? at::empty({a.B, a.H}, opts) : Tensor();
  Tensor grad_x = with_huge_pages(at::empty({a.N, a.I}, opts));
  // [I, 4H] and [Hout, 4H], blocked columns, written by lstm_backward (a
  // length-0 call has no steps: zeros)
  Tensor grad_w_ih_t = a.T > 0 ? at::empty({a.I, G}, opts) : at::zeros({a.I, G}, opts);
  Tensor grad_w_hh_t = a.T > 0 ? at::empty({a.Hout, G}, opts) : at::zeros({a.Hout, G}, opts);
  Tensor grad_w_ih, grad_w_hh;  // [4H, I], [4H, Hout] natural rows, made at the end
  Tensor grad_b_ih = at::empty({a.has_bias ? G : 0}, opts);
  std::vector<AccT> bias_sums(a.has_bias ? G : 0, AccT(0));  // [4H] blocked

  const BackwardLoop<In> b{w_hh_b.data_ptr<In>(),
                           ptr_or_null<AccT>(w_hr_c),
                           gy.data_ptr<AccT>(),
                           gates_c.data_ptr<AccT>(),
                           cells_c.data_ptr<AccT>(),
                           c0_c.data_ptr<AccT>(),
                           dh.data_ptr<AccT>(),
                           dc.data_ptr<AccT>(),
                           nullptr,
                           nullptr,
                           ptr_or_null<AccT>(dh_total),
                           ptr_or_null<AccT>(dh_raw)};
  const BackwardGradients<In> grads{x2.data_ptr<In>(),
                                    y2.data_ptr<In>(),
                                    h0_c.data_ptr<In>(),
                                    w_ih_b.data_ptr<In>(),
                                    grad_x.data_ptr<AccT>(),
                                    grad_w_ih_t.data_ptr<AccT>(),
                                    grad_w_hh_t.data_ptr<AccT>(),
                                    a.has_bias ? bias_sums.data() : nullptr};
  lstm_backward<In>(a, reverse, plan, b, grads);
  // Back to nn.LSTM's gate order (the blocked weight copies are done with first,
  // so the natural-order gradients can take their memory).
  w_ih_b = Tensor();
  w_hh_b = Tensor();
  grad_w_ih = at::empty({G, a.I}, opts);
  grad_w_hh = at::empty({G, a.Hout}, opts);
  blocked_transposed_to_gate_rows<AccT>(grad_w_ih_t.data_ptr<AccT>(), a.H, a.I,
                                        grad_w_ih.data_ptr<AccT>());
  blocked_transposed_to_gate_rows<AccT>(grad_w_hh_t.data_ptr<AccT>(), a.H, a.Hout,
                                     grad_w_hh.data_ptr<AccT>());
  AccT* gb = a.has_bias ? grad_b_ih.data_ptr<AccT>() : nullptr;
  for (int64_t col = 0; col < (a.has_bias ? G : 0); ++col)
    gb[natural_gate_row(a.H, col)] = bias_sums[col];

  Tensor grad_b_hh = at::empty({0}, opts);
  if (a.has_bias) grad_b_hh = grad_b_ih.clone();
  Tensor grad_w_hr = at::empty({0}, opts);
  if (a.has_proj) {
    // h_raw = o * tanh(c) of every step, recomputed from what forward saved.
    Tensor o_columns = at::empty({a.H}, at::kLong);
    for (int64_t j = 0; j < a.H; ++j)
      o_columns.data_ptr<int64_t>()[j] = blocked_gate_column(a.H, 3, j);
    const Tensor h_raw = gates_c.index_select(1, o_columns) * cells_c.tanh();
    grad_w_hr = at::mm(dh_total.t(), h_raw);  // [Hout, H]
  }
  const auto wdt = w_ih.scalar_type();
  return {grad_x.view(x.sizes()).to(dt), dh.to(dt),           dc.to(dt),
          grad_w_ih.to(wdt),             grad_w_hh.to(wdt),   grad_b_ih.to(wdt),
          grad_b_hh.to(wdt),             grad_w_hr.to(wdt)};
}

// One direction: h0, grad_h_n [B, Hout]; c0, grad_c_n [B, H].
DirectionBackward backward_direction(const Tensor& grad_y, const Tensor& grad_h_n,
                                     const Tensor& grad_c_n, const Tensor& x,
                                     const OptTensor& batch_sizes, const Tensor& h0,
                                     const Tensor& c0, const DirectionWeights& w, const Tensor& y,
                                     const Tensor& gates, const Tensor& cells, bool reverse) {
  const auto& [w_ih, w_hh, b_ih, b_hh, w_hr] = w;
  const LayerArgs a = check_layer_args(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr);
  check_backward_args(a, grad_y, grad_h_n, grad_c_n, h0, c0, y, gates, cells);
  const BackwardPlan plan = plan_backward(a, x.scalar_type());
  if (plan.bf16_operands) {
    return backward_impl<c10::BFloat16>(a, plan, grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih,
                                        w_hh, w_hr, y, gates, cells, reverse);
  }
  return AT_DISPATCH_FLOATING_TYPES(compute_dtype(x.scalar_type()), "lstm_layer_backward_cpu", [&] {
    if (plan.natural_weights) {
      return backward_one_step<scalar_t>(a, plan, grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih,
                                         w_hh, gates, cells);
    }
    return backward_impl<scalar_t>(a, plan, grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh,
                                   w_hr, y, gates, cells, reverse);
  });
}

// Both directions of a layer run side by side, one per thread (a core each on a two-core
// machine), each time loop single-threaded: they share nothing until their outputs are
// joined, so no barrier at all (NOTES.md rows 10 and 24). Each runs under the caller's
// thread-local state (grad mode, inference mode...), which a worker thread lacks.
void run_directions(int64_t count, const std::function<void(int64_t)>& fn) {
  if (count == 1) {
    fn(0);
    return;
  }
  const at::ThreadLocalState caller;
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard same_state(caller);
    for (int64_t d = begin; d < end; ++d) fn(d);
  });
}

LayerForward lstm_layer_forward_cpu(const Tensor& x, const OptTensor& batch_sizes,
                                    const Tensor& h0, const Tensor& c0,
                                    const std::vector<Tensor>& weights, bool has_bias,
                                    bool has_proj, bool bidirectional, bool reverse,
                                    bool need_backward) {
  check_cpu(x);
  const auto w = split_direction_weights("lstm_layer_forward", weights, has_bias, has_proj,
                                         bidirectional, reverse);
  const int64_t directions = static_cast<int64_t>(w.size());
  check_layer_states("lstm_layer_forward", h0, c0, directions);
  return layer_forward(
      x, h0, c0, directions, reverse,
      [&](int64_t d, const Tensor& h0_d, const Tensor& c0_d, bool reverse_d) {
        return forward_direction(x, batch_sizes, h0_d, c0_d, w[d], reverse_d, need_backward);
      },
      run_directions);
}

LayerBackward lstm_layer_backward_cpu(const Tensor& grad_y, const Tensor& grad_h_n,
                                      const Tensor& grad_c_n, const Tensor& x,
                                      const OptTensor& batch_sizes, const Tensor& h0,
                                      const Tensor& c0, const std::vector<Tensor>& weights,
                                      bool has_bias, bool has_proj, bool bidirectional,
                                      bool reverse, const Tensor& y,
                                      const std::vector<Tensor>& saved) {
  check_cpu(x);
  const auto w = split_direction_weights("lstm_layer_backward", weights, has_bias, has_proj,
                                         bidirectional, reverse);
  const int64_t directions = static_cast<int64_t>(w.size());
  check_layer_backward_args(grad_y, grad_h_n, grad_c_n, h0, c0, y, saved, directions);
  return layer_backward(
      grad_y, grad_h_n, grad_c_n, y, saved, directions, reverse, has_bias, has_proj,
      [&](int64_t d, const Tensor& gy, const Tensor& gh, const Tensor& gc, const Tensor& y_d,
          const Tensor& gates, const Tensor& cells, bool reverse_d) {
        return backward_direction(gy, gh, gc, x, batch_sizes, h0[d], c0[d], w[d], y_d, gates,
                                  cells, reverse_d);
      },
      run_directions);
}

}  // namespace

// What the CPU kernels run on this machine (python -m fused_lstm prints it).
TORCH_LIBRARY_FRAGMENT(fused_lstm, m) {
  m.def("cpu_kernels() -> str", &describe_cpu_kernels);
}

TORCH_LIBRARY_IMPL(fused_lstm, CPU, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_cpu);
  m.impl("lstm_layer_backward", &lstm_layer_backward_cpu);
}

}  // namespace fused_lstm::cpu
