// CUDA kernels of the variant op (see variant_cuda_kernels.h).
//
// Row kernels: one thread block per row of a step (a grid-stride loop over rows), its
// threads striding over the row's hidden units (a warp touches consecutive addresses, the
// four gates of a unit sit H apart). A row's sums (layer norm's moments, its backward's
// means) go through block_sum: each thread's partial sum in a fixed order, then the warps'
// in a fixed order, so the result depends on the block size alone, which depends on H
// alone. Elementwise kernels walk a [rows, cols] grid as lstm_cuda_kernels.cu does.
//
// The formulas are the CPU kernels' (cpu/variant_kernels_impl.h), term for term, and the
// gate math is the shared code of ../lstm_gate_math.h.
#include "variant_cuda_kernels.h"

#include <algorithm>

#include "../lstm_gate_math.h"
#include "elementwise_grid.h"

namespace fused_lstm::cuda {

namespace {

constexpr int64_t kMaxRowThreads = 256;
constexpr int64_t kMaxGridX = 2147483647;

// Threads per block of a row kernel: a warp per 32 hidden units, at most 8 warps.
unsigned row_threads(int64_t H) {
  return static_cast<unsigned>(std::min<int64_t>(kMaxRowThreads,
                                                 std::max<int64_t>(32, (H + 31) / 32 * 32)));
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>(std::min(rows, kMaxGridX)); }

// Sum over the warp, left in every lane.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
  return v;
}

// Sums of a and b over the block (blockDim.x a multiple of 32), returned to every thread.
// scratch: 64 values of shared memory, free for reuse when this returns.
template <typename T>
__device__ __forceinline__ void block_sum2(T& a, T& b, T* scratch) {
  a = warp_sum(a);
  b = warp_sum(b);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warps = blockDim.x / 32;
  if (lane == 0) {
    scratch[warp] = a;
    scratch[32 + warp] = b;
  }
  __syncthreads();
  a = T(0);
  b = T(0);
  for (int w = 0; w < warps; ++w) {
    a += scratch[w];
    b += scratch[32 + w];
  }
  __syncthreads();  // every thread has read scratch
}

template <typename T>
__device__ __forceinline__ T block_sum(T a, T* scratch) {
  T b = T(0);
  block_sum2(a, b, scratch);
  return a;
}

__device__ __forceinline__ float inverse_sqrt(float v) { return 1.0f / sqrtf(v); }
__device__ __forceinline__ double inverse_sqrt(double v) { return 1.0 / ::sqrt(v); }

// Mean and 1 / sqrt(var + eps) of row[0, n) (two passes: the variance about the mean, as
// the CPU's row_moments), for every thread of the block.
template <typename T>
__device__ __forceinline__ void row_moments(const T* row, int64_t n, T eps, T* scratch,
                                            T& mean, T& rstd) {
  T s = T(0);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += row[j];
  mean = block_sum(s, scratch) / static_cast<T>(n);
  T q = T(0);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const T d = row[j] - mean;
    q += d * d;
  }
  rstd = inverse_sqrt(block_sum(q, scratch) / static_cast<T>(n) + eps);
}

