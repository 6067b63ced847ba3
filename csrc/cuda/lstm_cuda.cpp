// CUDA binding of the fused_lstm ops, on the current stream. The whole-sequence
// GEMMs run through ATen (cuBLAS). The time loops take one of two routes per
// layer (step_route): our step kernels with the recurrent product inside, or a
// cuBLAS GEMM per step followed by a pointwise kernel (lstm_cuda_kernels.cu).
// Both produce the same buffers with the same meaning as the CPU binding
// (lstm_cpu.cpp), except that the saved gates keep the natural i, f, g, o
// column order.
//
// float16/bfloat16 inputs run in float32 (gates, cells, the recurrent state and
// all accumulation) and are rounded to the input dtype on the way out.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <vector>
#include <string>
#include <tuple>
#include <type_traits>

#include "../lstm_layer_args.h"
#include "../lstm_layer_directions.h"
#include "lstm_cuda_kernels.h"

namespace fused_lstm::cuda {

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

const Tensor* opt(const OptTensor& t) { return t.has_value() ? &*t : nullptr; }

void check_launch(cudaError_t err, const char* kernel) {
  TORCH_CHECK(err == cudaSuccess, "fused_lstm: launching ", kernel, " failed: ",
              cudaGetErrorString(err));
}

// cuBLAS's own GEMM entry points, found in the libcublas that libtorch_cuda
// loaded (ATen's typed wrappers around them are not exported). Null where they
// cannot be found; the per-step GEMMs then go through ATen.
void* cublas_symbol(const char* name) {
  if (void* p = dlsym(RTLD_DEFAULT, name)) return p;
  // libcublas came in as a dependency of libtorch_cuda, maybe with local scope:
  // ask the loaded copy itself (RTLD_NOLOAD never loads a second one).
  for (const char* lib : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
    if (void* handle = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD)) {
      if (void* p = dlsym(handle, name)) return p;
    }
  }
  return nullptr;
}
using SgemmFn = decltype(&cublasSgemm_v2);
using DgemmFn = decltype(&cublasDgemm_v2);
const SgemmFn cublas_sgemm = reinterpret_cast<SgemmFn>(cublas_symbol("cublasSgemm_v2"));
const DgemmFn cublas_dgemm = reinterpret_cast<DgemmFn>(cublas_symbol("cublasDgemm_v2"));

