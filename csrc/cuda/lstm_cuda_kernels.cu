// Per-step pointwise CUDA kernels of the fused LSTM (see lstm_cuda_kernels.h).
//
// Every kernel walks a [rows, cols] grid of elements: threadIdx.x/blockIdx.x
// over the hidden columns (so a warp touches consecutive addresses of one row,
// and the four gates of a column sit H apart), threadIdx.y/blockIdx.y over the
// rows, both with grid-stride loops so any size fits the grid limits. All
// offsets are int64_t: T * B * 4H may exceed 2^31.
//
// The gate arithmetic is the shared code in ../lstm_gate_math.h, the same the
// CPU kernels run.
#include "lstm_cuda_kernels.h"

#include <algorithm>

#include "../lstm_gate_math.h"

namespace fused_lstm::cuda {

namespace {

constexpr int64_t kThreadsPerBlock = 256;
constexpr int64_t kMaxGridDim = 65535;

struct LaunchShape {
  dim3 grid;
  dim3 block;
};

// Block: up to 256 threads along the columns (rounded up to a warp multiple),
// the rest of the 256 along the rows, so narrow layers still fill a block.
LaunchShape launch_shape(int64_t rows, int64_t cols) {
  const int64_t bx = std::min<int64_t>(kThreadsPerBlock, (cols + 31) / 32 * 32);
  const int64_t by = kThreadsPerBlock / bx;
  const int64_t gx = std::min<int64_t>((cols + bx - 1) / bx, kMaxGridDim);
  const int64_t gy = std::min<int64_t>((rows + by - 1) / by, kMaxGridDim);
  return {dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)),
          dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by))};
}

__device__ __forceinline__ int64_t first_row() {
  return static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y;
}
__device__ __forceinline__ int64_t row_step() {
  return static_cast<int64_t>(gridDim.y) * blockDim.y;
}
__device__ __forceinline__ int64_t first_col() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t col_step() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// Rounds a computed value to the layer's output type.
__device__ __forceinline__ void store_out(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_out(double* p, double v) { *p = v; }
__device__ __forceinline__ void store_out(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_out(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}

template <typename acc_t, typename out_t>
__global__ void forward_pointwise_kernel(
    int64_t rows, int64_t H,
    acc_t* __restrict__ gates, int64_t gates_ld,
    acc_t* __restrict__ c, int64_t c_ld,
    acc_t* __restrict__ c_save, int64_t c_save_ld,
    acc_t* __restrict__ h, int64_t h_ld,
    out_t* __restrict__ y, int64_t y_ld,
    bool save_gates) {
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    acc_t* g_row = gates + r * gates_ld;
    for (int64_t j = first_col(); j < H; j += col_step()) {
      const acc_t i = gate_sigmoid(g_row[j]);
      const acc_t f = gate_sigmoid(g_row[H + j]);
      const acc_t g = gate_tanh(g_row[2 * H + j]);
      const acc_t o = gate_sigmoid(g_row[3 * H + j]);
      acc_t* c_elem = c + r * c_ld + j;
      const acc_t c_new = lstm_cell_state(i, f, g, *c_elem);
      const acc_t h_new = lstm_hidden(o, gate_tanh(c_new));
      *c_elem = c_new;
      if (c_save != nullptr) c_save[r * c_save_ld + j] = c_new;
      if (h != nullptr) h[r * h_ld + j] = h_new;
      if (y != nullptr) store_out(y + r * y_ld + j, h_new);
      if (save_gates) {
        g_row[j] = i;
        g_row[H + j] = f;
        g_row[2 * H + j] = g;
        g_row[3 * H + j] = o;
      }
    }
  }
}

template <typename acc_t>
__global__ void backward_pointwise_kernel(
    int64_t rows, int64_t H,
    const acc_t* __restrict__ act, int64_t act_ld,
    const acc_t* __restrict__ c, int64_t c_ld,
    const acc_t* __restrict__ c_prev, int64_t c_prev_ld, int64_t c_prev_rows,
    const acc_t* __restrict__ c_init, int64_t c_init_ld,
    const acc_t* __restrict__ dh, int64_t dh_ld,
    const acc_t* __restrict__ dh2, int64_t dh2_ld,
    acc_t* __restrict__ dc, int64_t dc_ld,
    acc_t* __restrict__ dgates, int64_t dgates_ld) {
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    const acc_t* a_row = act + r * act_ld;
    const acc_t* cp_row = r < c_prev_rows ? c_prev + r * c_prev_ld : c_init + r * c_init_ld;
    acc_t* dg_row = dgates + r * dgates_ld;
    for (int64_t j = first_col(); j < H; j += col_step()) {
      acc_t dh_total = dh[r * dh_ld + j];
      if (dh2 != nullptr) dh_total = dh_total + dh2[r * dh2_ld + j];
      acc_t* dc_elem = dc + r * dc_ld + j;
      acc_t d_ai, d_af, d_ag, d_ao, dc_prev;
      lstm_gate_grads(a_row[j], a_row[H + j], a_row[2 * H + j], a_row[3 * H + j], cp_row[j],
                      gate_tanh(c[r * c_ld + j]), dh_total, *dc_elem,
                      d_ai, d_af, d_ag, d_ao, dc_prev);
      dg_row[j] = d_ai;
      dg_row[H + j] = d_af;
      dg_row[2 * H + j] = d_ag;
      dg_row[3 * H + j] = d_ao;
      *dc_elem = dc_prev;
    }
  }
}

