// The persistent forward of one layer direction (see lstm_cuda_persistent.h).
//
// One cluster of CTAs runs the recurrence of a slice of the batch (up to 8 rows) for all T
// steps; a batch of more rows runs on more clusters, which never talk to each other. Each
// CTA of a cluster owns U = H / cluster_size hidden units, all four gate rows of them:
//   - its slice of w_hh ([4U, H], float32) sits in its shared memory for the whole
//     sequence, and the c of its units for its cluster's rows in registers;
//   - every step it reads the whole h_{t-1} of its cluster's rows from its own shared
//     memory, computes its units' four gate sums for those rows (FFMA, float32
//     accumulation), adds the pre-activations, applies the cell update of
//     ../lstm_gate_math.h, writes y (and the saved gates and cells) to global memory,
//     writes its slice of h_t into every CTA's shared memory (its own directly, its
//     peers' through distributed shared memory), and meets its peers at a cluster
//     barrier before the next step.
// h lives in two shared buffers, by step parity: step k reads buffer k % 2 and fills
// buffer (k + 1) % 2. Why one barrier per step is enough is written at the loop.
//
// Only sm_90 and later have clusters: for older architectures the kernel compiles to a
// trap, and lstm_persistent_forward_shape refuses to run it where the device is older or
// the kernel was not compiled from sm_90 code.
#include "lstm_cuda_persistent.h"

#include <cooperative_groups.h>

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <tuple>

#include "../lstm_gate_math.h"

namespace fused_lstm::cuda {

namespace {

constexpr int kThreads = 256;  // 8 warps per CTA
constexpr int kWarps = kThreads / 32;
constexpr int kMaxClusterSize = 16;  // non-portable above 8
constexpr int64_t kMaxBatch = 16;

// The work split inside a CTA, for U units and NB (padded) batch rows.
//
// Product: warp w takes unit group w % (U / 4) (4 units, one per 8 lanes) and k group
// w / (U / 4); its lane l takes unit 4 * (w % (U / 4)) + l / 8 and the k indices
// s, s + S, s + 2S, ... < H with s = 8 * (w / (U / 4)) + l % 8 and S = 256 / U. So the 8
// lanes of a unit read 8 consecutive columns of w_hh and of h at each iteration, and
// the 4 units of a warp read the same 8 columns of h (broadcast).
//
// Sums: each lane holds the 4 x NB partial sums of its unit over its k indices; the 8
// lanes of a unit reduce them with 3 rounds of shuffles, each round halving what a lane
// holds (so lane l % 8 == q ends with sums q * NB / 2 .. q * NB / 2 + NB / 2 - 1), and
// the kKGroups partial sums of each (unit, gate, row) are then added in shared memory,
// in k-group order: a fixed summation order, so results repeat bit for bit.
//
// Cell update: thread t < U * NB takes unit t % U and row t / U (rows past the cluster's
// real ones do nothing).
template <int U, int NB>
struct Split {
  static_assert(U == 8 || U == 16, "units per CTA: 8 or 16");
  static_assert(NB == 4 || NB == 8, "rows per cluster: 4 or 8");
  static constexpr int kUnitGroups = U / 4;
  static constexpr int kKGroups = kWarps / kUnitGroups;  // 4 (U = 8) or 2 (U = 16)
  static constexpr int kSlices = 8 * kKGroups;           // S = 256 / U
  static constexpr int kSums = 4 * NB;                   // per unit: gate-major, then row
  static constexpr int kSumsPerLane = kSums / 8;         // after the 8-lane reduction
  // A unit's sums in red_s, one float apart more than their count: the cell update's
  // threads (consecutive units, each reading its row's sum) then hit different banks
  // instead of all the same one (at most 4-way at U = 8, 2-way at U = 16).
  static constexpr int kSumsStride = kSums + 1;
  static constexpr int kRowGroups = NB / 4;              // float4s of h per column
  static_assert(U * NB <= kThreads, "one thread per (unit, row) in the cell update");

  // Shared memory, in this order (all float32, 16-byte aligned):
  //   w_s   [U][H] float4: w_s[u][k] = w_hh rows (g * H + j0 + u), g = 0..3, column k
  //   h_s   [2][kRowGroups][H] float4: h_s[p][r / 4][k].(r % 4) = h_{t-1}[row0 + r][k]
  //   red_s [kKGroups][U][kSumsStride] float: partial gate sums per k group
  static size_t smem_bytes(int64_t H) {
    return sizeof(float) * (4 * U * H + 2 * NB * H + kKGroups * U * kSumsStride);
  }
};

// One round of the 8-lane reduction: lanes whose indices differ in bit `o` swap halves of
// their first 2N sums; each keeps the half its bit selects (the upper one if set), added
// to the partner's.
template <int N>
__device__ __forceinline__ void reduce_halves(float* v, bool upper, int o) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const float send = upper ? v[i] : v[i + N];
    const float keep = upper ? v[i + N] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
  }
}