// LayerNorm's backward of one row (width n), by the whole block: d_in = rstd (dx - mean(dx)
// - xhat mean(dx xhat)), dx = d w. d_in may not alias d.
template <typename T>
__device__ __forceinline__ void row_norm_backward(const T* d, const T* xhat, T rstd,
                                                  const T* w, int64_t n, T* d_in, T* scratch) {
  T s1 = T(0), s2 = T(0);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const T dx = d[j] * w[j];
    s1 += dx;
    s2 += dx * xhat[j];
  }
  block_sum2(s1, s2, scratch);
  const T m1 = s1 / static_cast<T>(n), m2 = s2 / static_cast<T>(n);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    d_in[j] = rstd * (d[j] * w[j] - m1 - xhat[j] * m2);
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    forward_step_kernel(const VariantForwardStepArgs<T> p) {
  __shared__ T scratch[64];
  const int64_t H = p.H, G = 4 * H;
  const bool ln_c = p.ln_c_w != nullptr;
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    T* g = p.gates + r * G;
    const T* cp = r < p.c_prev_rows ? p.c_prev + r * H : p.c_init + r * H;
    T* cell = p.cells + r * H;  // c^ until c_t is known
    // LN_hh of the row's recurrent product.
    const T* rr = p.r_raw ? p.r_raw + r * G : nullptr;
    T r_mean = T(0), r_rstd = T(1);
    if (rr) {
      row_moments(rr, G, p.eps, scratch, r_mean, r_rstd);
      if (p.r_stats && threadIdx.x == 0) {
        p.r_stats[2 * r] = r_mean;
        p.r_stats[2 * r + 1] = r_rstd;
      }
    }
    // The gates, c^, and c^'s sum for LN_c.
    T c_sum = T(0);
    for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
      T a[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int64_t n = k * H + j;
        T v = g[n];
        if (rr) {
          const T xh = (rr[n] - r_mean) * r_rstd;
          if (p.r_hat) p.r_hat[r * G + n] = xh;
          v = v + xh * p.ln_hh_w[n] + p.ln_hh_b[n];
        }
        if (p.bias) v = v + p.bias[n];
        a[k] = v;
      }
      const T i = gate_sigmoid(a[0]), f = gate_sigmoid(a[1]);
      const T gg = gate_tanh(a[2]), o = gate_sigmoid(a[3]);
      g[j] = i;
      g[H + j] = f;
      g[2 * H + j] = gg;
      g[3 * H + j] = o;
      const T c_hat = lstm_cell_state(i, f, gg, cp[j]);
      cell[j] = c_hat;
      if (p.cand) p.cand[r * H + j] = c_hat;
      c_sum += c_hat;
    }
    // LN_c's moments (each thread rereads the c^ it wrote).
    T c_mean = T(0), c_rstd = T(1);
    if (ln_c) {
      c_mean = block_sum(c_sum, scratch) / static_cast<T>(H);
      T q = T(0);
      for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
        const T d = cell[j] - c_mean;
        q += d * d;
      }
      c_rstd = inverse_sqrt(block_sum(q, scratch) / static_cast<T>(H) + p.eps);
      if (p.c_stats && threadIdx.x == 0) {
        p.c_stats[2 * r] = c_mean;
        p.c_stats[2 * r + 1] = c_rstd;
      }
    }
    // c_t with c's zoneout, h~ with h's.
    const T* zc = p.zc ? p.zc + r * p.zc_ld : nullptr;
    const T* zh = p.zh ? p.zh + r * p.zh_ld : nullptr;
    const T* hp = nullptr;
    if (zh) hp = r < p.h_prev_rows ? p.h_prev + r * p.Hout : p.h_init + r * p.Hout;
    T* h = p.h_out + r * p.h_ld;
    for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
      const T c_hat = cell[j];
      const T normed = ln_c ? (c_hat - c_mean) * c_rstd * p.ln_c_w[j] + p.ln_c_b[j] : c_hat;
      T c_new = ln_c && p.norm_state ? normed : c_hat;
      if (zc) c_new = c_new + zc[j] * (cp[j] - c_new);
      cell[j] = c_new;
      T h_new = lstm_hidden(g[3 * H + j], gate_tanh(normed));
      if (zh) h_new = h_new + zh[j] * (hp[j] - h_new);
      h[j] = h_new;
    }
    __syncthreads();  // the next row's first sums reuse scratch
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    backward_step_kernel(const VariantBackwardStepArgs<T> p) {
  __shared__ T scratch[64];
  const int64_t H = p.H, G = 4 * H, Hout = p.Hout;
  const bool ln_c = p.ln_c_w != nullptr;
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const T* ai = p.act + r * G;
    const T* cand = p.cand + r * H;
    const T* cp = r < p.c_prev_rows ? p.c_prev + r * H : p.c_init + r * H;
    const T* zc = p.zc ? p.zc + r * p.zc_ld : nullptr;
    const T* zh = p.zh ? p.zh + r * p.zh_ld : nullptr;
    T* dc = p.dc + r * H;
    T* dg = p.dgates + r * G;
    const T mean = ln_c ? p.c_stats[2 * r] : T(0), rstd = ln_c ? p.c_stats[2 * r + 1] : T(1);
    // Pass 1: d(o), and in dg's i slot the gradient reaching n (LN_c's output) with LN_c,
    // else the gradient reaching c^.
    T sum_dxhat = T(0), sum_dxhat_xhat = T(0);
    for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
      T g_h;
      if (p.d_raw) {
        g_h = p.d_raw[r * H + j];
      } else {
        const T dh_t = p.dh[r * Hout + j] + p.grad_y[r * Hout + j];
        g_h = dh_t;
        if (zh) {
          g_h = (T(1) - zh[j]) * dh_t;
          p.dh[r * Hout + j] = zh[j] * dh_t;
        }
      }
      const T c_hat = cand[j];
      const T xhat = ln_c ? (c_hat - mean) * rstd : c_hat;
      const T normed = ln_c ? xhat * p.ln_c_w[j] + p.ln_c_b[j] : c_hat;
      const T tn = gate_tanh(normed);
      const T o = ai[3 * H + j];
      dg[3 * H + j] = g_h * tn * o * (T(1) - o);
      T g_n = g_h * o * (T(1) - tn * tn);
      T g_c_in = dc[j];
      if (p.grad_cells) {
        g_c_in = g_c_in + p.grad_cells[r * H + j];
        dc[j] = g_c_in;
      }
      const T g_c = zc ? g_c_in * (T(1) - zc[j]) : g_c_in;
      if (ln_c) {
        if (p.norm_state) g_n = g_n + g_c;
        const T dxhat = g_n * p.ln_c_w[j];
        sum_dxhat += dxhat;
        sum_dxhat_xhat += dxhat * xhat;
        p.d_n[r * H + j] = g_n;
        dg[j] = g_n;
      } else {
        dg[j] = g_n + g_c;
      }
    }
    T mean_dxhat = T(0), mean_dxhat_xhat = T(0);
    if (ln_c) {
      block_sum2(sum_dxhat, sum_dxhat_xhat, scratch);
      mean_dxhat = sum_dxhat / static_cast<T>(H);
      mean_dxhat_xhat = sum_dxhat_xhat / static_cast<T>(H);
    }
    // Pass 2: the gradient reaching c^, then the gates' and c_{t-1}'s.
    for (int64_t j = threadIdx.x; j < H; j += blockDim.x) {
      T g_chat = dg[j];
      const T g_c_in = dc[j];
      const T z = zc ? zc[j] : T(0);
      if (ln_c) {
        const T xhat = (cand[j] - mean) * rstd;
        const T dxhat = g_chat * p.ln_c_w[j];
        g_chat = rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
        if (!p.norm_state) g_chat = g_chat + g_c_in * (T(1) - z);
      }
      const T i = ai[j], f = ai[H + j], g = ai[2 * H + j];
      dg[j] = g_chat * g * i * (T(1) - i);
      dg[H + j] = g_chat * cp[j] * f * (T(1) - f);
      dg[2 * H + j] = g_chat * i * (T(1) - g * g);
      dc[j] = g_chat * f + z * g_c_in;
    }
    // h_in = h_prev * mask, for w_hh's gradient.
    const T* hp = r < p.h_prev_rows ? p.h_prev + r * Hout : p.h_init + r * Hout;
    const T* m = p.mask ? p.mask + r * Hout : nullptr;
    for (int64_t j = threadIdx.x; j < Hout; j += blockDim.x) {
      p.h_in[r * Hout + j] = m ? hp[j] * m[j] : hp[j];
    }
    // LN_hh's backward, on the whole d(gates) row.
    if (p.dr) {
      __syncthreads();  // dg's row complete
      row_norm_backward(dg, p.r_hat + r * G, p.r_stats[2 * r + 1], p.ln_hh_w, G, p.dr + r * G,
                        scratch);
    }
    __syncthreads();  // the next row's first sums reuse scratch
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    norm_rows_kernel(int64_t rows, int64_t width, T eps, T* v, int64_t v_ld,
                     const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ xhat,
                     T* __restrict__ stats) {
  __shared__ T scratch[64];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T* row = v + r * v_ld;
    T mean, rstd;
    row_moments(row, width, eps, scratch, mean, rstd);
    if (stats && threadIdx.x == 0) {
      stats[2 * r] = mean;
      stats[2 * r + 1] = rstd;
    }
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      const T x = (row[j] - mean) * rstd;
      if (xhat) xhat[r * width + j] = x;
      row[j] = x * w[j] + b[j];
    }
    __syncthreads();  // the next row's sums reuse scratch
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    norm_rows_backward_kernel(int64_t rows, int64_t width, const T* __restrict__ d,
                              const T* __restrict__ xhat, const T* __restrict__ stats,
                              const T* __restrict__ w, T* __restrict__ d_in) {
  __shared__ T scratch[64];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    row_norm_backward(d + r * width, xhat + r * width, stats[2 * r + 1], w, width,
                      d_in + r * width, scratch);
    __syncthreads();
  }
}