template <typename acc_t>
__global__ void hidden_from_saved_kernel(
    int64_t rows, int64_t H,
    const acc_t* __restrict__ act, int64_t act_ld,
    const acc_t* __restrict__ c, int64_t c_ld,
    acc_t* __restrict__ h, int64_t h_ld) {
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    const acc_t* o_row = act + r * act_ld + 3 * H;
    for (int64_t j = first_col(); j < H; j += col_step()) {
      h[r * h_ld + j] = lstm_hidden(o_row[j], gate_tanh(c[r * c_ld + j]));
    }
  }
}

template <typename acc_t>
__global__ void gather_rows_kernel(
    int64_t rows, int64_t cols,
    const int64_t* __restrict__ index,
    const acc_t* __restrict__ src, int64_t src_ld,
    const acc_t* __restrict__ alt, int64_t alt_ld,
    acc_t* __restrict__ dst, int64_t dst_ld) {
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    const int64_t k = index[r];
    const acc_t* s_row = k >= 0 ? src + k * src_ld : alt + (-k - 1) * alt_ld;
    acc_t* d_row = dst + r * dst_ld;
    for (int64_t j = first_col(); j < cols; j += col_step()) {
      d_row[j] = s_row[j];
    }
  }
}

}  // namespace

template <typename acc_t, typename out_t>
cudaError_t lstm_forward_pointwise(
    int64_t rows, int64_t H,
    acc_t* gates, int64_t gates_ld,
    acc_t* c, int64_t c_ld,
    acc_t* c_save, int64_t c_save_ld,
    acc_t* h, int64_t h_ld,
    out_t* y, int64_t y_ld,
    bool save_gates,
    cudaStream_t stream) {
  if (rows <= 0 || H <= 0) return cudaSuccess;
  const LaunchShape s = launch_shape(rows, H);
  forward_pointwise_kernel<acc_t, out_t><<<s.grid, s.block, 0, stream>>>(
      rows, H, gates, gates_ld, c, c_ld, c_save, c_save_ld, h, h_ld, y, y_ld, save_gates);
  return cudaGetLastError();
}