// Grid: cluster_size * clusters CTAs of kThreads, in clusters of cluster_size along x;
// cluster q runs batch rows [q * NB, min(B, q * NB + NB)), CTA rank r of it hidden units
// [r * U, r * U + U). Dynamic shared memory: Split<U, NB>::smem_bytes(H).
//   pre   [T, B, 4H]   in: pre-activations; out: activated gates if save_gates
//   w_hh  [4H, H]      h0, c0 [B, H]
//   y     [T, B, H]    cells [T, B, H] or null    h_n, c_n [B, H]
template <int U, int NB>
__global__ void __launch_bounds__(kThreads, 1)
    persistent_forward_kernel(int64_t T, int64_t B, int H, bool reverse,
                              float* __restrict__ pre, const float* __restrict__ w_hh,
                              const float* h0, const float* c0, float* __restrict__ y,
                              float* __restrict__ cells, float* h_n, float* c_n,
                              bool save_gates) {
  using S = Split<U, NB>;
  static_assert(S::kSlices * U == kThreads, "every thread takes one (unit, k slice)");
  static_assert(S::kSumsPerLane * 8 == S::kSums && S::kRowGroups * 4 == NB, "even splits");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int cluster_size = static_cast<int>(cluster.num_blocks());
  const int64_t row0 = static_cast<int64_t>(blockIdx.x / cluster_size) * NB;
  const int rows = static_cast<int>(B - row0 < NB ? B - row0 : NB);  // >= 1 by the grid
  const int j0 = rank * U;  // this CTA's first hidden unit
  const int64_t G = 4 * static_cast<int64_t>(H);
  const int tid = static_cast<int>(threadIdx.x);

  extern __shared__ float4 smem[];
  float4* const w_s = smem;         // [U][H]
  float4* const h_s = w_s + U * H;  // [2][kRowGroups][H]
  float* const red_s = reinterpret_cast<float*>(h_s + 2 * S::kRowGroups * H);  // see Split
  float* const w_f = reinterpret_cast<float*>(w_s);
  float* const h_f = reinterpret_cast<float*>(h_s);

  // ---- once: the weights, h0 of the cluster's rows (rows past B stay zero in both
  // buffers for the whole sequence: nobody writes them), c0 into registers ----
  for (int e = tid; e < 4 * U * H; e += kThreads) {
    const int k = e % H, r = e / H, u = r / 4, g = r % 4;  // k fastest: coalesced reads
    w_f[(u * H + k) * 4 + g] = w_hh[(static_cast<int64_t>(g) * H + j0 + u) * H + k];
  }
  for (int e = tid; e < NB * H; e += kThreads) {
    const int k = e % H, r = e / H;
    const int at = ((r / 4) * H + k) * 4 + r % 4;
    h_f[at] = r < rows ? h0[(row0 + r) * H + k] : 0.0f;  // buffer 0
    h_f[S::kRowGroups * H * 4 + at] = 0.0f;              // buffer 1
  }
  const int upd_u = tid % U, upd_r = tid / U;  // the cell update's (unit, row)
  const bool updater = upd_r < rows;
  const int64_t row = row0 + upd_r;
  const int j = j0 + upd_u;
  // The cell update's state: c and h, the activated gates, and the pre-activations of the
  // step about to run (loaded one step ahead).
  float c = updater ? c0[row * H + j] : 0.0f;
  float h = 0.0f, gi = 0.0f, gf = 0.0f, gg = 0.0f, go = 0.0f;
  auto pre_row = [&](int64_t k) {  // this thread's pre-activation of gate i at step k
    const int64_t t = reverse ? T - 1 - k : k;
    return pre + (t * B + row) * G + j;
  };
  // y, cells and the saved gates of step k, from the registers above. Step k's are
  // stored only after the barrier that ends it, at the top of step k + 1: the barrier's
  // release fence (MEMBAR.ALL.GPU on sm_90) waits for every store in flight, and stores
  // issued there have a whole product to drain before the next barrier.
  auto store_step = [&](int64_t k) {
    if (!updater) return;
    const int64_t t = reverse ? T - 1 - k : k;
    const int64_t at = (t * B + row) * H + j;
    y[at] = h;
    if (cells != nullptr) cells[at] = c;
    if (save_gates) {
      float* p = pre_row(k);
      p[0] = gi;
      p[H] = gf;
      p[2 * H] = gg;
      p[3 * H] = go;
    }
  };
  float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (updater) {
    const float* p = pre_row(0);
#pragma unroll
    for (int g = 0; g < 4; ++g) a[g] = p[g * H];
  }

  // The product's place in the CTA (see Split).
  const int warp = tid / 32, lane = tid % 32;
  const int pu = (warp % S::kUnitGroups) * 4 + lane / 8;  // unit
  const int kg = warp / S::kUnitGroups;                   // k group
  const int s0 = kg * 8 + lane % 8;                       // first k
  const float4* const w_u = w_s + pu * H;

  // Every CTA of the cluster is running and has initialised its buffers before any
  // peer writes into them.
  cluster.sync();

  // Per step k, for every CTA: read h_s[k % 2]; write its slice into h_s[(k + 1) % 2] of
  // every CTA; then the cluster barrier. A peer writes into my h_s[(k + 1) % 2] only
  // during its step k, that is after the barrier that ended step k - 1, which I reached
  // after my last read of that buffer (as h_s[(k - 1) % 2] in step k - 1). I read the
  // buffer again in step k + 1, after the barrier that ends step k, which every peer
  // reaches after its writes of step k (arrive has release, wait acquire semantics at
  // cluster scope). The last step writes no h into shared memory and ends without a
  // barrier: no CTA touches another's shared memory after the last barrier, so none
  // can exit while a peer still writes into it. Every CTA runs the same T - 1 barriers
  // (plus the one above); no thread leaves the loop early.
  for (int64_t k = 0; k < T; ++k) {
    const int cur = static_cast<int>(k & 1), nxt = cur ^ 1;
    const bool last = k + 1 == T;
    if (k > 0) store_step(k - 1);
    float a_next[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (updater && !last) {
      const float* p = pre_row(k + 1);
#pragma unroll
      for (int g = 0; g < 4; ++g) a_next[g] = p[g * H];
    }

    // sums[g * NB + r] = sum over this lane's k of w_hh[g * H + j0 + pu][k] * h[r][k]
    float sums[S::kSums];
#pragma unroll
    for (int i = 0; i < S::kSums; ++i) sums[i] = 0.0f;
    const float4* const h_cur = h_s + cur * S::kRowGroups * H;
#pragma unroll 4
    for (int kk = s0; kk < H; kk += S::kSlices) {
      const float4 w = w_u[kk];
#pragma unroll
      for (int rg = 0; rg < S::kRowGroups; ++rg) {
        const float4 hv = h_cur[rg * H + kk];
        const float wg[4] = {w.x, w.y, w.z, w.w};
        const float hr[4] = {hv.x, hv.y, hv.z, hv.w};
#pragma unroll
        for (int g = 0; g < 4; ++g) {
#pragma unroll
          for (int i = 0; i < 4; ++i) sums[g * NB + rg * 4 + i] += wg[g] * hr[i];
        }
      }
    }
    reduce_halves<S::kSums / 2>(sums, (lane & 4) != 0, 4);
    reduce_halves<S::kSums / 4>(sums, (lane & 2) != 0, 2);
    reduce_halves<S::kSums / 8>(sums, (lane & 1) != 0, 1);
    float* const red = red_s + (kg * U + pu) * S::kSumsStride + (lane % 8) * S::kSumsPerLane;
#pragma unroll
    for (int i = 0; i < S::kSumsPerLane; ++i) red[i] = sums[i];
    __syncthreads();

    if (updater) {
      float z[4];
#pragma unroll
      for (int g = 0; g < 4; ++g) {
        z[g] = a[g];
#pragma unroll
        for (int q = 0; q < S::kKGroups; ++q) {
          z[g] += red_s[(q * U + upd_u) * S::kSumsStride + g * NB + upd_r];
        }
      }
      gi = gate_sigmoid(z[0]);
      gf = gate_sigmoid(z[1]);
      gg = gate_tanh(z[2]);
      go = gate_sigmoid(z[3]);
      c = lstm_cell_state(gi, gf, gg, c);
      h = lstm_hidden(go, gate_tanh(c));
      if (!last) h_f[((nxt * S::kRowGroups + upd_r / 4) * H + j) * 4 + upd_r % 4] = h;
#pragma unroll
      for (int g = 0; g < 4; ++g) a[g] = a_next[g];
    }
    if (last) break;  // the same k for every thread of the cluster
    __syncthreads();  // this CTA's slice of h_t is in h_s[nxt]; red_s is read

    // The slice (rows x units j0 .. j0 + U) into every peer's h_s[nxt], a float4 (4 rows
    // of one unit) at a time.
    constexpr int kSlice = S::kRowGroups * U;  // float4s per slice
    for (int e = tid; e < cluster_size * kSlice; e += kThreads) {
      const int peer = e / kSlice, f = e % kSlice;
      if (peer == rank) continue;
      const int at = (nxt * S::kRowGroups + f / U) * H + j0 + f % U;
      cluster.map_shared_rank(h_s, peer)[at] = h_s[at];
    }
    cluster.sync();
  }

  store_step(T - 1);
  if (updater) {
    h_n[row * H + j] = h;
    c_n[row * H + j] = c;
  }
#else
  // No clusters before sm_90: lstm_persistent_forward_shape never lets this run.
  (void)T, (void)B, (void)H, (void)reverse, (void)pre, (void)w_hh, (void)h0, (void)c0;
  (void)y, (void)cells, (void)h_n, (void)c_n, (void)save_gates;
  __trap();
#endif
}

template <int U, int NB>
const void* kernel_of() {
  return reinterpret_cast<const void*>(&persistent_forward_kernel<U, NB>);
}

const void* kernel_for(int U, int NB) {
  if (U == 8) return NB == 4 ? kernel_of<8, 4>() : kernel_of<8, 8>();
  return NB == 4 ? kernel_of<16, 4>() : kernel_of<16, 8>();
}

size_t smem_for(int U, int NB, int64_t H) {
  if (U == 8) return NB == 4 ? Split<8, 4>::smem_bytes(H) : Split<8, 8>::smem_bytes(H);
  return NB == 4 ? Split<16, 4>::smem_bytes(H) : Split<16, 8>::smem_bytes(H);
}

// The launch configuration of `shape` (attrs must outlive it).
cudaLaunchConfig_t launch_config(const PersistentForwardShape& shape, cudaLaunchAttribute* attrs,
                                 cudaStream_t stream) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(shape.cluster_size * shape.clusters), 1, 1);
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes = shape.smem_bytes;
  cfg.stream = stream;
  attrs[0].id = cudaLaunchAttributeClusterDimension;
  attrs[0].val.clusterDim.x = static_cast<unsigned>(shape.cluster_size);
  attrs[0].val.clusterDim.y = 1;
  attrs[0].val.clusterDim.z = 1;
  cfg.attrs = attrs;
  cfg.numAttrs = 1;
  return cfg;
}

