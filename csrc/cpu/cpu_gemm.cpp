#include "cpu_gemm.h"

#include "cpu_tuning.h"
#include "gate_layout.h"
#include "vector_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <dlfcn.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

namespace fused_lstm::cpu {

namespace {

// Fortran BLAS interface (column-major, 32-bit integers: MKL LP64).
template <typename T>
using FortranGemm = void (*)(const char*, const char*, const int*, const int*, const int*,
                             const T*, const T*, const int*, const T*, const int*, const T*,
                             T*, const int*);

template <typename T>
FortranGemm<T> find_blas(const char* name) {
  // RTLD_DEFAULT sees libtorch_cpu's exports: torch is loaded before this library.
  return reinterpret_cast<FortranGemm<T>>(dlsym(RTLD_DEFAULT, name));
}

const FortranGemm<float> sgemm = find_blas<float>("sgemm_");
const FortranGemm<double> dgemm = find_blas<double>("dgemm_");

template <typename T> FortranGemm<T> blas();
template <> FortranGemm<float> blas<float>() { return sgemm; }
template <> FortranGemm<double> blas<double>() { return dgemm; }

// Which kernel serves each dtype: decided once, in cpu_tuning.cpp.
const bool use_brgemm = tuning().f32_gemm == GemmKernel::kBrgemm;
const bool bf16_amx = tuning().bf16_amx;
const GemmKernel f64_gemm = tuning().f64_gemm;

bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

template <typename T>
at::Tensor wrap(const T* p, int64_t rows, int64_t cols, int64_t ld) {
  return at::from_blob(const_cast<T*>(p), {rows, cols}, {ld, 1},
                       at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

template <typename T>
void blas_gemm_nn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                  int64_t ldb, T* C, int64_t ldc, bool accumulate) {
  const auto f = blas<T>();
  if (!f || !fits_int(M) || !fits_int(N) || !fits_int(K) || !fits_int(lda) || !fits_int(ldb) ||
      !fits_int(ldc)) {
    at::Tensor c = wrap<T>(C, M, N, ldc);
    at::Tensor prod = at::mm(wrap(A, M, K, lda), wrap(B, K, N, ldb));
    accumulate ? c.add_(prod) : c.copy_(prod);
    return;
  }
  // Row-major C = A B is column-major C^T = B^T A^T.
  const T one(1), beta(accumulate ? 1 : 0);
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  f("N", "N", &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
}

// GEMMs smaller than this run on the calling thread.
constexpr int64_t kMinParallelMacs = Tuning::kMinParallelGemmMacs;
constexpr int64_t kBrgemmK = Tuning::kBrgemmK;
constexpr int64_t kBrgemmN = Tuning::kBrgemmN;

// Rows of A handed to one transposition (the reduction length of one GEMM call) in
// gemm_tn: C, a thread's share of a weight gradient, is read and written once per call.
template <typename T>
constexpr int64_t tn_panel_rows() {
  return std::is_same_v<T, float> ? Tuning::kTnPanelRowsFloat : Tuning::kTnPanelRowsOther;
}

}  // namespace

template <>
void gemm_nn<float>(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                    int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.f);
    return;
  }
  if (M == 1) {
    // One row (batch 1): a register-blocked GEMV streams B at L2 speed, about
    // twice the rate of the microkernel or the BLAS at this shape.
    vector_kernels<float>().gemv(N, K, A, B, ldb, C, accumulate);
    return;
  }
  if (use_brgemm) {
    // The microkernel does not block for the caches: past K = 256 a panel of B
    // no longer stays in L1 across the rows of A, and the rate drops by 40%.
    // Blocks of 256 x 128 keep it near the FMA peak.
    const int64_t kb = K > kBrgemmK ? kBrgemmK : K;
    const int64_t nb = K > kBrgemmK ? kBrgemmN : N;
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
      for (int64_t k0 = 0; k0 < K; k0 += kb) {
        at::native::cpublas::brgemm(M, std::min(nb, N - n0), std::min(kb, K - k0), lda, ldb, ldc,
                                    accumulate || k0 > 0, A + k0, B + k0 * ldb + n0, C + n0,
                                    false);
      }
    }
  } else {
    blas_gemm_nn(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
  }
}


template <>
void gemm_nn<double>(int64_t M, int64_t N, int64_t K, const double* A, int64_t lda,
                     const double* B, int64_t ldb, double* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0);
    return;
  }
  if (M == 1) {
    vector_kernels<double>().gemv(N, K, A, B, ldb, C, accumulate);
    return;
  }
  switch (f64_gemm) {
    case GemmKernel::kOwnAvx512:
      gemm_f64_avx512(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
      break;
    case GemmKernel::kOwnAvx2:
      gemm_f64_avx2(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
      break;
    default:
      blas_gemm_nn(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
  }
}

namespace {

// bfloat16 on AMX tiles needs an even K: the microkernel reads A's rows in whole pairs,
// and a lone last value would be paired with whatever follows the row. One-row products
// keep our kernel (the tiles' M = 1 rate is no better). ATen runs the microkernel only
// while oneDNN is enabled (torch.backends.mkldnn.enabled); otherwise our kernel too.
bool bf16_on_amx(int64_t M, int64_t K) {
  return bf16_amx && M > 1 && K % 2 == 0 && at::globalContext().userEnabledMkldnn();
}

// C[M, N] (+)= A[M, K] @ B on oneDNN's BRGEMM microkernel with AMX tiles. B pair-packed
// (gemm_kernels.h: ceil(K/2) rows of ldb words) is the microkernel's VNNI layout for
// bfloat16. Leaves this thread's tile configuration set: callers end with release_amx().
void gemm_bf16_amx(int64_t M, int64_t N, int64_t K, const c10::BFloat16* A, int64_t lda,
                   const c10::BFloat16* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  const int64_t kb = std::min(K, Tuning::kAmxMaxK);  // even, as K is
  const int64_t nb = M >= Tuning::kAmxWideRows ? Tuning::kAmxWideN : Tuning::kAmxN;
  for (int64_t n0 = 0; n0 < N; n0 += nb) {
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
      // rows k0.. of B are pair-row k0 / 2: (k0 / 2) * ldb words of two values each
      at::native::cpublas::brgemm(M, std::min(nb, N - n0), std::min(kb, K - k0), lda, ldb, ldc,
                                  accumulate || k0 > 0, A + k0, B + k0 * ldb + 2 * n0, C + n0,
                                  /*is_vnni=*/true);
    }
  }
}

// dst[k, r] = src[r, k] for r < R, k < K (16-bit values), in 16 x 16 blocks.
void transpose_bits(const uint16_t* src, int64_t lds, int64_t R, int64_t K, uint16_t* dst,
                    int64_t ldd) {
  constexpr int64_t kBlock = 16;
  for (int64_t r0 = 0; r0 < R; r0 += kBlock) {
    const int64_t r1 = std::min(R, r0 + kBlock);
    for (int64_t k0 = 0; k0 < K; k0 += kBlock) {
      const int64_t k1 = std::min(K, k0 + kBlock);
      for (int64_t k = k0; k < k1; ++k)
        for (int64_t r = r0; r < r1; ++r) dst[k * ldd + r] = src[r * lds + k];
    }
  }
}

// Hands the tiles back, and tells ATen so: oneDNN's own primitives (nn.LSTM, matmul) may
// set another configuration on this thread before our next call.
void release_amx() { at::native::cpublas::brgemm_release(/*is_vnni=*/true); }

}  // namespace

template <>
void gemm_nn<c10::BFloat16>(int64_t M, int64_t N, int64_t K, const c10::BFloat16* A, int64_t lda,
                            const c10::BFloat16* B, int64_t ldb, float* C, int64_t ldc,
                            bool accumulate) {
  if (M > 0 && N > 0 && bf16_on_amx(M, K)) {
    gemm_bf16_amx(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    release_amx();
    return;
  }
  gemm_bf16(M, N, K, A, 2 * lda, 4, reinterpret_cast<const uint32_t*>(B), ldb, C, ldc, accumulate);
}

template <typename In>
void gemm_nn_panels(int64_t M, int64_t N, int64_t K, const In* A, int64_t lda, const In* panels,
                    Acc<In>* C, int64_t ldc, bool accumulate) {
  // Each panel is an ordinary B of kPanelWidth columns with ldb = kPanelWidth.
  const int64_t column = kColumnStride<In> * panel_rows<In>(K);  // elements per column
  if constexpr (std::is_same_v<In, c10::BFloat16>) {
    if (M > 0 && N > 0 && bf16_on_amx(M, K)) {  // one tile release for all the panels
      for (int64_t n0 = 0; n0 < N; n0 += kPanelWidth)
        gemm_bf16_amx(M, std::min(kPanelWidth, N - n0), K, A, lda, panels + n0 * column,
                      kPanelWidth, C + n0, ldc, accumulate);
      release_amx();
      return;
    }
  }
  for (int64_t n0 = 0; n0 < N; n0 += kPanelWidth)
    gemm_nn<In>(M, std::min(kPanelWidth, N - n0), K, A, lda, panels + n0 * column, kPanelWidth,
                C + n0, ldc, accumulate);
}

template <typename In>
void parallel_gemm_nn(int64_t M, int64_t N, int64_t K, const In* A, int64_t lda, const In* B,
                      int64_t ldb, Acc<In>* C, int64_t ldc, bool accumulate) {
  const int64_t threads = at::get_num_threads();
  if (threads == 1 || M * N * K < kMinParallelMacs) {
    gemm_nn<In>(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    return;
  }
  // Split rows when there are plenty (each thread streams all of B), else columns.
  if (M >= 64 * threads || N < 32 * threads) {
    const int64_t block = std::max<int64_t>(1, (M + threads - 1) / threads);
    at::parallel_for(0, M, block, [&](int64_t r0, int64_t r1) {
      gemm_nn<In>(r1 - r0, N, K, A + r0 * lda, lda, B, ldb, C + r0 * ldc, ldc, accumulate);
    });
  } else {
    const int64_t block = (N / threads + 15) / 16 * 16;
    at::parallel_for(0, N, block, [&](int64_t c0, int64_t c1) {
      gemm_nn<In>(M, c1 - c0, K, A, lda, B + kColumnStride<In> * c0, ldb, C + c0, ldc,
                  accumulate);
    });
  }
}

template <typename In>
void parallel_gemm_nn_panels(int64_t M, int64_t N, int64_t K, const In* A, int64_t lda,
                             const In* panels, Acc<In>* C, int64_t ldc, bool accumulate) {
  const int64_t threads = at::get_num_threads();
  const int64_t panel_count = (N + kPanelWidth - 1) / kPanelWidth;
  if (threads == 1 || M * N * K < kMinParallelMacs) {
    gemm_nn_panels<In>(M, N, K, A, lda, panels, C, ldc, accumulate);
    return;
  }
  // As parallel_gemm_nn: rows when there are plenty, else whole panels.
  if (M >= 64 * threads || panel_count < threads) {
    const int64_t block = std::max<int64_t>(1, (M + threads - 1) / threads);
    at::parallel_for(0, M, block, [&](int64_t r0, int64_t r1) {
      gemm_nn_panels<In>(r1 - r0, N, K, A + r0 * lda, lda, panels, C + r0 * ldc, ldc,
                         accumulate);
    });
  } else {
    const int64_t column = kColumnStride<In> * panel_rows<In>(K);  // elements per column
    const int64_t block = (panel_count + threads - 1) / threads;
    at::parallel_for(0, panel_count, block, [&](int64_t p0, int64_t p1) {
      const int64_t n0 = p0 * kPanelWidth, n1 = std::min(N, p1 * kPanelWidth);
      gemm_nn_panels<In>(M, n1 - n0, K, A, lda, panels + n0 * column, C + n0, ldc, accumulate);
    });
  }
}

namespace {

// Splits C[K, N] of a TN GEMM over the threads, by rows (or columns when there
// are few rows), and runs body(k0, k1, n0, n1) on each thread's part.
template <typename Body>
void split_tn(int64_t R, int64_t K, int64_t N, bool prefer_columns, const Body& body) {
  const int64_t threads =
      R * K * N < kMinParallelMacs ? 1 : static_cast<int64_t>(at::get_num_threads());
  const bool split_rows = N < 32 * threads || (!prefer_columns && K >= 16 * threads);
  const int64_t extent = split_rows ? K : N;
  const int64_t block = split_rows ? std::max<int64_t>(1, (K + threads - 1) / threads)
                                   : (N / threads + 15) / 16 * 16;
  at::parallel_for(0, extent, block, [&](int64_t e0, int64_t e1) {
    split_rows ? body(e0, e1, int64_t(0), N) : body(int64_t(0), K, e0, e1);
  });
}

template <typename T>
void zero_rows(T* C, int64_t ldc, int64_t K, int64_t N) {
  for (int64_t i = 0; i < K; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
}

}  // namespace

template <typename T>
void gemm_tn(int64_t R, int64_t K, int64_t N, const T* A, int64_t lda, const T* B, int64_t ldb,
             Acc<T>* C, int64_t ldc, bool accumulate) {
  // C[K, N] = sum over panels of rows r of A[r, K]^T B[r, N], each panel of A
  // transposed first. For the float microkernel, B rows 4 KiB or more apart
  // (d(gates) at 4H >= 1024) all fall in the same few L1 sets, so a block of
  // B evicts itself as it streams: B is copied into contiguous [rows, 128]
  // panels first (at smaller strides the copy costs more than it saves;
  // kMinPackedStrideBytes in benchmarks/NOTES.md).
  // Panels no longer than R: the short calls of the backward's chunks and
  // per-thread blocks would otherwise allocate and zero a full panel each.
  const int64_t rows = std::max<int64_t>(1, std::min(tn_panel_rows<T>(), R));
  constexpr int64_t kPanel = kBrgemmN;
  const bool pack_b = std::is_same_v<T, float> && use_brgemm &&
                      ldb * int64_t(sizeof(T)) >= Tuning::kMinPackedStrideBytes;
  std::vector<T> panel(static_cast<size_t>(K * rows));  // A[r0:r1, :]^T
  std::vector<T> b_panel(pack_b ? static_cast<size_t>(rows * kPanel) : 0);
  if (R == 0 && !accumulate) zero_rows(C, ldc, K, N);
  for (int64_t r0 = 0; r0 < R; r0 += rows) {
    const int64_t rn = std::min(rows, R - r0);
    const bool acc = accumulate || r0 > 0;
    // panel[k, r] = A[r0 + r, k]
    vector_kernels<T>().transpose(A + r0 * lda, lda, panel.data(), rows, rn, K);
    if (!pack_b) {
      gemm_nn<T>(K, N, rn, panel.data(), rows, B + r0 * ldb, ldb, C, ldc, acc);
      continue;
    }
    for (int64_t n0 = 0; n0 < N; n0 += kPanel) {
      const int64_t nn = std::min(kPanel, N - n0);
      for (int64_t r = 0; r < rn; ++r)
        std::memcpy(b_panel.data() + r * kPanel, B + (r0 + r) * ldb + n0, sizeof(T) * nn);
      gemm_nn<T>(K, nn, rn, panel.data(), rows, b_panel.data(), kPanel, C + n0, ldc, acc);
    }
  }
}

template <>
void gemm_tn<c10::BFloat16>(int64_t R, int64_t K, int64_t N, const c10::BFloat16* A, int64_t lda,
                            const c10::BFloat16* B, int64_t ldb, float* C, int64_t ldc,
                            bool accumulate) {
  // The reduction runs over rows r, so both operands are paired along r: the
  // words of A[r0:r1, :] are A^T pair-packed (read with a_row = 4 bytes,
  // a_pair = 4 * K), those of B[r0:r1, :] the pair-packed B.
  // Rows in pairs, and no more than R (rounded up to a pair) as above.
  const int64_t rows =
      std::max<int64_t>(2, std::min(tn_panel_rows<c10::BFloat16>(), (R + 1) / 2 * 2));
  std::vector<uint32_t> b_words(static_cast<size_t>(N * rows / 2));
  if (R == 0 && !accumulate) zero_rows(C, ldc, K, N);
  if (bf16_on_amx(K, rows)) {
    // On AMX tiles the microkernel takes A^T plainly: a_t = A[r0:r1, :]^T, [K, rows],
    // with a zero column after an odd last block (its pair in B is zero too).
    std::vector<uint16_t> a_t(static_cast<size_t>(K * rows));
    for (int64_t r0 = 0; r0 < R; r0 += rows) {
      const int64_t rn = std::min(rows, R - r0);
      const int64_t rn_pairs = (rn + 1) / 2 * 2;
      transpose_bits(reinterpret_cast<const uint16_t*>(A + r0 * lda), lda, rn, K, a_t.data(),
                     rows);
      if (rn_pairs != rn)
        for (int64_t k = 0; k < K; ++k) a_t[k * rows + rn] = 0;
      pack_row_pairs(reinterpret_cast<const uint16_t*>(B + r0 * ldb), ldb, rn, N,
                     b_words.data(), N);
      gemm_bf16_amx(K, N, rn_pairs, reinterpret_cast<const c10::BFloat16*>(a_t.data()), rows,
                    reinterpret_cast<const c10::BFloat16*>(b_words.data()), N, C, ldc,
                    accumulate || r0 > 0);
    }
    release_amx();
    return;
  }
  std::vector<uint32_t> a_words(static_cast<size_t>(K * rows / 2));
  for (int64_t r0 = 0; r0 < R; r0 += rows) {
    const int64_t rn = std::min(rows, R - r0);
    pack_row_pairs(reinterpret_cast<const uint16_t*>(A + r0 * lda), lda, rn, K, a_words.data(),
                   K);
    pack_row_pairs(reinterpret_cast<const uint16_t*>(B + r0 * ldb), ldb, rn, N, b_words.data(),
                   N);
    gemm_bf16(K, N, rn, a_words.data(), 4, 4 * K, b_words.data(), N, C, ldc,
              accumulate || r0 > 0);
  }
}

template <typename In>
void parallel_gemm_tn(int64_t R, int64_t K, int64_t N, const In* A, int64_t lda, const In* B,
                      int64_t ldb, Acc<In>* C, int64_t ldc, bool accumulate) {
  // Each thread owns a range of C's rows (or columns). Every bfloat16 call
  // pair-packs all of the B it multiplies, so there a column split halves
  // each thread's packing; float32 stays with rows, where a column split
  // doubles each thread's transposed A panel, past L2 (NOTES.md row 32).
  constexpr bool prefer_columns = std::is_same_v<In, c10::BFloat16>;
  split_tn(R, K, N, prefer_columns, [&](int64_t k0, int64_t k1, int64_t n0, int64_t n1) {
    gemm_tn<In>(R, k1 - k0, n1 - n0, A + k0, lda, B + n0, ldb, C + k0 * ldc + n0, ldc,
                accumulate);
  });
}

#define FUSED_LSTM_INSTANTIATE(In)                                                           \
  template void parallel_gemm_nn_panels<In>(int64_t, int64_t, int64_t, const In*, int64_t,    \
                                            const In*, Acc<In>*, int64_t, bool);              \
  template void parallel_gemm_nn<In>(int64_t, int64_t, int64_t, const In*, int64_t, const In*, \
                                     int64_t, Acc<In>*, int64_t, bool);                        \
  template void gemm_nn_panels<In>(int64_t, int64_t, int64_t, const In*, int64_t, const In*,   \
                                   Acc<In>*, int64_t, bool);                                   \
  template void parallel_gemm_tn<In>(int64_t, int64_t, int64_t, const In*, int64_t, const In*, \
                                     int64_t, Acc<In>*, int64_t, bool);
FUSED_LSTM_INSTANTIATE(float)
FUSED_LSTM_INSTANTIATE(double)
FUSED_LSTM_INSTANTIATE(c10::BFloat16)
#undef FUSED_LSTM_INSTANTIATE
template void gemm_tn<float>(int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                             int64_t, float*, int64_t, bool);
template void gemm_tn<double>(int64_t, int64_t, int64_t, const double*, int64_t, const double*,
                              int64_t, double*, int64_t, bool);

}  // namespace fused_lstm::cpu
