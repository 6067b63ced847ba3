// The variant op's CUDA time loops (variant_cuda_loops.h).
#include "variant_cuda_loops.h"

#include <algorithm>

#include "variant_cuda_kernels.h"

namespace fused_lstm::cuda {

namespace {

// The rows of the k-th step a loop processes, and where their previous state is.
template <typename T>
struct StepRows {
  int64_t t, off, rows;
  int64_t from_prev;  // rows [0, from_prev) continue from the previous step's rows
  const T* y_prev;    // [from_prev, Hout] h of the previous step, or null
  const T* c_prev;    // [from_prev, H] c of the previous step, or null
};

template <typename T>
StepRows<T> step_rows(const CudaSteps& s, int64_t k, const T* y, const T* cells) {
  StepRows<T> v;
  v.t = s.time(k);
  v.off = s.offset[v.t];
  v.rows = s.rows[v.t];
  v.from_prev = s.rows_from_prev(k);
  v.y_prev = v.c_prev = nullptr;
  if (k > 0) {
    const int64_t tp = s.time(k - 1);
    v.y_prev = y + s.offset[tp] * s.Hout;
    v.c_prev = cells + s.offset[tp] * s.H;
  }
  return v;
}

template <typename T>
const T* row_or_null(const T* p, int64_t row, int64_t ld) {
  return p ? p + row * ld : nullptr;
}
template <typename T>
T* row_or_null(T* p, int64_t row, int64_t ld) {
  return p ? p + row * ld : nullptr;
}

// out: [B, width], each row's value after its last step, from seq: [N, width] (as the
// CPU's gather_last_rows: walking back from the last step processed, each step's rows
// beyond those already filled ended there).
template <typename T>
cudaError_t gather_last_rows(const CudaSteps& s, const T* seq, int64_t width, T* out,
                             cudaStream_t stream) {
  int64_t filled = 0;
  for (int64_t k = s.T - 1; k >= 0 && filled < s.B; --k) {
    const int64_t t = s.time(k), rows = s.rows[t];
    if (rows > filled) {
      const cudaError_t err = cudaMemcpyAsync(
          out + filled * width, seq + (s.offset[t] + filled) * width,
          sizeof(T) * (rows - filled) * width, cudaMemcpyDeviceToDevice, stream);
      if (err != cudaSuccess) return err;
      filled = rows;
    }
  }
  return cudaSuccess;
}

}  // namespace

template <typename T>
LoopStatus variant_forward_loop(const CudaSteps& s, const VariantCudaState<T>& st,
                                const VariantCudaForward<T>& f, const RowGemm<T>& gemm,
                                cudaStream_t stream) {
  const int64_t H = s.H, G = 4 * H, Hout = s.Hout;
  const bool ln = st.ln_ih_w != nullptr, proj = st.w_hr != nullptr;
  // gates <- LN_ih(x @ w_ih^T) for every row at once
  if (ln) {
    FUSED_LSTM_TRY(variant_norm_rows<T>(s.N, G, st.eps, f.gates, G, st.ln_ih_w, st.ln_ih_b,
                                        f.gx_hat, f.gx_stats, stream),
                   "variant_norm_rows (LN_ih)");
  }
  for (int64_t k = 0; k < s.T; ++k) {
    const StepRows<T> v = step_rows(s, k, f.y, f.cells);
    if (v.rows == 0) continue;
    // The recurrent GEMM's input: h_prev (the previous step's rows, then h0's) * mask.
    const T* A;
    if (!st.recurrent_mask && v.from_prev == v.rows) {
      A = v.y_prev;
    } else if (!st.recurrent_mask && v.from_prev == 0) {
      A = st.h0;
    } else {
      FUSED_LSTM_TRY(variant_masked_rows<T>(v.rows, Hout, v.y_prev, v.from_prev, st.h0,
                                            st.recurrent_mask, f.h_in, stream),
                     "variant_masked_rows");
      A = f.h_in;
    }
    T* g = f.gates + v.off * G;
    // gates += h_in @ w_hh^T, or r_raw = h_in @ w_hh^T for LN_hh
    gemm(v.rows, G, Hout, A, Hout, st.w_hh, Hout, true, ln ? T(0) : T(1), ln ? f.r_raw : g, G);
    T* h_raw = proj ? (f.h_raw ? f.h_raw + v.off * H : f.h_raw_step) : nullptr;
    VariantForwardStepArgs<T> p;
    p.rows = v.rows;
    p.H = H;
    p.Hout = Hout;
    p.gates = g;
    p.r_raw = ln ? f.r_raw : nullptr;
    p.ln_hh_w = st.ln_hh_w;
    p.ln_hh_b = st.ln_hh_b;
    p.r_hat = row_or_null(f.r_hat, v.off, G);
    p.r_stats = row_or_null(f.r_stats, v.off, 2);
    p.bias = st.bias;
    p.c_prev = v.c_prev;
    p.c_prev_rows = v.from_prev;
    p.c_init = st.c0;
    p.zc = row_or_null(st.zc, v.off, st.zc_ld);
    p.zc_ld = st.zc_ld;
    p.ln_c_w = st.ln_c_w;
    p.ln_c_b = st.ln_c_b;
    p.eps = st.eps;
    p.norm_state = st.norm_state;
    p.cand = row_or_null(f.cand, v.off, H);
    p.c_stats = row_or_null(f.c_stats, v.off, 2);
    p.cells = f.cells + v.off * H;
    p.h_out = proj ? h_raw : f.y + v.off * Hout;
    p.h_ld = proj ? H : Hout;
    // h's zoneout here without a projection; with one, after its GEMM below
    p.zh = proj ? nullptr : row_or_null(st.zh, v.off, st.zh_ld);
    p.zh_ld = st.zh_ld;
    p.h_prev = v.y_prev;
    p.h_prev_rows = v.from_prev;
    p.h_init = st.h0;
    FUSED_LSTM_TRY(variant_forward_step<T>(p, stream), "variant_forward_step");
    if (proj) {
      T* y = f.y + v.off * Hout;
      gemm(v.rows, Hout, H, h_raw, H, st.w_hr, H, true, T(0), st.zh ? f.h_new : y, Hout);
      if (st.zh) {
        FUSED_LSTM_TRY(variant_zoneout_rows<T>(v.rows, Hout, f.h_new, st.zh + v.off * st.zh_ld,
                                               st.zh_ld, v.y_prev, v.from_prev, st.h0, y,
                                               stream),
                       "variant_zoneout_rows");
      }
    }
  }
  FUSED_LSTM_TRY(gather_last_rows<T>(s, f.y, Hout, f.h_n, stream), "cudaMemcpyAsync (h_n)");
  FUSED_LSTM_TRY(gather_last_rows<T>(s, f.cells, H, f.c_n, stream), "cudaMemcpyAsync (c_n)");
  return {};
}

template <typename T>
LoopStatus variant_backward_loop(const CudaSteps& s, const VariantCudaState<T>& st,
                                 const VariantCudaBackward<T>& b, const RowGemm<T>& gemm,
                                 cudaStream_t stream) {
  const int64_t H = s.H, G = 4 * H, Hout = s.Hout;
  const bool ln = st.ln_ih_w != nullptr, proj = st.w_hr != nullptr;
  for (int64_t k = s.T - 1; k >= 0; --k) {
    const StepRows<T> v = step_rows(s, k, b.y, b.cells);
    if (v.rows == 0) continue;
    const T* zh = row_or_null(st.zh, v.off, st.zh_ld);
    if (proj) {  // d_raw = ((1 - z_h) (dh + grad_y)) @ w_hr, through d_proj
      T* d_new = b.d_proj + v.off * Hout;
      FUSED_LSTM_TRY(variant_backward_dh<T>(v.rows, Hout, b.dh, b.grad_y + v.off * Hout, zh,
                                            st.zh_ld, d_new, stream),
                     "variant_backward_dh");
      gemm(v.rows, H, Hout, d_new, Hout, st.w_hr, H, false, T(0), b.d_raw, H);
    }
    VariantBackwardStepArgs<T> p;
    p.rows = v.rows;
    p.H = H;
    p.Hout = Hout;
    p.act = b.act + v.off * G;
    p.cand = b.cand + v.off * H;
    p.c_stats = row_or_null(b.c_stats, v.off, 2);
    p.c_prev = v.c_prev;
    p.c_prev_rows = v.from_prev;
    p.c_init = st.c0;
    p.zc = row_or_null(st.zc, v.off, st.zc_ld);
    p.zc_ld = st.zc_ld;
    p.ln_c_w = st.ln_c_w;
    p.ln_c_b = st.ln_c_b;
    p.norm_state = st.norm_state;
    p.d_raw = proj ? b.d_raw : nullptr;
    p.dh = b.dh;
    p.grad_y = b.grad_y + v.off * Hout;
    p.zh = proj ? nullptr : zh;
    p.zh_ld = st.zh_ld;
    p.dc = b.dc;
    p.grad_cells = row_or_null(b.grad_cells, v.off, H);
    p.dgates = b.dgates + v.off * G;
    p.d_n = row_or_null(b.d_n, v.off, H);
    p.ln_hh_w = st.ln_hh_w;
    p.r_hat = row_or_null(b.r_hat, v.off, G);
    p.r_stats = row_or_null(b.r_stats, v.off, 2);
    p.dr = ln ? b.dr + v.off * G : nullptr;
    p.h_in = b.h_in + v.off * Hout;
    p.h_prev = v.y_prev;
    p.h_prev_rows = v.from_prev;
    p.h_init = st.h0;
    p.mask = st.recurrent_mask;
    FUSED_LSTM_TRY(variant_backward_step<T>(p, stream), "variant_backward_step");
    // dh <- dL/dh_prev = (d_r @ w_hh) * mask + z_h dh_t (the kernels left z_h dh_t in dh)
    const T* d_r = ln ? p.dr : p.dgates;
    const T beta = zh ? T(1) : T(0);
    if (!st.recurrent_mask) {
      gemm(v.rows, Hout, G, d_r, G, st.w_hh, Hout, false, beta, b.dh, Hout);
    } else {
      gemm(v.rows, Hout, G, d_r, G, st.w_hh, Hout, false, T(0), b.dh_in, Hout);
      FUSED_LSTM_TRY(variant_masked_accumulate<T>(v.rows, Hout, b.dh_in, st.recurrent_mask,
                                                  b.dh, zh != nullptr, stream),
                     "variant_masked_accumulate");
    }
  }
  // The whole sequence: LN_ih's backward, and the column sums.
  if (ln) {
    FUSED_LSTM_TRY(variant_norm_rows_backward<T>(s.N, G, b.dgates, b.gx_hat, b.gx_stats,
                                                 st.ln_ih_w, b.d_gx, stream),
                   "variant_norm_rows_backward (LN_ih)");
    FUSED_LSTM_TRY(variant_column_sums<T>(s.N, G, b.dgates, b.gx_hat, nullptr, b.d_ln_ih_w,
                                          stream),
                   "variant_column_sums (LN_ih's gain)");
    FUSED_LSTM_TRY(variant_column_sums<T>(s.N, G, b.dgates, b.r_hat, nullptr, b.d_ln_hh_w,
                                          stream),
                   "variant_column_sums (LN_hh's gain)");
    FUSED_LSTM_TRY(variant_column_sums<T>(s.N, H, b.d_n, b.cand, b.c_stats, b.d_ln_c_w, stream),
                   "variant_column_sums (LN_c's gain)");
    FUSED_LSTM_TRY(variant_column_sums<T>(s.N, H, b.d_n, static_cast<const T*>(nullptr),
                                          nullptr, b.d_ln_c_b, stream),
                   "variant_column_sums (LN_c's bias)");
  }
  if (b.d_bias) {
    FUSED_LSTM_TRY(variant_column_sums<T>(s.N, G, b.dgates, static_cast<const T*>(nullptr),
                                          nullptr, b.d_bias, stream),
                   "variant_column_sums (bias)");
  }
  return {};
}

#undef FUSED_LSTM_TRY

#define FUSED_LSTM_INSTANTIATE(T)                                                          \
  template LoopStatus variant_forward_loop<T>(const CudaSteps&,                         \
                                              const VariantCudaState<T>&,                  \
                                              const VariantCudaForward<T>&,                \
                                              const RowGemm<T>&, cudaStream_t);            \
  template LoopStatus variant_backward_loop<T>(const CudaSteps&,                        \
                                               const VariantCudaState<T>&,                 \
                                               const VariantCudaBackward<T>&,              \
                                               const RowGemm<T>&, cudaStream_t);
FUSED_LSTM_INSTANTIATE(float)
FUSED_LSTM_INSTANTIATE(double)
#undef FUSED_LSTM_INSTANTIATE

}  // namespace fused_lstm::cuda