// ---- elementwise kernels, on a [rows, cols] grid ----

#define FUSED_LSTM_FOR_EACH_ELEMENT(rows, cols)                    \
  for (int64_t r = first_row(); r < (rows); r += row_step()) \
    for (int64_t j = first_col(); j < (cols); j += col_step())

template <typename T>
__global__ void zoneout_rows_kernel(int64_t rows, int64_t cols, const T* __restrict__ a,
                                    const T* __restrict__ z, int64_t z_ld,
                                    const T* __restrict__ h_prev, int64_t h_prev_rows,
                                    const T* __restrict__ h_init, T* __restrict__ out) {
  FUSED_LSTM_FOR_EACH_ELEMENT(rows, cols) {
    const T* hp = r < h_prev_rows ? h_prev : h_init;
    const T v = a[r * cols + j];
    out[r * cols + j] = v + z[r * z_ld + j] * (hp[r * cols + j] - v);
  }
}

template <typename T>
__global__ void masked_rows_kernel(int64_t rows, int64_t cols, const T* __restrict__ h_prev,
                                   int64_t h_prev_rows, const T* __restrict__ h_init,
                                   const T* __restrict__ mask, T* __restrict__ out) {
  FUSED_LSTM_FOR_EACH_ELEMENT(rows, cols) {
    const T v = (r < h_prev_rows ? h_prev : h_init)[r * cols + j];
    out[r * cols + j] = mask ? v * mask[r * cols + j] : v;
  }
}

