// Per-step CUDA kernels of the fused LSTM (see lstm_cuda_kernels.h).
//
// The pointwise kernels walk a [rows, cols] grid of elements: threadIdx.x/blockIdx.x
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
#include "elementwise_grid.h"

namespace fused_lstm::cuda {

namespace {

// Rounds a computed value to the layer's output type.
__device__ __forceinline__ void store_out(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_out(double* p, double v) { *p = v; }
__device__ __forceinline__ void store_out(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_out(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}

// The forward update of one (row, unit), shared by the pointwise and the step
// kernels. a_*: the four gate pre-activations; gate: this unit's column of the
// row's gates (gate k at gate[k * H]), overwritten with the activated gates when
// save_gates; c_elem: c_prev in, c out. Every other output is written when its
// pointer is not null.
template <typename acc_t, typename out_t>
__device__ __forceinline__ void forward_cell(acc_t a_i, acc_t a_f, acc_t a_g, acc_t a_o,
                                             acc_t* gate, int64_t H, acc_t* c_elem,
                                             acc_t* c_save_elem, acc_t* h_elem,
                                             acc_t* h_last_elem, out_t* y_elem,
                                             bool save_gates) {
  const acc_t i = gate_sigmoid(a_i);
  const acc_t f = gate_sigmoid(a_f);
  const acc_t g = gate_tanh(a_g);
  const acc_t o = gate_sigmoid(a_o);
  const acc_t c_new = lstm_cell_state(i, f, g, *c_elem);
  const acc_t h_new = lstm_hidden(o, gate_tanh(c_new));
  *c_elem = c_new;
  if (c_save_elem != nullptr) *c_save_elem = c_new;
  if (h_elem != nullptr) *h_elem = h_new;
  if (h_last_elem != nullptr) *h_last_elem = h_new;
  if (y_elem != nullptr) store_out(y_elem, h_new);
  if (save_gates) {
    gate[0] = i;
    gate[H] = f;
    gate[2 * H] = g;
    gate[3 * H] = o;
  }
}

// The backward update of one (row, unit), shared by the pointwise and the step
// kernels: from the activated gates act[k * H], c_prev, c, dL/dh and dL/dc (in
// place, becoming dL/dc_prev), the gradients of the four pre-activations go to
// dgate[k * H], and to dgate_last[k * H] when that is not null.
template <typename acc_t>
__device__ __forceinline__ void backward_cell(const acc_t* act, int64_t H, acc_t c_prev, acc_t c,
                                              acc_t dh, acc_t* dc_elem, acc_t* dgate,
                                              acc_t* dgate_last) {
  acc_t d_ai, d_af, d_ag, d_ao, dc_prev;
  lstm_gate_grads(act[0], act[H], act[2 * H], act[3 * H], c_prev, gate_tanh(c), dh, *dc_elem,
                  d_ai, d_af, d_ag, d_ao, dc_prev);
  dgate[0] = d_ai;
  dgate[H] = d_af;
  dgate[2 * H] = d_ag;
  dgate[3 * H] = d_ao;
  *dc_elem = dc_prev;
  if (dgate_last != nullptr) {
    dgate_last[0] = d_ai;
    dgate_last[H] = d_af;
    dgate_last[2 * H] = d_ag;
    dgate_last[3 * H] = d_ao;
  }
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
      forward_cell<acc_t, out_t>(g_row[j], g_row[H + j], g_row[2 * H + j], g_row[3 * H + j],
                                 g_row + j, H, c + r * c_ld + j,
                                 c_save ? c_save + r * c_save_ld + j : nullptr,
                                 h ? h + r * h_ld + j : nullptr, nullptr,
                                 y ? y + r * y_ld + j : nullptr, save_gates);
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
      backward_cell<acc_t>(a_row + j, H, cp_row[j], c[r * c_ld + j], dh_total,
                           dc + r * dc_ld + j, dg_row + j, nullptr);
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

// ---- steps with the recurrent product inside ----

constexpr int kStepRows = 8;     // batch rows per thread block
constexpr int kStepWarps = 8;    // warps per thread block
constexpr int kStepThreads = 32 * kStepWarps;
constexpr int kStepChunk = 256;  // reduction elements staged in shared memory at a time
constexpr int kBwdUnitsPerWarp = 4;
constexpr int kBwdUnits = kStepWarps * kBwdUnitsPerWarp;  // hidden units per backward block

// Sum over the warp, left in every lane.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
  return v;
}

// Grid: x over blocks of kStepWarps hidden units (one per warp), y over blocks
// of kStepRows batch rows. A warp's lanes stride along H: each lane reads the
// four gate rows of its unit (coalesced) and the block's h rows from shared
// memory, so each weight feeds 8 rows and each shared load 4 gates.
template <typename acc_t, typename out_t>
__global__ void __launch_bounds__(kStepThreads) forward_step_kernel(
    int64_t rows, int64_t H,
    acc_t* __restrict__ pre, int64_t pre_ld,
    const acc_t* __restrict__ w_hh,
    const acc_t* __restrict__ h_prev, int64_t h_prev_ld, int64_t h_prev_rows,
    const acc_t* __restrict__ h_init, int64_t h_init_ld,
    acc_t* __restrict__ c, int64_t c_ld,
    acc_t* __restrict__ c_save, int64_t c_save_ld,
    acc_t* __restrict__ h_out, int64_t h_out_ld,
    acc_t* __restrict__ h_last, int64_t h_last_ld,
    out_t* __restrict__ y, int64_t y_ld,
    bool save_gates) {
  __shared__ acc_t h_tile[kStepRows][kStepChunk];  // h_prev rows of the block, one chunk of H
  __shared__ acc_t sums[4][kStepRows][kStepWarps];  // h_prev @ w_hh^T per gate, row, unit
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kStepRows;
  const int64_t unit0 = static_cast<int64_t>(blockIdx.x) * kStepWarps;
  const int64_t j = unit0 + warp;
  acc_t acc[4][kStepRows];
#pragma unroll
  for (int g = 0; g < 4; ++g) {
#pragma unroll
    for (int r = 0; r < kStepRows; ++r) acc[g][r] = acc_t(0);
  }
  for (int64_t k0 = 0; k0 < H; k0 += kStepChunk) {
    const int kc = static_cast<int>(H - k0 < kStepChunk ? H - k0 : kStepChunk);
    __syncthreads();  // every warp is done with the previous chunk
    for (int e = threadIdx.x; e < kStepRows * kStepChunk; e += kStepThreads) {
      const int r = e / kStepChunk, k = e % kStepChunk;
      const int64_t R = row0 + r;
      acc_t v = acc_t(0);
      if (R < rows && k < kc) {
        v = R < h_prev_rows ? h_prev[R * h_prev_ld + k0 + k] : h_init[R * h_init_ld + k0 + k];
      }
      h_tile[r][k] = v;
    }
    __syncthreads();
    if (j < H) {
      const acc_t* w = w_hh + j * H + k0;  // gate g's row of unit j starts g * H * H later
#pragma unroll 2
      for (int k = lane; k < kc; k += 32) {
        acc_t wg[4];
#pragma unroll
        for (int g = 0; g < 4; ++g) wg[g] = w[g * H * H + k];
#pragma unroll
        for (int r = 0; r < kStepRows; ++r) {
          const acc_t hv = h_tile[r][k];
#pragma unroll
          for (int g = 0; g < 4; ++g) acc[g][r] += wg[g] * hv;
        }
      }
    }
  }
#pragma unroll
  for (int g = 0; g < 4; ++g) {
#pragma unroll
    for (int r = 0; r < kStepRows; ++r) {
      const acc_t s = warp_sum(acc[g][r]);
      if (lane == 0) sums[g][r][warp] = s;
    }
  }
  __syncthreads();
  // Pointwise: thread t takes row t / kStepWarps, unit t % kStepWarps, so
  // neighbouring threads touch neighbouring columns.
  if (threadIdx.x >= kStepRows * kStepWarps) return;
  const int r = threadIdx.x / kStepWarps, u = threadIdx.x % kStepWarps;
  const int64_t R = row0 + r, jj = unit0 + u;
  if (R >= rows || jj >= H) return;
  acc_t* p = pre + R * pre_ld + jj;
  forward_cell<acc_t, out_t>(p[0] + sums[0][r][u], p[H] + sums[1][r][u], p[2 * H] + sums[2][r][u],
                             p[3 * H] + sums[3][r][u], p, H, c + R * c_ld + jj,
                             c_save ? c_save + R * c_save_ld + jj : nullptr,
                             h_out + R * h_out_ld + jj,
                             h_last ? h_last + R * h_last_ld + jj : nullptr,
                             y ? y + R * y_ld + jj : nullptr, save_gates);
}

// Grid: x over blocks of kBwdUnits hidden units (kBwdUnitsPerWarp per warp), y
// over blocks of kStepRows batch rows. Lanes stride along 4H: each reads its
// units' rows of w_hh^T (coalesced) and the block's d(gates) rows of the next
// step from shared memory.
template <typename acc_t>
__global__ void __launch_bounds__(kStepThreads) backward_step_kernel(
    int64_t rows, int64_t H,
    const acc_t* __restrict__ dg_next, int64_t dg_next_ld, int64_t dg_next_rows,
    const acc_t* __restrict__ dh_init, int64_t dh_init_ld,
    const acc_t* __restrict__ w_hh_t,
    const acc_t* __restrict__ act, int64_t act_ld,
    const acc_t* __restrict__ c, int64_t c_ld,
    const acc_t* __restrict__ c_prev, int64_t c_prev_ld, int64_t c_prev_rows,
    const acc_t* __restrict__ c_init, int64_t c_init_ld,
    const acc_t* __restrict__ dh2, int64_t dh2_ld,
    acc_t* __restrict__ dc, int64_t dc_ld,
    acc_t* __restrict__ dgates, int64_t dgates_ld,
    acc_t* __restrict__ dg_last, int64_t dg_last_ld) {
  __shared__ acc_t dg_tile[kStepRows][kStepChunk];  // d(gates) rows of the next step, one chunk
  __shared__ acc_t sums[kStepRows][kBwdUnits];      // dg_next @ w_hh per row, unit
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t G = 4 * H;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kStepRows;
  const int64_t unit0 = static_cast<int64_t>(blockIdx.x) * kBwdUnits;
  const int64_t j0 = unit0 + warp * kBwdUnitsPerWarp;  // this warp's first unit
  const int64_t from_next = rows < dg_next_rows ? rows : dg_next_rows;
  acc_t acc[kBwdUnitsPerWarp][kStepRows];
#pragma unroll
  for (int u = 0; u < kBwdUnitsPerWarp; ++u) {
#pragma unroll
    for (int r = 0; r < kStepRows; ++r) acc[u][r] = acc_t(0);
  }
  if (row0 < from_next) {  // the same for the whole block
    for (int64_t n0 = 0; n0 < G; n0 += kStepChunk) {
      const int nc = static_cast<int>(G - n0 < kStepChunk ? G - n0 : kStepChunk);
      __syncthreads();  // every warp is done with the previous chunk
      for (int e = threadIdx.x; e < kStepRows * kStepChunk; e += kStepThreads) {
        const int r = e / kStepChunk, k = e % kStepChunk;
        const int64_t R = row0 + r;
        dg_tile[r][k] = (R < from_next && k < nc) ? dg_next[R * dg_next_ld + n0 + k] : acc_t(0);
      }
      __syncthreads();
#pragma unroll 2
      for (int k = lane; k < nc; k += 32) {
        acc_t wu[kBwdUnitsPerWarp];
#pragma unroll
        for (int u = 0; u < kBwdUnitsPerWarp; ++u) {
          const int64_t ju = j0 + u;
          wu[u] = ju < H ? w_hh_t[ju * G + n0 + k] : acc_t(0);
        }
#pragma unroll
        for (int r = 0; r < kStepRows; ++r) {
          const acc_t dv = dg_tile[r][k];
#pragma unroll
          for (int u = 0; u < kBwdUnitsPerWarp; ++u) acc[u][r] += wu[u] * dv;
        }
      }
    }
  }
#pragma unroll
  for (int u = 0; u < kBwdUnitsPerWarp; ++u) {
#pragma unroll
    for (int r = 0; r < kStepRows; ++r) {
      const acc_t s = warp_sum(acc[u][r]);
      if (lane == 0) sums[r][warp * kBwdUnitsPerWarp + u] = s;
    }
  }
  __syncthreads();
  // Pointwise: thread t takes row t / kBwdUnits, unit t % kBwdUnits.
  const int r = threadIdx.x / kBwdUnits, u = threadIdx.x % kBwdUnits;
  const int64_t R = row0 + r, jj = unit0 + u;
  if (R >= rows || jj >= H) return;
  acc_t dh_total = R < from_next ? sums[r][u] : dh_init[R * dh_init_ld + jj];
  if (dh2 != nullptr) dh_total = dh_total + dh2[R * dh2_ld + jj];
  const acc_t* cp_row = R < c_prev_rows ? c_prev + R * c_prev_ld : c_init + R * c_init_ld;
  backward_cell<acc_t>(act + R * act_ld + jj, H, cp_row[jj], c[R * c_ld + jj], dh_total,
                       dc + R * dc_ld + jj, dgates + R * dgates_ld + jj,
                       dg_last ? dg_last + R * dg_last_ld + jj : nullptr);
}

dim3 step_grid(int64_t rows, int64_t H, int64_t units_per_block) {
  return dim3(static_cast<unsigned>((H + units_per_block - 1) / units_per_block),
              static_cast<unsigned>((rows + kStepRows - 1) / kStepRows));
}

}  // namespace

template <typename acc_t, typename out_t>
cudaError_t lstm_forward_step(
    int64_t rows, int64_t H,
    acc_t* pre, int64_t pre_ld,
    const acc_t* w_hh,
    const acc_t* h_prev, int64_t h_prev_ld, int64_t h_prev_rows,
    const acc_t* h_init, int64_t h_init_ld,
    acc_t* c, int64_t c_ld,
    acc_t* c_save, int64_t c_save_ld,
    acc_t* h_out, int64_t h_out_ld,
    acc_t* h_last, int64_t h_last_ld,
    out_t* y, int64_t y_ld,
    bool save_gates,
    cudaStream_t stream) {
  if (rows <= 0 || H <= 0) return cudaSuccess;
  if (h_prev == nullptr) h_prev_rows = 0;
  if (h_prev_rows < rows && h_init == nullptr) return cudaErrorInvalidValue;
  if (rows > static_cast<int64_t>(kMaxGridDim) * kStepRows) return cudaErrorInvalidValue;
  forward_step_kernel<acc_t, out_t><<<step_grid(rows, H, kStepWarps), kStepThreads, 0, stream>>>(
      rows, H, pre, pre_ld, w_hh, h_prev, h_prev_ld, h_prev_rows, h_init, h_init_ld, c, c_ld,
      c_save, c_save_ld, h_out, h_out_ld, h_last, h_last_ld, y, y_ld, save_gates);
  return cudaGetLastError();
}

template <typename acc_t>
cudaError_t lstm_backward_step(
    int64_t rows, int64_t H,
    const acc_t* dg_next, int64_t dg_next_ld, int64_t dg_next_rows,
    const acc_t* dh_init, int64_t dh_init_ld,
    const acc_t* w_hh_t,
    const acc_t* act, int64_t act_ld,
    const acc_t* c, int64_t c_ld,
    const acc_t* c_prev, int64_t c_prev_ld, int64_t c_prev_rows,
    const acc_t* c_init, int64_t c_init_ld,
    const acc_t* dh2, int64_t dh2_ld,
    acc_t* dc, int64_t dc_ld,
    acc_t* dgates, int64_t dgates_ld,
    acc_t* dg_last, int64_t dg_last_ld,
    cudaStream_t stream) {
  if (rows <= 0 || H <= 0) return cudaSuccess;
  if (dg_next == nullptr) dg_next_rows = 0;
  if (dg_next_rows < rows && dh_init == nullptr) return cudaErrorInvalidValue;
  if (c_prev == nullptr) c_prev_rows = 0;
  if (c_prev_rows < rows && c_init == nullptr) return cudaErrorInvalidValue;
  if (rows > static_cast<int64_t>(kMaxGridDim) * kStepRows) return cudaErrorInvalidValue;
  backward_step_kernel<acc_t><<<step_grid(rows, H, kBwdUnits), kStepThreads, 0, stream>>>(
      rows, H, dg_next, dg_next_ld, dg_next_rows, dh_init, dh_init_ld, w_hh_t, act, act_ld, c,
      c_ld, c_prev, c_prev_ld, c_prev_rows, c_init, c_init_ld, dh2, dh2_ld, dc, dc_ld, dgates,
      dgates_ld, dg_last, dg_last_ld);
  return cudaGetLastError();
}

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

FUSED_LSTM_CUDA_INSTANCES()

}  // namespace fused_lstm::cuda