// The function attributes a launch needs, set on the current device: the opt-in shared
// memory limit (always the device's maximum, so that threads setting it for different H
// never lower it under one another's launch) and, above 8 CTAs, the non-portable cluster
// size.
// Set once per device, kernel and cluster-size class: later calls find them in `prepared`.
cudaError_t prepare_kernel(const void* kernel, int cluster_size) {
  static std::mutex mutex;
  static std::set<std::tuple<int, const void*, bool>> prepared;
  int device = 0, optin = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const auto key = std::make_tuple(device, kernel, cluster_size > 8);
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (prepared.count(key) != 0) return cudaSuccess;
  }
  err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err == cudaSuccess) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
  }
  if (err == cudaSuccess && cluster_size > 8) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  }
  if (err == cudaSuccess) {
    std::lock_guard<std::mutex> lock(mutex);
    prepared.insert(key);
  }
  return err;
}

// Whether `shape` launches on the current device: the kernel's code there comes from
// sm_90 or later (not JIT-compiled PTX of an older architecture, whose kernel body is the
// trap above), and at least one such cluster fits on the GPU.
bool shape_runs(const PersistentForwardShape& shape) {
  const void* kernel = kernel_for(shape.units_per_cta, shape.rows_per_cluster);
  cudaFuncAttributes attrs = {};
  if (cudaFuncGetAttributes(&attrs, kernel) != cudaSuccess || attrs.ptxVersion < 90) {
    return false;
  }
  if (prepare_kernel(kernel, shape.cluster_size) != cudaSuccess) return false;
  cudaLaunchAttribute launch_attrs[1];
  const cudaLaunchConfig_t cfg = launch_config(shape, launch_attrs, nullptr);
  int active = 0;
  return cudaOccupancyMaxActiveClusters(&active, kernel, &cfg) == cudaSuccess && active >= 1;
}