template <typename T>
__global__ void backward_dh_kernel(int64_t rows, int64_t cols, T* __restrict__ dh,
                                   const T* __restrict__ grad_y, const T* __restrict__ zh,
                                   int64_t zh_ld, T* __restrict__ d_new) {
  FUSED_LSTM_FOR_EACH_ELEMENT(rows, cols) {
    const T dh_t = dh[r * cols + j] + grad_y[r * cols + j];
    if (zh) {
      const T z = zh[r * zh_ld + j];
      d_new[r * cols + j] = (T(1) - z) * dh_t;
      dh[r * cols + j] = z * dh_t;
    } else {
      d_new[r * cols + j] = dh_t;
    }
  }
}

template <typename T>
__global__ void masked_accumulate_kernel(int64_t rows, int64_t cols, const T* __restrict__ d,
                                         const T* __restrict__ mask, T* __restrict__ dh,
                                         bool accumulate) {
  FUSED_LSTM_FOR_EACH_ELEMENT(rows, cols) {
    const T v = d[r * cols + j] * mask[r * cols + j];
    dh[r * cols + j] = accumulate ? v + dh[r * cols + j] : v;
  }
}

#undef FUSED_LSTM_FOR_EACH_ELEMENT

// Column sums: a block of 32 columns x kSumRowThreads row lanes; lane y sums rows y,
// y + kSumRowThreads, ... of its column in order, then the lanes' sums are added in order,
// all in double: a lane adds N / 32 rows one after another (about 2,000 at N = T * B =
// 64K), where float32's error would grow with N.
constexpr int kSumRowThreads = 32;

