// LSTM gate math shared by the CPU and CUDA kernels.
//
// Everything here is plain arithmetic on a value type T, so the same code runs
// on a float in a CUDA thread, on a float/double scalar on the CPU, and on an
// at::vec::Vectorized<float> lane group in the vectorized CPU kernel. The
// nonlinearities differ per backend (Sleef on the CPU, fast intrinsics on the
// GPU), so callers apply them and hand the activated gates in.
//
// Gate order is PyTorch's: i, f, g, o, each H wide inside a 4H gate row.
//
//   i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
//   c = f * c_prev + i * g
//   h = o * tanh(c)
#pragma once

#if defined(__CUDACC__)
#define FUSED_LSTM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FUSED_LSTM_HOST_DEVICE inline
#endif

#include <cmath>

namespace fused_lstm {

// Scalar nonlinearities (CUDA threads and the scalar tails of CPU loops).
FUSED_LSTM_HOST_DEVICE float gate_sigmoid(float x) { return 1.0f / (1.0f + ::expf(-x)); }
FUSED_LSTM_HOST_DEVICE double gate_sigmoid(double x) { return 1.0 / (1.0 + ::exp(-x)); }
FUSED_LSTM_HOST_DEVICE float gate_tanh(float x) { return ::tanhf(x); }
FUSED_LSTM_HOST_DEVICE double gate_tanh(double x) { return ::tanh(x); }

// New cell state from the activated gates: c = f * c_prev + i * g.
template <typename T>
FUSED_LSTM_HOST_DEVICE T lstm_cell_state(const T& i, const T& f, const T& g, const T& c_prev) {
  return f * c_prev + i * g;
}

// Hidden output before any projection: h = o * tanh(c).
template <typename T>
FUSED_LSTM_HOST_DEVICE T lstm_hidden(const T& o, const T& tanh_c) {
  return o * tanh_c;
}

// Gradients of one LSTM cell with respect to its gate pre-activations.
//
// In:  activated gates i, f, g, o; c_prev; tanh_c = tanh(c);
//      dh = dL/dh for this step; dc = dL/dc flowing in from the next step.
// Out: d_ai, d_af, d_ag, d_ao = dL/d(pre-activation) of each gate;
//      dc_prev = dL/dc_prev, handed to the previous step.
template <typename T>
FUSED_LSTM_HOST_DEVICE void lstm_gate_grads(
    const T& i, const T& f, const T& g, const T& o,
    const T& c_prev, const T& tanh_c, const T& dh, const T& dc,
    T& d_ai, T& d_af, T& d_ag, T& d_ao, T& dc_prev) {
  const T one(1);
  const T dc_total = dc + dh * o * (one - tanh_c * tanh_c);
  d_ao = dh * tanh_c * o * (one - o);
  d_ai = dc_total * g * i * (one - i);
  d_af = dc_total * c_prev * f * (one - f);
  d_ag = dc_total * i * (one - g * g);
  dc_prev = dc_total * f;
}

}  // namespace fused_lstm