template <typename acc_t>
cudaError_t lstm_backward_pointwise(
    int64_t rows, int64_t H,
    const acc_t* act, int64_t act_ld,
    const acc_t* c, int64_t c_ld,
    const acc_t* c_prev, int64_t c_prev_ld, int64_t c_prev_rows,
    const acc_t* c_init, int64_t c_init_ld,
    const acc_t* dh, int64_t dh_ld,
    const acc_t* dh2, int64_t dh2_ld,
    acc_t* dc, int64_t dc_ld,
    acc_t* dgates, int64_t dgates_ld,
    cudaStream_t stream) {
  if (rows <= 0 || H <= 0) return cudaSuccess;
  if (c_prev == nullptr) c_prev_rows = 0;
  if (c_prev_rows < rows && c_init == nullptr) return cudaErrorInvalidValue;
  const LaunchShape s = launch_shape(rows, H);
  backward_pointwise_kernel<acc_t><<<s.grid, s.block, 0, stream>>>(
      rows, H, act, act_ld, c, c_ld, c_prev, c_prev_ld, c_prev_rows, c_init, c_init_ld,
      dh, dh_ld, dh2, dh2_ld, dc, dc_ld, dgates, dgates_ld);
  return cudaGetLastError();
}

template <typename acc_t>
cudaError_t lstm_hidden_from_saved(
    int64_t rows, int64_t H,
    const acc_t* act, int64_t act_ld,
    const acc_t* c, int64_t c_ld,
    acc_t* h, int64_t h_ld,
    cudaStream_t stream) {
  if (rows <= 0 || H <= 0) return cudaSuccess;
  const LaunchShape s = launch_shape(rows, H);
  hidden_from_saved_kernel<acc_t><<<s.grid, s.block, 0, stream>>>(
      rows, H, act, act_ld, c, c_ld, h, h_ld);
  return cudaGetLastError();
}

template <typename acc_t>
cudaError_t lstm_gather_rows(
    int64_t rows, int64_t cols,
    const int64_t* index,
    const acc_t* src, int64_t src_ld,
    const acc_t* alt, int64_t alt_ld,
    acc_t* dst, int64_t dst_ld,
    cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  const LaunchShape s = launch_shape(rows, cols);
  gather_rows_kernel<acc_t><<<s.grid, s.block, 0, stream>>>(
      rows, cols, index, src, src_ld, alt, alt_ld, dst, dst_ld);
  return cudaGetLastError();
}

template cudaError_t lstm_forward_pointwise<float, float>(
    int64_t, int64_t, float*, int64_t, float*, int64_t, float*, int64_t, float*, int64_t,
    float*, int64_t, bool, cudaStream_t);
template cudaError_t lstm_forward_pointwise<float, __half>(
    int64_t, int64_t, float*, int64_t, float*, int64_t, float*, int64_t, float*, int64_t,
    __half*, int64_t, bool, cudaStream_t);
template cudaError_t lstm_forward_pointwise<float, __nv_bfloat16>(
    int64_t, int64_t, float*, int64_t, float*, int64_t, float*, int64_t, float*, int64_t,
    __nv_bfloat16*, int64_t, bool, cudaStream_t);
template cudaError_t lstm_forward_pointwise<double, double>(
    int64_t, int64_t, double*, int64_t, double*, int64_t, double*, int64_t, double*, int64_t,
    double*, int64_t, bool, cudaStream_t);

#define FUSED_LSTM_INSTANTIATE_ACC(T)                                                    \
  template cudaError_t lstm_backward_pointwise<T>(                                       \
      int64_t, int64_t, const T*, int64_t, const T*, int64_t, const T*, int64_t, int64_t, \
      const T*, int64_t, const T*, int64_t, const T*, int64_t, T*, int64_t, T*, int64_t,  \
      cudaStream_t);                                                                     \
  template cudaError_t lstm_hidden_from_saved<T>(                                        \
      int64_t, int64_t, const T*, int64_t, const T*, int64_t, T*, int64_t, cudaStream_t); \
  template cudaError_t lstm_gather_rows<T>(                                              \
      int64_t, int64_t, const int64_t*, const T*, int64_t, const T*, int64_t, T*, int64_t, \
      cudaStream_t);
FUSED_LSTM_INSTANTIATE_ACC(float)
FUSED_LSTM_INSTANTIATE_ACC(double)
#undef FUSED_LSTM_INSTANTIATE_ACC

}  // namespace fused_lstm::cuda
