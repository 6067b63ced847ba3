// The CUDA backward time loop of one layer direction (lstm_cuda_loops.h).
#include "cuda_blas.h"
#include "lstm_cuda_kernels.h"
#include "lstm_cuda_loops.h"

namespace fused_lstm::cuda {

namespace {

// The step before step k in this direction's order holds c_prev for its first
// s.rows_from_prev(k) rows; the others started from c0.
template <typename acc_t>
const acc_t* c_prev(const CudaSteps& s, const CudaBackwardLoop<acc_t>& b, int64_t k) {
  return k > 0 ? b.cells + s.offset[s.time(k - 1)] * s.H : nullptr;
}

// Fused route: each step's kernel turns the d(gates) of the step processed before it (the
// next one in time) into its dh. The loop so leaves one product for after it, grad_h0,
// from each row's last d(gates): all in one step except for packed reverse layers, whose
// rows leave the loop at different steps, so b.dg_last keeps them.
template <typename acc_t>
LoopStatus backward_steps_fused(const CudaSteps& s, const CudaBackwardLoop<acc_t>& b,
                                cublasHandle_t blas, cudaStream_t stream) {
  const int64_t H = s.H, G = 4 * s.H, Hout = s.Hout;
  for (int64_t k = s.T - 1; k >= 0; --k) {
    const int64_t t = s.time(k), off = s.offset[t], rows = s.rows[t];
    const int64_t t_next = k < s.T - 1 ? s.time(k + 1) : -1;
    FUSED_LSTM_TRY(
        lstm_backward_step<acc_t>(
            rows, H, t_next >= 0 ? b.dgates + s.offset[t_next] * G : nullptr, G,
            t_next >= 0 ? s.rows[t_next] : 0, b.dh, H, b.w_hh_t, b.gates + off * G, G,
            b.cells + off * H, H, c_prev(s, b, k), H, s.rows_from_prev(k), b.c0, H,
            b.gy + off * H, H, b.dc, H, b.dgates + off * G, G, b.dg_last, G, stream),
        "lstm_backward_step");
  }
  if (s.T == 0) return {};  // dh keeps grad_h_n
  // grad_h0 = d(gates) of each row's last step @ w_hh; every one of the B rows is in the
  // step processed last.
  const acc_t* dg = b.dg_last ? b.dg_last : b.dgates + s.offset[s.time(0)] * G;
  FUSED_LSTM_TRY_BLAS(
      gemm_rows<acc_t>(blas, s.B, Hout, G, dg, G, b.w_hh, Hout, false, acc_t(0), b.dh, Hout),
      "the GEMM of grad_h0 (cuBLAS)");
  return {};
}

// gemm route: per step the pointwise kernel, then dh = dgates @ w_hh on cuBLAS; with a
// projection dh_total = dh + grad_y and dh_raw = dh_total @ w_hr first, on cuBLAS.
template <typename acc_t>
LoopStatus backward_steps_gemm(const CudaSteps& s, const CudaBackwardLoop<acc_t>& b,
                               cublasHandle_t blas, cudaStream_t stream) {
  const int64_t H = s.H, G = 4 * s.H, Hout = s.Hout;
  const bool has_proj = b.w_hr != nullptr;
  for (int64_t k = s.T - 1; k >= 0; --k) {
    const int64_t t = s.time(k), off = s.offset[t], rows = s.rows[t];
    const acc_t* dh_in = b.dh;
    const acc_t* dh_in2 = b.gy + off * Hout;
    int64_t dh_in_ld = Hout;
    if (has_proj) {
      // dh_total = dh + grad_y; dh_raw = dh_total @ w_hr
      acc_t* dht = b.dh_total + off * Hout;
      FUSED_LSTM_TRY_BLAS(add_rows<acc_t>(blas, rows, Hout, b.dh, Hout, b.gy + off * Hout, Hout,
                                          dht, Hout),
                          "dh + grad_y (cuBLAS)");
      FUSED_LSTM_TRY_BLAS(gemm_rows<acc_t>(blas, rows, H, Hout, dht, Hout, b.w_hr, H, false,
                                           acc_t(0), b.dh_raw, H),
                          "the projection's backward GEMM (cuBLAS)");
      dh_in = b.dh_raw;
      dh_in2 = nullptr;
      dh_in_ld = H;
    }
    FUSED_LSTM_TRY(
        lstm_backward_pointwise<acc_t>(rows, H, b.gates + off * G, G, b.cells + off * H, H,
                                       c_prev(s, b, k), H, s.rows_from_prev(k), b.c0, H, dh_in,
                                       dh_in_ld, dh_in2, Hout, b.dc, H, b.dgates + off * G, G,
                                       stream),
        "lstm_backward_pointwise");
    // dh[0:rows] = dgates @ w_hh: the gradient reaching h_prev.
    FUSED_LSTM_TRY_BLAS(gemm_rows<acc_t>(blas, rows, Hout, G, b.dgates + off * G, G, b.w_hh,
                                         Hout, false, acc_t(0), b.dh, Hout),
                        "the recurrent backward GEMM (cuBLAS)");
  }
  return {};
}

}  // namespace

template <typename acc_t>
LoopStatus lstm_cuda_backward_loop(const CudaSteps& s, const CudaBackwardLoop<acc_t>& b,
                                   cublasHandle_t blas, cudaStream_t stream) {
  if (b.route == StepRoute::fused) return backward_steps_fused(s, b, blas, stream);
  return backward_steps_gemm(s, b, blas, stream);
}

template LoopStatus lstm_cuda_backward_loop<float>(const CudaSteps&,
                                                   const CudaBackwardLoop<float>&,
                                                   cublasHandle_t, cudaStream_t);
template LoopStatus lstm_cuda_backward_loop<double>(const CudaSteps&,
                                                    const CudaBackwardLoop<double>&,
                                                    cublasHandle_t, cudaStream_t);

}  // namespace fused_lstm::cuda