// The shape of (B, H) on `device`, or none (lstm_persistent_forward_shape keeps the answer).
std::optional<PersistentForwardShape> find_shape(int device, int64_t B, int64_t H) {
  int major = 0, optin = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) !=
          cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
          cudaSuccess ||
      major < 9) {
    cudaGetLastError();  // leave no error behind for the next launch check to report
    return std::nullopt;
  }
  PersistentForwardShape s;
  s.rows_per_cluster = B <= 4 ? 4 : 8;
  s.clusters = static_cast<int>((B + s.rows_per_cluster - 1) / s.rows_per_cluster);
  // Fewer units per CTA spread the product over more SMs; 16 per CTA where 8 would need
  // more than 16 CTAs, or where the device refuses a cluster of H / 8.
  for (int U : {8, 16}) {
    if (H % U != 0 || H / U > kMaxClusterSize) continue;
    s.units_per_cta = U;
    s.cluster_size = static_cast<int>(H / U);
    s.smem_bytes = smem_for(U, s.rows_per_cluster, H);
    if (s.smem_bytes > static_cast<size_t>(optin)) continue;
    if (shape_runs(s)) return s;
    cudaGetLastError();
  }
  return std::nullopt;
}

}  // namespace

bool lstm_persistent_forward_shape(int64_t B, int64_t H, PersistentForwardShape* shape) {
  if (B < 1 || B > kMaxBatch || H < 1 || H > 16 * kMaxClusterSize) return false;
  static std::mutex mutex;
  static std::map<std::tuple<int, int64_t, int64_t>, std::optional<PersistentForwardShape>>
      known;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  const auto key = std::make_tuple(device, B, H);
  std::optional<PersistentForwardShape> found;
  {
    std::lock_guard<std::mutex> lock(mutex);
    const auto it = known.find(key);
    if (it != known.end()) {
      if (it->second) *shape = *it->second;
      return it->second.has_value();
    }
  }
  found = find_shape(device, B, H);
  {
    std::lock_guard<std::mutex> lock(mutex);
    known.emplace(key, found);
  }
  if (found) *shape = *found;
  return found.has_value();
}


