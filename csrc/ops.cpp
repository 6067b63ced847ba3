// The fused_lstm operator schemas. Implementations register per device in
// cpu/lstm_cpu.cpp and cuda/lstm_cuda.cpp (the segment ops in segment_layout_op.cpp and
// segment_pad_op.cpp); autograd and fake (shape) kernels are registered from Python
// (fused_lstm/ops.py, fused_lstm/segments.py).
#include <Python.h>
#include <torch/library.h>

#include "lstm_layer_schema.h"
#include "lstm_variant_schema.h"

// `import fused_lstm._C` loads this library, whose static initialisers register
// the ops; the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(fused_lstm, m) {
  // One LSTM layer, one direction or both, over a whole sequence.
  //   x:       [T, B, I] dense, or [N, I] packed rows with batch_sizes [T] (int64, CPU)
  //   h0:      [D, B, Hout]   c0: [D, B, H]   (D = 2 if bidirectional else 1)
  //   weights: per direction, in nn.LSTM's order: w_ih [4H, I], w_hh [4H, Hout], then
  //            b_ih, b_hh [4H] if has_bias, then w_hr [Hout, H] if has_proj
  //   reverse: the one direction runs from the last step to the first (not with
  //            bidirectional, whose second direction always does)
  // Returns
  //   y:     [T, B, D * Hout] (or [N, D * Hout]), the directions side by side
  //   h_n:   [D, B, Hout]   c_n: [D, B, H]
  //   saved: per direction, gates [T*B or N, 4H] (activated i, f, g, o) and cells
  //          [T*B or N, H], kept for backward (empty when need_backward is false)
  m.def(fused_lstm::kLstmLayerForwardSchema);
  // Backpropagation through the whole sequence of lstm_layer_forward: the gradients of x,
  // h0, c0 and of each weight (in the order of `weights`).
  m.def(fused_lstm::kLstmLayerBackwardSchema);
  // One direction of one layer with the options beyond nn.LSTM (layer norm, zoneout,
  // recurrent dropout; README "Variants", fused_lstm/reference.py lstm_variant_reference
  // for the formulas). The arguments of lstm_layer_forward for one direction (h0: [B, Hout],
  // c0: [B, H], weights: w_ih, w_hh, then b_ih, b_hh, then w_hr), and
  //   norm:           [] or ln_ih weight, bias [4H], ln_hh weight, bias [4H], ln_c weight,
  //                   bias [H]; norm_eps their eps; norm_state: the normalised c is the state
  //   recurrent_mask: [B, Hout] multiplying h before the recurrent product, or None
  //   zoneout_h:      [N, Hout] per row of x, or [Hout] for every row, or None; zoneout_c the
  //                   same with H
  // Returns y [T, B, Hout] (or [N, Hout]), h_n [B, Hout], c_n [B, H], cells: c after every
  // step [T, B, H] (or [N, H]), and saved: what backward reads (empty tensors where the
  // options need none; an empty list when need_backward is false).
  m.def(fused_lstm::kLstmVariantForwardSchema);
  // Its backward: gradients of x, h0, c0, each weight and each norm parameter, from those of
  // y, h_n, c_n and cells. The masks get none.
  m.def(fused_lstm::kLstmVariantBackwardSchema);
  // The index maps of a padded batch [steps, batch, ...] cut into independent segments by
  // lengths [batch] (integers, 0 to steps) and a reset mask [steps, batch] (bool, or 0 and
  // 1), either None (csrc/segment_maps.h, fused_lstm/segments.py). Returns batch_sizes [T']
  // (on the CPU), rows [N], initial [B'] and final [batch] (on device). Output sizes depend
  // on the values: the fake kernel gives them as unbacked symbols.
  m.def(
      "segment_layout(Tensor? lengths, Tensor? reset, SymInt steps, SymInt batch, "
      "Device device) -> (Tensor, Tensor, Tensor, Tensor)");
  // Packed rows [N, C] into [steps, batch, C]: packed row k to padded row rows[k]
  // (t * batch + b; distinct), zeros elsewhere (csrc/segment_pad_op.cpp).
  m.def("segment_pad(Tensor packed, Tensor rows, SymInt steps, SymInt batch) -> Tensor");
}