cublasStatus_t cublas_gemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb,
                           int m, int n, int k, const float* alpha, const float* A, int lda,
                           const float* B, int ldb, const float* beta, float* C, int ldc) {
  return cublas_sgemm(handle, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
cublasStatus_t cublas_gemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb,
                           int m, int n, int k, const double* alpha, const double* A, int lda,
                           const double* B, int ldb, const double* beta, double* C, int ldc) {
  return cublas_dgemm(handle, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

// Row-major C[m, n] (ld ldc) = A[m, k] (ld lda) @ op(B) + beta * C, straight into
// cuBLAS on `handle` (ATen's handle for the current stream, whose float32 math
// mode follows torch.backends.cuda.matmul.allow_tf32, as at::mm does). No
// dispatcher and no tensor objects: they would cost more host time than an
// LSTM step's GEMM takes on the GPU. op(B) = B^T for B: [n, k] (ld ldb) when
// b_rows_are_n, else B: [k, n].
template <typename T>
void gemm_rows(cublasHandle_t handle, int64_t m, int64_t n, int64_t k, const T* A, int64_t lda,
               const T* B, int64_t ldb, bool b_rows_are_n, T beta, T* C, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const T one = 1;
  // cuBLAS is column-major: C^T [n, m] = op(B)^T [n, k] @ A^T [k, m].
  const cublasStatus_t status = cublas_gemm(
      handle, b_rows_are_n ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n),
      static_cast<int>(m), static_cast<int>(k), &one, B, static_cast<int>(ldb), A,
      static_cast<int>(lda), &beta, C, static_cast<int>(ldc));
  TORCH_CHECK(status == CUBLAS_STATUS_SUCCESS, "fused_lstm: cuBLAS GEMM failed with status ",
              static_cast<int>(status));
}

// How a time loop runs its recurrent products.
enum class StepRoute {
  fused,  // our step kernels with the product inside (no projection): one launch per step
  gemm,   // a cuBLAS GEMM per step, then the pointwise kernel
  aten,   // the same through at::addmm_/mm_out, where cuBLAS's entry points were not found
};

// The fused steps win while the recurrent product is small, cuBLAS above. On
// an H200 (benchmarks/NOTES.md, "CUDA: the two step routes"), training ran
// fused / with cuBLAS at these fractions of cuDNN's speed: B = 16 H = 128
// 0.27x / 0.06x, B = 128 H = 128 0.47x / 0.31x, B = 64 H = 256 1.19x / 1.01x,
// B = 64 H = 512 0.77x / 1.00x, B = 1 H = 1024 0.46x / 0.93x. At H = 512 and
// B = 1 the forward alone was 14% faster fused, the backward 18% slower.
// FUSED_LSTM_CUDA_STEP=fused|gemm overrides the choice (layers with a
// projection always take cuBLAS).
StepRoute step_route(const LayerArgs& a, bool backward) {
  const char* env = std::getenv("FUSED_LSTM_CUDA_STEP");
  const std::string want = env ? env : "";
  TORCH_CHECK(want.empty() || want == "fused" || want == "gemm",
              "fused_lstm: FUSED_LSTM_CUDA_STEP must be 'fused' or 'gemm', got '", want, "'");
  const StepRoute library =
      cublas_sgemm != nullptr && cublas_dgemm != nullptr ? StepRoute::gemm : StepRoute::aten;
  if (a.has_proj || want == "gemm") return library;
  if (want == "fused") return StepRoute::fused;
  const bool small = a.H <= 256 && a.B <= 128;
  const bool one_row_forward = !backward && a.B == 1 && a.H <= 512;
  return small || one_row_forward ? StepRoute::fused : library;
}

struct Named {
  const char* name;
  const Tensor* t;  // null: an absent optional argument
};

// All tensor arguments must sit on one CUDA device. The dispatcher routes a call
// here as soon as any argument is on CUDA, so a CPU tensor in the mix lands
// here too and is reported by name.
void check_same_cuda_device(const char* op, const std::vector<Named>& tensors) {
  const Named* first = nullptr;
  for (const Named& n : tensors) {
    if (n.t != nullptr && n.t->defined() && n.t->is_cuda()) {
      first = &n;
      break;
    }
  }
  TORCH_CHECK(first != nullptr, op, ": the CUDA kernel was called without a CUDA tensor");
  const c10::Device device = first->t->device();
  for (const Named& n : tensors) {
    if (n.t == nullptr || !n.t->defined()) continue;
    TORCH_CHECK(n.t->device() == device, op,
                ": expected all tensors on the same CUDA device, but ", first->name, " is on ",
                device, " and ", n.name, " is on ", n.t->device());
  }
}

// batch_sizes stays on the CPU, where PackedSequence keeps it and the loops read it.
void check_batch_sizes_on_cpu(const char* op, const OptTensor& batch_sizes) {
  TORCH_CHECK(!batch_sizes.has_value() || batch_sizes->device().is_cpu(), op,
              ": expected batch_sizes on the CPU (where PackedSequence keeps it), got a tensor "
              "on ",
              batch_sizes->device());
}

// One forward pointwise step, picking the kernel for the output dtype `dt`.
// y (may be null) is the base of the output buffer; the step's rows start
// y_offset elements in.
template <typename acc_t>
cudaError_t forward_step(at::ScalarType dt, int64_t rows, int64_t H, acc_t* gates,
                         int64_t gates_ld, acc_t* c, acc_t* c_save, acc_t* h, int64_t h_ld,
                         void* y, int64_t y_offset, int64_t y_ld, bool save_gates,
                         cudaStream_t stream) {
  if constexpr (std::is_same_v<acc_t, double>) {
    double* yp = y ? static_cast<double*>(y) + y_offset : nullptr;
    return lstm_forward_pointwise<double, double>(rows, H, gates, gates_ld, c, H, c_save, H, h,
                                                  h_ld, yp, y_ld, save_gates, stream);
  } else {
    switch (dt) {
      case at::kHalf: {
        __half* yp = y ? static_cast<__half*>(y) + y_offset : nullptr;
        return lstm_forward_pointwise<float, __half>(rows, H, gates, gates_ld, c, H, c_save, H,
                                                     h, h_ld, yp, y_ld, save_gates, stream);
      }
      case at::kBFloat16: {
        __nv_bfloat16* yp = y ? static_cast<__nv_bfloat16*>(y) + y_offset : nullptr;
        return lstm_forward_pointwise<float, __nv_bfloat16>(
            rows, H, gates, gates_ld, c, H, c_save, H, h, h_ld, yp, y_ld, save_gates, stream);
      }
      case at::kFloat: {
        float* yp = y ? static_cast<float*>(y) + y_offset : nullptr;
        return lstm_forward_pointwise<float, float>(rows, H, gates, gates_ld, c, H, c_save, H,
                                                    h, h_ld, yp, y_ld, save_gates, stream);
      }
      default:
        break;
    }
    TORCH_CHECK(false, "lstm_layer_forward: no CUDA kernel for dtype ", dt);
    return cudaErrorInvalidValue;
  }
}

// One forward step with the recurrent product inside, picking the kernel for
// the output dtype `dt`. y (may be null) is the base of the output buffer; the
// step's rows start y_offset elements in.
template <typename acc_t>
cudaError_t fused_forward_step(at::ScalarType dt, int64_t rows, int64_t H, acc_t* gates,
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
    switch (dt) {
      case at::kHalf: {
        __half* yp = y ? static_cast<__half*>(y) + y_offset : nullptr;
        return lstm_forward_step<float, __half>(rows, H, gates, G, w_hh, h_prev, H, h_prev_rows,
                                                h0, H, c, H, c_save, H, h_out, H, h_last, H, yp,
                                                H, save_gates, stream);
      }
      case at::kBFloat16: {
        __nv_bfloat16* yp = y ? static_cast<__nv_bfloat16*>(y) + y_offset : nullptr;
        return lstm_forward_step<float, __nv_bfloat16>(rows, H, gates, G, w_hh, h_prev, H,
                                                       h_prev_rows, h0, H, c, H, c_save, H,
                                                       h_out, H, h_last, H, yp, H, save_gates,
                                                       stream);
      }
      case at::kFloat: {
        float* yp = y ? static_cast<float*>(y) + y_offset : nullptr;
        return lstm_forward_step<float, float>(rows, H, gates, G, w_hh, h_prev, H, h_prev_rows,
                                               h0, H, c, H, c_save, H, h_out, H, h_last, H, yp,
                                               H, save_gates, stream);
      }
      default:
        break;
    }
    TORCH_CHECK(false, "lstm_layer_forward: no CUDA kernel for dtype ", dt);
    return cudaErrorInvalidValue;
  }
}

// What the forward time loops read and write (pointers into forward_impl's
// tensors, all in acc_t except y).
template <typename acc_t>
struct CudaForwardSteps {
  const LayerArgs& a;
  bool reverse;
  bool need_backward;  // save the activated gates and the cells
  at::ScalarType dt;   // the layer's (and y's) dtype
  cudaStream_t stream;
  acc_t* gates;        // [N, 4H]: x @ w_ih^T + biases in, activated gates out (need_backward)
  acc_t* h;            // [B, Hout]: h0 in, h_n out
  acc_t* c;            // [B, H]: c0 in, c_n out
  acc_t* cells;        // [N, H] or null
  void* y;             // [N, Hout] in dt
  const acc_t* w_hh;   // [4H, Hout]

  // The time index of step k in this direction's order.
  int64_t time(int64_t k) const { return reverse ? a.T - 1 - k : k; }
};

// Fused route: each step reads h_prev from the previous step's rows of hist
// ([N, H], h of every step in acc_t), or from h0 for rows that start at this
// step. It also writes its h into L.h, so that L.h ends up holding h_n.
template <typename acc_t>
void forward_steps_fused(const CudaForwardSteps<acc_t>& L, acc_t* hist, bool y_is_hist,
                         const acc_t* h0) {
  const LayerArgs& a = L.a;
  const int64_t H = a.H, G = 4 * a.H;
  for (int64_t k = 0; k < a.T; ++k) {
    const int64_t t = L.time(k), off = a.offset[t], rows = a.rows[t];
    const int64_t t_prev = k > 0 ? L.time(k - 1) : -1;
    const int64_t prev_rows = k > 0 ? std::min(rows, a.rows[t_prev]) : 0;
    check_launch(fused_forward_step<acc_t>(
                     L.dt, rows, H, L.gates + off * G, L.w_hh,
                     k > 0 ? hist + a.offset[t_prev] * H : nullptr, prev_rows, h0, L.c,
                     L.cells ? L.cells + off * H : nullptr, hist + off * H, L.h,
                     y_is_hist ? nullptr : L.y, off * H, L.need_backward, L.stream),
                 "lstm_forward_step");
  }
}

// Library route: per step, gates += h @ w_hh^T through cuBLAS (or ATen), then
// the pointwise kernel; with a projection, h = h_raw @ w_hr^T through ATen.
template <typename acc_t>
void forward_steps_library(const CudaForwardSteps<acc_t>& L, bool use_cublas, Tensor& gates,
                           Tensor& h,
                           Tensor& y, const Tensor& w_hh_c, const Tensor& w_hr_c,
                           const Tensor& h_raw) {
  const LayerArgs& a = L.a;
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;
  const cublasHandle_t blas = use_cublas ? at::cuda::getCurrentCUDABlasHandle() : nullptr;
  acc_t* h_raw_p = ptr_or_null<acc_t>(h_raw);
  for (int64_t k = 0; k < a.T; ++k) {
    const int64_t t = L.time(k), off = a.offset[t], rows = a.rows[t];
    // gates[off : off + rows] += h[0:rows] @ w_hh^T
    if (use_cublas) {
      gemm_rows<acc_t>(blas, rows, G, Hout, L.h, Hout, L.w_hh, Hout, true, acc_t(1),
                       L.gates + off * G, G);
    } else {
      gates.narrow(0, off, rows).addmm_(h.narrow(0, 0, rows), w_hh_c.t());
    }
    // Projection: the kernel writes h_raw, the GEMM below the state and y.
    check_launch(forward_step<acc_t>(L.dt, rows, H, L.gates + off * G, G, L.c,
                                     L.cells ? L.cells + off * H : nullptr,
                                     a.has_proj ? h_raw_p : L.h, a.has_proj ? H : Hout,
                                     a.has_proj ? nullptr : L.y, off * Hout, Hout,
                                     L.need_backward, L.stream),
                 "lstm_forward_pointwise");
    if (a.has_proj) {
      // h[0:rows] = h_raw[0:rows] @ w_hr^T, the state carried to the next step.
      Tensor h_t = h.narrow(0, 0, rows);
      at::mm_out(h_t, h_raw.narrow(0, 0, rows), w_hr_c.t());
      y.narrow(0, off, rows).copy_(h_t);
    }
  }
}

template <typename acc_t>
DirectionForward forward_impl(
    const LayerArgs& a, const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    bool reverse, bool need_backward, cudaStream_t stream) {
  const auto dt = x.scalar_type();
  const auto ct = compute_dtype(dt);
  const auto opts = x.options().dtype(ct);
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;

  // gates: [N, 4H] = x @ w_ih^T + b_ih + b_hh, for all steps in one GEMM.
  const Tensor x2 = as_compute(x, ct).view({a.N, a.I});
  Tensor gates = at::empty({a.N, G}, opts);
  if (a.has_bias) {
    at::addmm_out(gates, as_compute(*b_ih, ct) + as_compute(*b_hh, ct), x2,
                  as_compute(w_ih, ct).t());
  } else {
    at::mm_out(gates, x2, as_compute(w_ih, ct).t());
  }
  Tensor h = fresh(h0, ct);                      // h: [B, Hout], becomes h_n
  Tensor c = fresh(c0, ct);                      // c: [B, H], becomes c_n
  Tensor y = at::empty({a.N, Hout}, x.options());  // y: [N, Hout] in the input dtype
  Tensor cells = at::empty({need_backward ? a.N : 0, H}, opts);  // cells: [N, H]
  const Tensor w_hh_c = as_compute(w_hh, ct);                    // [4H, Hout]

  const CudaForwardSteps<acc_t> loop{a,
                                reverse,
                                need_backward,
                                dt,
                                stream,
                                gates.data_ptr<acc_t>(),
                                h.data_ptr<acc_t>(),
                                c.data_ptr<acc_t>(),
                                need_backward ? cells.data_ptr<acc_t>() : nullptr,
                                y.data_ptr(),
                                w_hh_c.data_ptr<acc_t>()};
  const StepRoute route = step_route(a, /*backward=*/false);
  if (route == StepRoute::fused) {
    // hist is y itself when y is acc_t.
    const bool y_is_hist = dt == ct;
    const Tensor hist = y_is_hist ? y : at::empty({a.N, Hout}, opts);
    const Tensor h0_c = as_compute(h0, ct);  // read while h is written
    forward_steps_fused(loop, hist.data_ptr<acc_t>(), y_is_hist, h0_c.data_ptr<acc_t>());
  } else {
    const Tensor w_hr_c = a.has_proj ? as_compute(*w_hr, ct) : Tensor();     // [Hout, H]
    const Tensor h_raw = a.has_proj ? at::empty({a.B, H}, opts) : Tensor();  // [B, H]
    forward_steps_library(loop, route == StepRoute::gemm, gates, h, y, w_hh_c, w_hr_c, h_raw);
  }

  if (!need_backward) gates = at::empty({0, G}, opts);
  if (!a.packed) y = y.view({a.T, a.B, Hout});
  return {y, h.to(dt), c.to(dt), gates, cells};
}

// One direction: h0 [B, Hout], c0 [B, H].
DirectionForward forward_direction(const Tensor& x, const OptTensor& batch_sizes,
                                   const Tensor& h0, const Tensor& c0,
                                   const DirectionWeights& w, bool reverse, bool need_backward,
                                   cudaStream_t stream) {
  const auto& [w_ih, w_hh, b_ih, b_hh, w_hr] = w;
  const LayerArgs a = check_layer_args(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr);
  if (compute_dtype(x.scalar_type()) == at::kDouble) {
    return forward_impl<double>(a, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                                need_backward, stream);
  }
  return forward_impl<float>(a, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, need_backward,
                             stream);
}

// What the backward time loops read and write (pointers into backward_impl's
// tensors, all in acc_t).
template <typename acc_t>
struct CudaBackwardSteps {
  const LayerArgs& a;
  bool reverse;
  cudaStream_t stream;
  const acc_t* gates;  // [N, 4H] activated gates saved by forward
  const acc_t* cells;  // [N, H] cell states saved by forward
  const acc_t* c0;     // [B, H]
  const acc_t* gy;     // [N, Hout] grad_y
  acc_t* dh;           // [B, Hout]: grad_h_n in, grad_h0 out (library route)
  acc_t* dc;           // [B, H]: grad_c_n in, grad_c0 out
  acc_t* dgates;       // [N, 4H] out
  const acc_t* w_hh;   // [4H, Hout]

  // The time index of step k in this direction's order (the loops walk k down).
  int64_t time(int64_t k) const { return reverse ? a.T - 1 - k : k; }
  // The step before step k in this direction's order holds c_prev for its
  // rows; rows it lacked (packed, reverse) started from c0.
  int64_t prev_rows(int64_t k) const {
    return k > 0 ? std::min(a.rows[time(k)], a.rows[time(k - 1)]) : 0;
  }
  const acc_t* c_prev(int64_t k) const {
    return k > 0 ? cells + a.offset[time(k - 1)] * a.H : nullptr;
  }
};

// Fused route: each step's kernel turns the d(gates) of the step processed
// before it (the next one in time) into its dh. The loop so leaves one product
// for after it, grad_h0, from each row's last d(gates): all in one step except
// for packed reverse layers, whose rows leave the loop at different steps, so
// dg_last keeps them. w_hh_t: [Hout, 4H].
template <typename acc_t>
Tensor backward_steps_fused(const CudaBackwardSteps<acc_t>& L, const Tensor& dgates,
                            const Tensor& w_hh_c, const Tensor& w_hh_t, const Tensor& grad_h_n) {
  const LayerArgs& a = L.a;
  const int64_t H = a.H, G = 4 * a.H;
  const Tensor dg_last =
      a.packed && L.reverse ? at::empty({a.B, G}, dgates.options()) : Tensor();
  for (int64_t k = a.T - 1; k >= 0; --k) {
    const int64_t t = L.time(k), off = a.offset[t], rows = a.rows[t];
    const int64_t t_next = k < a.T - 1 ? L.time(k + 1) : -1;
    check_launch(lstm_backward_step<acc_t>(
                     rows, H, t_next >= 0 ? L.dgates + a.offset[t_next] * G : nullptr, G,
                     t_next >= 0 ? a.rows[t_next] : 0, L.dh, H, w_hh_t.data_ptr<acc_t>(),
                     L.gates + off * G, G, L.cells + off * H, H, L.c_prev(k), H, L.prev_rows(k),
                     L.c0, H, L.gy + off * H, H, L.dc, H, L.dgates + off * G, G,
                     ptr_or_null<acc_t>(dg_last), G, L.stream),
                 "lstm_backward_step");
  }
  if (a.T == 0) return grad_h_n;
  const int64_t t_last = L.time(0);  // every one of the B rows is in this step
  return at::mm(dg_last.defined() ? dg_last : dgates.narrow(0, a.offset[t_last], a.B), w_hh_c);
}

// Library route: per step the pointwise kernel, then dh = dgates @ w_hh
// through cuBLAS (or ATen); with a projection dh_raw = (dh + grad_y) @ w_hr
// first, through ATen.
template <typename acc_t>
void backward_steps_library(const CudaBackwardSteps<acc_t>& L, bool use_cublas, Tensor& dh,
                            const Tensor& dgates, const Tensor& gy, const Tensor& w_hh_c,
                            const Tensor& w_hr_c, const Tensor& dh_total, const Tensor& dh_raw) {
  const LayerArgs& a = L.a;
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;
  const cublasHandle_t blas = use_cublas ? at::cuda::getCurrentCUDABlasHandle() : nullptr;
  const acc_t* dh_raw_p = ptr_or_null<acc_t>(dh_raw);
  for (int64_t k = a.T - 1; k >= 0; --k) {
    const int64_t t = L.time(k), off = a.offset[t], rows = a.rows[t];
    const acc_t* dh_in = L.dh;
    const acc_t* dh_in2 = L.gy + off * Hout;
    int64_t dh_in_ld = Hout;
    if (a.has_proj) {
      // dh_total = dh + grad_y; dh_raw = dh_total @ w_hr
      Tensor dht = dh_total.narrow(0, off, rows);
      at::add_out(dht, dh.narrow(0, 0, rows), gy.narrow(0, off, rows));
      Tensor dh_raw_t = dh_raw.narrow(0, 0, rows);
      at::mm_out(dh_raw_t, dht, w_hr_c);
      dh_in = dh_raw_p;
      dh_in2 = nullptr;
      dh_in_ld = H;
    }
    check_launch(lstm_backward_pointwise<acc_t>(rows, H, L.gates + off * G, G, L.cells + off * H,
                                                H, L.c_prev(k), H, L.prev_rows(k), L.c0, H, dh_in,
                                                dh_in_ld, dh_in2, Hout, L.dc, H,
                                                L.dgates + off * G, G, L.stream),
                 "lstm_backward_pointwise");
    // dh[0:rows] = dgates @ w_hh: the gradient reaching h_prev.
    if (use_cublas) {
      gemm_rows<acc_t>(blas, rows, Hout, G, L.dgates + off * G, G, L.w_hh, Hout, false, acc_t(0),
                       L.dh, Hout);
    } else {
      Tensor dh_t = dh.narrow(0, 0, rows);
      at::mm_out(dh_t, dgates.narrow(0, off, rows), w_hh_c);
    }
  }
}

template <typename acc_t>
DirectionBackward backward_impl(
    const LayerArgs& a, const Tensor& grad_y, const Tensor& grad_h_n, const Tensor& grad_c_n,
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& w_hr, const Tensor& y, const Tensor& gates, const Tensor& cells,
    bool reverse, cudaStream_t stream) {
  const auto dt = x.scalar_type();
  const auto ct = compute_dtype(dt);
  const auto opts = x.options().dtype(ct);
  const int64_t H = a.H, G = 4 * a.H, Hout = a.Hout;

  const Tensor x2 = as_compute(x, ct).view({a.N, a.I});
  const Tensor y2 = as_compute(y, ct).view({a.N, Hout});
  const Tensor gy = as_compute(grad_y, ct).view({a.N, Hout});
  const Tensor gates_c = as_compute(gates, ct).view({a.N, G});
  const Tensor cells_c = as_compute(cells, ct).view({a.N, H});
  const Tensor h0_c = as_compute(h0, ct), c0_c = as_compute(c0, ct);
  const Tensor w_ih_c = as_compute(w_ih, ct), w_hh_c = as_compute(w_hh, ct);
  Tensor dh = fresh(grad_h_n, ct);            // dh: [B, Hout], becomes grad_h0
  Tensor dc = fresh(grad_c_n, ct);            // dc: [B, H], becomes grad_c0
  Tensor dgates = at::empty({a.N, G}, opts);  // dgates: [N, 4H]
  // dh_total: [N, Hout] dL/dh of every step (projection only).
  const Tensor dh_total = a.has_proj ? at::empty({a.N, Hout}, opts) : Tensor();

  const CudaBackwardSteps<acc_t> loop{a,
                                 reverse,
                                 stream,
                                 gates_c.data_ptr<acc_t>(),
                                 cells_c.data_ptr<acc_t>(),
                                 c0_c.data_ptr<acc_t>(),
                                 gy.data_ptr<acc_t>(),
                                 dh.data_ptr<acc_t>(),
                                 dc.data_ptr<acc_t>(),
                                 dgates.data_ptr<acc_t>(),
                                 w_hh_c.data_ptr<acc_t>()};
  const StepRoute route = step_route(a, /*backward=*/true);
  if (route == StepRoute::fused) {
    dh = backward_steps_fused(loop, dgates, w_hh_c, w_hh_c.t().contiguous(), dh);
  } else {
    const Tensor w_hr_c = a.has_proj ? as_compute(*w_hr, ct) : Tensor();      // [Hout, H]
    const Tensor dh_raw = a.has_proj ? at::empty({a.B, H}, opts) : Tensor();  // [B, H]
    backward_steps_library(loop, route == StepRoute::gemm, dh, dgates, gy, w_hh_c, w_hr_c,
                           dh_total, dh_raw);
  }

  // Whole-sequence gradients, each one GEMM or reduction over all N rows.
  Tensor grad_x = at::mm(dgates, w_ih_c);     // [N, I]
  Tensor grad_w_ih = at::mm(dgates.t(), x2);  // [4H, I]
  Tensor grad_w_hh;                           // [4H, Hout] = sum_t dgates_t^T h_prev_t
  if (a.T == 0) {
    grad_w_hh = at::zeros({G, Hout}, opts);
  } else if (a.packed) {
    // h_prev: [N, Hout], the state each row of each step started from: y of the
    // previous step in this direction's order, or h0 where the row starts fresh.
    // index[n] >= 0 names a row of y, index[n] = -(b + 1) row b of h0.
    Tensor index_cpu = at::empty({a.N}, at::TensorOptions().dtype(at::kLong));
    int64_t* idx = index_cpu.data_ptr<int64_t>();
    for (int64_t k = 0; k < a.T; ++k) {
      const int64_t t = loop.time(k), off = a.offset[t], rows = a.rows[t];
      const int64_t from_prev = loop.prev_rows(k);
      for (int64_t r = 0; r < rows; ++r) {
        idx[off + r] = r < from_prev ? a.offset[loop.time(k - 1)] + r : -(r + 1);
      }
    }
    const Tensor index = index_cpu.to(x.device());
    Tensor h_prev = at::empty({a.N, Hout}, opts);
    check_launch(lstm_gather_rows<acc_t>(a.N, Hout, index.data_ptr<int64_t>(),
                                         y2.data_ptr<acc_t>(), Hout, h0_c.data_ptr<acc_t>(),
                                         Hout, h_prev.data_ptr<acc_t>(), Hout, stream),
                 "lstm_gather_rows");
    grad_w_hh = at::mm(dgates.t(), h_prev);
  } else {
    // Dense: step t starts from y of its neighbour step, except the first one from h0.
    const int64_t rest = a.N - a.B;
    const int64_t first = reverse ? rest : 0;  // rows of the step that starts from h0
    grad_w_hh = at::mm(dgates.narrow(0, first, a.B).t(), h0_c);
    if (rest > 0) {
      grad_w_hh.addmm_(dgates.narrow(0, reverse ? 0 : a.B, rest).t(),
                       y2.narrow(0, reverse ? a.B : 0, rest));
    }
  }
  Tensor grad_b_ih = a.has_bias ? dgates.sum(0) : at::empty({0}, opts);
  Tensor grad_b_hh = a.has_bias ? grad_b_ih.clone() : at::empty({0}, opts);
  Tensor grad_w_hr = at::empty({0}, opts);
  if (a.has_proj) {
    // h_raw = o * tanh(c) of every step, recomputed from what forward saved.
    Tensor h_raw = at::empty({a.N, H}, opts);
    check_launch(lstm_hidden_from_saved<acc_t>(a.N, H, loop.gates, G, loop.cells, H,
                                               h_raw.data_ptr<acc_t>(), H, stream),
                 "lstm_hidden_from_saved");
    grad_w_hr = at::mm(dh_total.t(), h_raw);  // [Hout, H]
  }
  const auto wdt = w_ih.scalar_type();
  return {grad_x.view(x.sizes()).to(dt), dh.to(dt),         dc.to(dt),
          grad_w_ih.to(wdt),             grad_w_hh.to(wdt), grad_b_ih.to(wdt),
          grad_b_hh.to(wdt),             grad_w_hr.to(wdt)};
}

// One direction: h0, grad_h_n [B, Hout]; c0, grad_c_n [B, H].
DirectionBackward backward_direction(const Tensor& grad_y, const Tensor& grad_h_n,
                                     const Tensor& grad_c_n, const Tensor& x,
                                     const OptTensor& batch_sizes, const Tensor& h0,
                                     const Tensor& c0, const DirectionWeights& w, const Tensor& y,
                                     const Tensor& gates, const Tensor& cells, bool reverse,
                                     cudaStream_t stream) {
  const auto& [w_ih, w_hh, b_ih, b_hh, w_hr] = w;
  const LayerArgs a = check_layer_args(x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr);
  check_backward_args(a, grad_y, grad_h_n, grad_c_n, h0, c0, y, gates, cells);
  if (compute_dtype(x.scalar_type()) == at::kDouble) {
    return backward_impl<double>(a, grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, w_hr, y,
                                 gates, cells, reverse, stream);
  }
  return backward_impl<float>(a, grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, w_hr, y,
                              gates, cells, reverse, stream);
}

// The two directions of a bidirectional layer run one after the other on the current
// stream.
void run_directions(int64_t count, const std::function<void(int64_t)>& fn) {
  for (int64_t d = 0; d < count; ++d) fn(d);
}

// The device check of every tensor argument, by name.
void check_on_one_cuda_device(const char* op, std::initializer_list<Named> named,
                              const std::vector<Tensor>& weights, const char* weights_name) {
  std::vector<Named> all(named);
  for (const Tensor& w : weights) all.push_back({weights_name, &w});
  check_same_cuda_device(op, all);
}

LayerForward lstm_layer_forward_cuda(const Tensor& x, const OptTensor& batch_sizes,
                                     const Tensor& h0, const Tensor& c0,
                                     const std::vector<Tensor>& weights, bool has_bias,
                                     bool has_proj, bool bidirectional, bool reverse,
                                     bool need_backward) {
  constexpr const char* op = "lstm_layer_forward";
  check_batch_sizes_on_cpu(op, batch_sizes);
  check_on_one_cuda_device(op, {{"x", &x}, {"h0", &h0}, {"c0", &c0}}, weights, "weights");
  const auto w = split_direction_weights(op, weights, has_bias, has_proj, bidirectional, reverse);
  const int64_t directions = static_cast<int64_t>(w.size());
  check_layer_states(op, h0, c0, directions);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  return layer_forward(
      x, h0, c0, directions, reverse,
      [&](int64_t d, const Tensor& h0_d, const Tensor& c0_d, bool reverse_d) {
        return forward_direction(x, batch_sizes, h0_d, c0_d, w[d], reverse_d, need_backward,
                                 stream);
      },
      run_directions);
}

LayerBackward lstm_layer_backward_cuda(const Tensor& grad_y, const Tensor& grad_h_n,
                                       const Tensor& grad_c_n, const Tensor& x,
                                       const OptTensor& batch_sizes, const Tensor& h0,
                                       const Tensor& c0, const std::vector<Tensor>& weights,
                                       bool has_bias, bool has_proj, bool bidirectional,
                                       bool reverse, const Tensor& y,
                                       const std::vector<Tensor>& saved) {
  constexpr const char* op = "lstm_layer_backward";
  check_batch_sizes_on_cpu(op, batch_sizes);
  std::vector<Tensor> tensors = weights;
  tensors.insert(tensors.end(), saved.begin(), saved.end());
  check_on_one_cuda_device(op,
                           {{"grad_y", &grad_y}, {"grad_h_n", &grad_h_n},
                            {"grad_c_n", &grad_c_n}, {"x", &x}, {"h0", &h0}, {"c0", &c0},
                            {"y", &y}},
                           tensors, "weights or saved");
  const auto w = split_direction_weights(op, weights, has_bias, has_proj, bidirectional, reverse);
  const int64_t directions = static_cast<int64_t>(w.size());
  check_layer_backward_args(grad_y, grad_h_n, grad_c_n, h0, c0, y, saved, directions);
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  return layer_backward(
      grad_y, grad_h_n, grad_c_n, y, saved, directions, reverse, has_bias, has_proj,
      [&](int64_t d, const Tensor& gy, const Tensor& gh, const Tensor& gc, const Tensor& y_d,
          const Tensor& gates, const Tensor& cells, bool reverse_d) {
        return backward_direction(gy, gh, gc, x, batch_sizes, h0[d], c0[d], w[d], y_d, gates,
                                  cells, reverse_d, stream);
      },
      run_directions);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_lstm, CUDA, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_cuda);
  m.impl("lstm_layer_backward", &lstm_layer_backward_cuda);
}

}  // namespace fused_lstm::cuda