cudaError_t lstm_persistent_forward(const PersistentForwardShape& shape, int64_t T, int64_t B,
                                    int64_t H, bool reverse, float* pre, const float* w_hh,
                                    const float* h0, const float* c0, float* y, float* cells,
                                    float* h_n, float* c_n, bool save_gates,
                                    cudaStream_t stream) {
  if (T <= 0 || B <= 0) return cudaSuccess;
  const int U = shape.units_per_cta, NB = shape.rows_per_cluster;
  if ((U != 8 && U != 16) || (NB != 4 && NB != 8) || B > kMaxBatch ||
      static_cast<int64_t>(shape.cluster_size) * U != H || shape.cluster_size > kMaxClusterSize ||
      static_cast<int64_t>(shape.clusters) * NB < B ||
      static_cast<int64_t>(shape.clusters - 1) * NB >= B ||
      shape.smem_bytes != smem_for(U, NB, H)) {
    return cudaErrorInvalidValue;
  }
  const void* kernel = kernel_for(U, NB);
  cudaError_t err = prepare_kernel(kernel, shape.cluster_size);
  if (err != cudaSuccess) return err;
  cudaLaunchAttribute attrs[1];
  const cudaLaunchConfig_t cfg = launch_config(shape, attrs, stream);
  const int h = static_cast<int>(H);
  if (U == 8 && NB == 4) {
    err = cudaLaunchKernelEx(&cfg, persistent_forward_kernel<8, 4>, T, B, h, reverse, pre, w_hh,
                             h0, c0, y, cells, h_n, c_n, save_gates);
  } else if (U == 8) {
    err = cudaLaunchKernelEx(&cfg, persistent_forward_kernel<8, 8>, T, B, h, reverse, pre, w_hh,
                             h0, c0, y, cells, h_n, c_n, save_gates);
  } else if (NB == 4) {
    err = cudaLaunchKernelEx(&cfg, persistent_forward_kernel<16, 4>, T, B, h, reverse, pre,
                             w_hh, h0, c0, y, cells, h_n, c_n, save_gates);
  } else {
    err = cudaLaunchKernelEx(&cfg, persistent_forward_kernel<16, 8>, T, B, h, reverse, pre,
                             w_hh, h0, c0, y, cells, h_n, c_n, save_gates);
  }
  // cudaPeekAtLastError: a launch error of this kernel, without taking one that an
  // earlier, unchecked call left behind as this kernel's.
  return err != cudaSuccess ? err : cudaPeekAtLastError();
}

}  // namespace fused_lstm::cuda