template <typename T>
__global__ void __launch_bounds__(32 * kSumRowThreads)
    column_sums_kernel(int64_t rows, int64_t cols, const T* __restrict__ a,
                       const T* __restrict__ b, const T* __restrict__ stats,
                       T* __restrict__ out) {
  __shared__ double part[kSumRowThreads][33];
  for (int64_t j0 = static_cast<int64_t>(blockIdx.x) * 32; j0 < cols;
       j0 += static_cast<int64_t>(gridDim.x) * 32) {
    const int64_t j = j0 + threadIdx.x;
    double s = 0.0;
    if (j < cols) {
      for (int64_t r = threadIdx.y; r < rows; r += kSumRowThreads) {
        T x = T(1);
        if (b) x = stats ? (b[r * cols + j] - stats[2 * r]) * stats[2 * r + 1] : b[r * cols + j];
        s += static_cast<double>(a[r * cols + j]) * static_cast<double>(x);
      }
    }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < cols) {
      double total = 0.0;
      for (int y = 0; y < kSumRowThreads; ++y) total += part[y][threadIdx.x];
      out[j] = static_cast<T>(total);
    }
    __syncthreads();
  }
}

}  // namespace

template <typename T>
cudaError_t variant_forward_step(const VariantForwardStepArgs<T>& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.H <= 0) return cudaSuccess;
  if (p.c_prev == nullptr && p.c_prev_rows > 0) return cudaErrorInvalidValue;
  if (p.zh != nullptr && p.Hout != p.H) return cudaErrorInvalidValue;
  forward_step_kernel<T><<<row_blocks(p.rows), row_threads(p.H), 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t variant_backward_step(const VariantBackwardStepArgs<T>& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.H <= 0) return cudaSuccess;
  if (p.c_prev == nullptr && p.c_prev_rows > 0) return cudaErrorInvalidValue;
  if (p.d_raw == nullptr && p.Hout != p.H) return cudaErrorInvalidValue;
  backward_step_kernel<T><<<row_blocks(p.rows), row_threads(p.H), 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t variant_norm_rows(int64_t rows, int64_t width, T eps, T* v, int64_t v_ld,
                              const T* w, const T* b, T* xhat, T* stats, cudaStream_t stream) {
  if (rows <= 0 || width <= 0) return cudaSuccess;
  norm_rows_kernel<T><<<row_blocks(rows), row_threads((width + 3) / 4), 0, stream>>>(
      rows, width, eps, v, v_ld, w, b, xhat, stats);
  return cudaGetLastError();
}

template <typename T>
cudaError_t variant_norm_rows_backward(int64_t rows, int64_t width, const T* d, const T* xhat,
                                       const T* stats, const T* w, T* d_in,
                                       cudaStream_t stream) {
  if (rows <= 0 || width <= 0) return cudaSuccess;
  norm_rows_backward_kernel<T><<<row_blocks(rows), row_threads((width + 3) / 4), 0, stream>>>(
      rows, width, d, xhat, stats, w, d_in);
  return cudaGetLastError();
}

