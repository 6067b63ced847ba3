// The fused_lstm operator schemas. Implementations register per device in
// cpu/lstm_cpu.cpp and cuda/lstm_cuda.cpp; autograd and fake (shape) kernels
// are registered from Python (fused_lstm/ops.py).
#include <Python.h>
#include <torch/library.h>

// `import fused_lstm._C` loads this library, whose static initialisers register
// the ops; the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(fused_lstm, m) {
  // One direction of one LSTM layer over a whole sequence.
  //   x:     [T, B, I] dense, or [N, I] packed rows with batch_sizes [T] (int64, CPU)
  //   h0:    [B, Hout]   c0: [B, H]
  //   w_ih:  [4H, I]     w_hh: [4H, Hout]   b_ih, b_hh: [4H]   w_hr: [Hout, H]
  // Returns
  //   y:     [T, B, Hout] (or [N, Hout])   h_n: [B, Hout]   c_n: [B, H]
  //   gates: [T*B or N, 4H] activated i, f, g, o   cells: [T*B or N, H]
  //          (both saved for backward; empty when need_backward is false)
  m.def(
      "lstm_layer_forward(Tensor x, Tensor? batch_sizes, Tensor h0, Tensor c0, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool reverse, bool need_backward) "
      "-> (Tensor y, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells)");
  // Both directions of a bidirectional layer in one call, run side by side
  // (on the CPU one direction per core). Arguments as above, the forward
  // direction's weights first; h0: [2, B, Hout], c0: [2, B, H].
  // Returns y: [T, B, 2 * Hout] (or [N, 2 * Hout]), h_n: [2, B, Hout],
  // c_n: [2, B, H], and each direction's saved gates and cells.
  m.def(
      "lstm_bidirectional_layer_forward(Tensor x, Tensor? batch_sizes, Tensor h0, Tensor c0, "
      "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, "
      "Tensor w_ih_reverse, Tensor w_hh_reverse, Tensor? b_ih_reverse, Tensor? b_hh_reverse, "
      "Tensor? w_hr_reverse, bool need_backward) "
      "-> (Tensor y, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells, Tensor gates_reverse, "
      "Tensor cells_reverse)");
  m.def(
      "lstm_bidirectional_layer_backward(Tensor grad_y, Tensor grad_h_n, Tensor grad_c_n, "
      "Tensor x, Tensor? batch_sizes, Tensor h0, Tensor c0, "
      "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, "
      "Tensor w_ih_reverse, Tensor w_hh_reverse, Tensor? b_ih_reverse, Tensor? b_hh_reverse, "
      "Tensor? w_hr_reverse, Tensor y, Tensor gates, Tensor cells, Tensor gates_reverse, "
      "Tensor cells_reverse) "
      "-> (Tensor grad_x, Tensor grad_h0, Tensor grad_c0, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh, Tensor grad_w_hr, Tensor grad_w_ih_reverse, "
      "Tensor grad_w_hh_reverse, Tensor grad_b_ih_reverse, Tensor grad_b_hh_reverse, "
      "Tensor grad_w_hr_reverse)");
  // Backpropagation through the whole sequence of lstm_layer_forward.
  // grad_b_ih/grad_b_hh are empty without biases, grad_w_hr is empty without a projection.
  m.def(
      "lstm_layer_backward(Tensor grad_y, Tensor grad_h_n, Tensor grad_c_n, Tensor x, "
      "Tensor? batch_sizes, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, Tensor? w_hr, Tensor y, Tensor gates, Tensor cells, bool reverse) "
      "-> (Tensor grad_x, Tensor grad_h0, Tensor grad_c0, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh, Tensor grad_w_hr)");
}
