// The CUDA forward time loop of one layer direction (lstm_cuda_loops.h).
#include <type_traits>

#include "cuda_blas.h"
#include "lstm_cuda_kernels.h"
#include "lstm_cuda_loops.h"

namespace fused_lstm::cuda {

namespace {

// One forward pointwise step, with the kernel for the output type `out`. y (may be null)
// is the base of the output buffer; the step's rows start y_offset elements in.
template <typename acc_t>
cudaError_t forward_step(OutType out, int64_t rows, int64_t H, acc_t* gates, int64_t gates_ld,
                         acc_t* c, acc_t* c_save, acc_t* h, int64_t h_ld, void* y,
                         int64_t y_offset, int64_t y_ld, bool save_gates, cudaStream_t stream) {
  if constexpr (std::is_same_v<acc_t, double>) {
    double* yp = y ? static_cast<double*>(y) + y_offset : nullptr;
    return lstm_forward_pointwise<double, double>(rows, H, gates, gates_ld, c, H, c_save, H, h,
                                                  h_ld, yp, y_ld, save_gates, stream);
  } else {
    switch (out) {
      case OutType::f16: {
        __half* yp = y ? static_cast<__half*>(y) + y_offset : nullptr;
        return lstm_forward_pointwise<float, __half>(rows, H, gates, gates_ld, c, H, c_save, H,
                                                     h, h_ld, yp, y_ld, save_gates, stream);
      }
      case OutType::bf16: {
        __nv_bfloat16* yp = y ? static_cast<__nv_bfloat16*>(y) + y_offset : nullptr;
        return lstm_forward_pointwise<float, __nv_bfloat16>(
            rows, H, gates, gates_ld, c, H, c_save, H, h, h_ld, yp, y_ld, save_gates, stream);
      }
      case OutType::f32: {
        float* yp = y ? static_cast<float*>(y) + y_offset : nullptr;
        return lstm_forward_pointwise<float, float>(rows, H, gates, gates_ld, c, H, c_save, H,
                                                    h, h_ld, yp, y_ld, save_gates, stream);
      }
      default:
        return cudaErrorInvalidValue;
    }
  }
}

// One forward step with the recurrent product inside, with the kernel for the output type
// `out`. y (may be null) is the base of the output buffer; the step's rows start y_offset
// elements in.
template <typename acc_t>
cudaError_t fused_forward_step(OutType out, int64_t rows, int64_t H, acc_t* gates,
                               const acc_t* w_hh, const acc_t* h_prev, int64_t h_prev_rows,
                               const acc_t* h0, acc_t* c, acc_t* c_save, acc_t* h_out,
                               acc_t* h_last, void* y, int64_t y_offset, bool save_gates,
                               cudaStream_t stream) {
  const int64_t G = 4 * H;
  if constexpr (std::is_same_v<acc_t, double>) {
    double* yp = y ? static_cast<double*>(y) + y_offset : nullptr;
    return lstm_forward_step<double, double>(rows, H, gates, G, w_hh, h_prev, H, h_prev_rows, h0,
                                             H, c, H, c_save, H, h_out, H, h_last, H, yp, H,
                                             save_gates, stream);
  } else {
    switch (out) {
      case OutType::f16: {
        __half* yp = y ? static_cast<__half*>(y) + y_offset : nullptr;
        return lstm_forward_step<float, __half>(rows, H, gates, G, w_hh, h_prev, H, h_prev_rows,
                                                h0, H, c, H, c_save, H, h_out, H, h_last, H, yp,
                                                H, save_gates, stream);
      }
      case OutType::bf16: {
        __nv_bfloat16* yp = y ? static_cast<__nv_bfloat16*>(y) + y_offset : nullptr;
        return lstm_forward_step<float, __nv_bfloat16>(rows, H, gates, G, w_hh, h_prev, H,
                                                       h_prev_rows, h0, H, c, H, c_save, H,
                                                       h_out, H, h_last, H, yp, H, save_gates,
                                                       stream);
      }
      case OutType::f32: {
        float* yp = y ? static_cast<float*>(y) + y_offset : nullptr;
        return lstm_forward_step<float, float>(rows, H, gates, G, w_hh, h_prev, H, h_prev_rows,
                                               h0, H, c, H, c_save, H, h_out, H, h_last, H, yp,
                                               H, save_gates, stream);
      }
      default:
        return cudaErrorInvalidValue;
    }
  }
}

// Fused route: each step reads h_prev from the previous step's rows of hist ([N, H], h of
// every step in acc_t: y itself when y is in acc_t), or from h0 for rows that start at this
// step. It also writes its h into f.h, so that f.h ends up holding h_n.
template <typename acc_t>
LoopStatus forward_steps_fused(const CudaSteps& s, const CudaForwardLoop<acc_t>& f,
                               cudaStream_t stream) {
  const int64_t H = s.H, G = 4 * s.H;
  const bool y_is_hist = f.hist == nullptr;
  acc_t* hist = y_is_hist ? static_cast<acc_t*>(f.y) : f.hist;
  for (int64_t k = 0; k < s.T; ++k) {
    const int64_t t = s.time(k), off = s.offset[t], rows = s.rows[t];
    FUSED_LSTM_TRY(
        fused_forward_step<acc_t>(f.out, rows, H, f.gates + off * G, f.w_hh,
                                  k > 0 ? hist + s.offset[s.time(k - 1)] * H : nullptr,
                                  s.rows_from_prev(k),
                                  f.h0, f.c, f.cells ? f.cells + off * H : nullptr,
                                  hist + off * H, f.h, y_is_hist ? nullptr : f.y, off * H,
                                  f.need_backward, stream),
        "lstm_forward_step");
  }
  return {};
}

// Row `row` of a 16-bit matrix with rows of ld elements.
const void* row_16bit(const void* base, int64_t row, int64_t ld) {
  return static_cast<const char*>(base) + row * ld * 2;
}

// gates[off : off + rows] += h16 @ w_hh^T on tensor cores, h16 the step's h rounded to 16
// bits: y's rows of the previous step for rows [0, from_prev), h0's for the rest.
LoopStatus recurrent_product_16bit(const CudaSteps& s, const CudaForwardLoop<float>& f,
                                   int64_t k, cublasHandle_t blas) {
  const int64_t G = 4 * s.H, Hout = s.Hout;
  const bool bf16 = f.out == OutType::bf16;
  const int64_t t = s.time(k), off = s.offset[t], rows = s.rows[t];
  const int64_t from_prev = s.rows_from_prev(k);
  if (from_prev > 0) {
    FUSED_LSTM_TRY_BLAS(gemm_rows_16bit(blas, bf16, from_prev, G, Hout,
                                        row_16bit(f.y, s.offset[s.time(k - 1)], Hout), Hout,
                                        f.w_hh_16bit, Hout, true, 1.0f, f.gates + off * G, G),
                        "the recurrent GEMM (cuBLAS, 16-bit)");
  }
  if (rows > from_prev) {
    FUSED_LSTM_TRY_BLAS(gemm_rows_16bit(blas, bf16, rows - from_prev, G, Hout,
                                        row_16bit(f.h0_16bit, from_prev, Hout), Hout,
                                        f.w_hh_16bit, Hout, true, 1.0f,
                                        f.gates + (off + from_prev) * G, G),
                        "the recurrent GEMM (cuBLAS, 16-bit)");
  }
  return {};
}

// gemm route: per step, gates += h @ w_hh^T on cuBLAS, then the pointwise kernel; with a
// projection, h = h_raw @ w_hr^T on cuBLAS, copied into y's rows (or hist's, where y is
// not in acc_t).
template <typename acc_t>
LoopStatus forward_steps_gemm(const CudaSteps& s, const CudaForwardLoop<acc_t>& f,
                              cublasHandle_t blas, cudaStream_t stream) {
  const int64_t H = s.H, G = 4 * s.H, Hout = s.Hout;
  const bool has_proj = f.w_hr != nullptr;
  for (int64_t k = 0; k < s.T; ++k) {
    const int64_t t = s.time(k), off = s.offset[t], rows = s.rows[t];
    // gates[off : off + rows] += h[0:rows] @ w_hh^T
    if constexpr (std::is_same_v<acc_t, float>) {
      if (f.w_hh_16bit != nullptr) {
        const LoopStatus status = recurrent_product_16bit(s, f, k, blas);
        if (!status.ok()) return status;
      }
    }
    if (f.w_hh_16bit == nullptr) {
      FUSED_LSTM_TRY_BLAS(gemm_rows<acc_t>(blas, rows, G, Hout, f.h, Hout, f.w_hh, Hout, true,
                                           acc_t(1), f.gates + off * G, G),
                          "the recurrent GEMM (cuBLAS)");
    }
    // Projection: the kernel writes h_raw, the GEMM below the state and y.
    FUSED_LSTM_TRY(forward_step<acc_t>(f.out, rows, H, f.gates + off * G, G, f.c,
                                              f.cells ? f.cells + off * H : nullptr,
                                              has_proj ? f.h_raw : f.h, has_proj ? H : Hout,
                                              has_proj ? nullptr : f.y, off * Hout, Hout,
                                              f.need_backward, stream),
                          "lstm_forward_pointwise");
    if (has_proj) {
      // h[0:rows] = h_raw[0:rows] @ w_hr^T, the state carried to the next step.
      FUSED_LSTM_TRY_BLAS(gemm_rows<acc_t>(blas, rows, Hout, H, f.h_raw, H, f.w_hr, H, true,
                                           acc_t(0), f.h, Hout),
                          "the projection GEMM (cuBLAS)");
      acc_t* h_rows = (f.hist ? f.hist : static_cast<acc_t*>(f.y)) + off * Hout;
      FUSED_LSTM_TRY(cudaMemcpyAsync(h_rows, f.h, rows * Hout * sizeof(acc_t),
                                            cudaMemcpyDeviceToDevice, stream),
                            "copying h into y");
    }
  }
  return {};
}

}  // namespace

template <typename acc_t>
LoopStatus lstm_cuda_forward_loop(const CudaSteps& s, const CudaForwardLoop<acc_t>& f,
                                  cublasHandle_t blas, cudaStream_t stream) {
  if (f.w_hh_16bit != nullptr &&
      (!std::is_same_v<acc_t, float> || f.h0_16bit == nullptr || f.route != StepRoute::gemm ||
       f.w_hr != nullptr || f.persistent != nullptr ||
       (f.out != OutType::f16 && f.out != OutType::bf16))) {
    return launch_status(cudaErrorInvalidValue,
                         "the 16-bit recurrent GEMMs (gemm route, 16-bit, no projection only)");
  }
  if constexpr (std::is_same_v<acc_t, float>) {
    // Persistent: the whole recurrence in one launch. It reads the pre-activations
    // ([T, B, 4H]), h0 and c (c0); writes y [T, B, H], the cells, and h_n, c_n into h, c.
    if (f.persistent != nullptr) {
      return launch_status(
          lstm_persistent_forward(*f.persistent, s.T, s.B, s.H, s.reverse, f.gates, f.w_hh,
                                  f.h0, f.c, static_cast<float*>(f.y), f.cells, f.h, f.c,
                                  f.need_backward, stream),
          "lstm_persistent_forward");
    }
  } else if (f.persistent != nullptr) {
    return launch_status(cudaErrorInvalidValue, "lstm_persistent_forward (float32 only)");
  }
  if (f.route == StepRoute::fused) return forward_steps_fused(s, f, stream);
  return forward_steps_gemm(s, f, blas, stream);
}

template LoopStatus lstm_cuda_forward_loop<float>(const CudaSteps&,
                                                  const CudaForwardLoop<float>&,
                                                  cublasHandle_t, cudaStream_t);
template LoopStatus lstm_cuda_forward_loop<double>(const CudaSteps&,
                                                   const CudaForwardLoop<double>&,
                                                   cublasHandle_t, cudaStream_t);

}  // namespace fused_lstm::cuda