template <typename T>
cudaError_t variant_zoneout_rows(int64_t rows, int64_t cols, const T* a, const T* z,
                                 int64_t z_ld, const T* h_prev, int64_t h_prev_rows,
                                 const T* h_init, T* out, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  const LaunchShape s = launch_shape(rows, cols);
  zoneout_rows_kernel<T><<<s.grid, s.block, 0, stream>>>(rows, cols, a, z, z_ld, h_prev,
                                                         h_prev_rows, h_init, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t variant_masked_rows(int64_t rows, int64_t cols, const T* h_prev,
                                int64_t h_prev_rows, const T* h_init, const T* mask, T* out,
                                cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  const LaunchShape s = launch_shape(rows, cols);
  masked_rows_kernel<T><<<s.grid, s.block, 0, stream>>>(rows, cols, h_prev, h_prev_rows,
                                                        h_init, mask, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t variant_backward_dh(int64_t rows, int64_t Hout, T* dh, const T* grad_y,
                                const T* zh, int64_t zh_ld, T* d_new, cudaStream_t stream) {
  if (rows <= 0 || Hout <= 0) return cudaSuccess;
  const LaunchShape s = launch_shape(rows, Hout);
  backward_dh_kernel<T><<<s.grid, s.block, 0, stream>>>(rows, Hout, dh, grad_y, zh, zh_ld,
                                                        d_new);
  return cudaGetLastError();
}

template <typename T>
cudaError_t variant_masked_accumulate(int64_t rows, int64_t cols, const T* d, const T* mask,
                                      T* dh, bool accumulate, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  const LaunchShape s = launch_shape(rows, cols);
  masked_accumulate_kernel<T><<<s.grid, s.block, 0, stream>>>(rows, cols, d, mask, dh,
                                                              accumulate);
  return cudaGetLastError();
}

template <typename T>
cudaError_t variant_column_sums(int64_t rows, int64_t cols, const T* a, const T* b,
                                const T* stats, T* out, cudaStream_t stream) {
  if (cols <= 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((cols + 31) / 32, kMaxGridX);
  column_sums_kernel<T><<<static_cast<unsigned>(blocks), dim3(32, kSumRowThreads), 0, stream>>>(
      std::max<int64_t>(rows, 0), cols, a, b, stats, out);
  return cudaGetLastError();
}

#define FUSED_LSTM_VARIANT_INSTANCES(T)                                                      \
  template cudaError_t variant_forward_step<T>(const VariantForwardStepArgs<T>&,             \
                                               cudaStream_t);                                \
  template cudaError_t variant_backward_step<T>(const VariantBackwardStepArgs<T>&,           \
                                                cudaStream_t);                               \
  template cudaError_t variant_norm_rows<T>(int64_t, int64_t, T, T*, int64_t, const T*,      \
                                            const T*, T*, T*, cudaStream_t);                 \
  template cudaError_t variant_norm_rows_backward<T>(int64_t, int64_t, const T*, const T*,   \
                                                     const T*, const T*, T*, cudaStream_t);  \
  template cudaError_t variant_zoneout_rows<T>(int64_t, int64_t, const T*, const T*,         \
                                               int64_t, const T*, int64_t, const T*, T*,     \
                                               cudaStream_t);                                \
  template cudaError_t variant_masked_rows<T>(int64_t, int64_t, const T*, int64_t,           \
                                              const T*, const T*, T*, cudaStream_t);         \
  template cudaError_t variant_backward_dh<T>(int64_t, int64_t, T*, const T*, const T*,      \
                                              int64_t, T*, cudaStream_t);                    \
  template cudaError_t variant_masked_accumulate<T>(int64_t, int64_t, const T*, const T*,    \
                                                    T*, bool, cudaStream_t);                 \
  template cudaError_t variant_column_sums<T>(int64_t, int64_t, const T*, const T*,         \
                                              const T*, T*, cudaStream_t);
FUSED_LSTM_VARIANT_INSTANCES(float)
FUSED_LSTM_VARIANT_INSTANCES(double)
#undef FUSED_LSTM_VARIANT_INSTANCES

}  // namespace fused_lstm::cuda
