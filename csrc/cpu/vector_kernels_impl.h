// Vectorized bodies of the CPU kernels (see vector_kernels.h).
//
// Included once by each vector_kernels_<isa>.cpp, after that file has set the
// target instruction set and defined CPU_CAPABILITY / CPU_CAPABILITY_<ISA>, so
// at::vec::Vectorized<T> is the matching width and exp/tanh go to Sleef.
// Everything here sits in a namespace named after the instruction set, so the
// variants never share a symbol.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <type_traits>

#include "../lstm_gate_math.h"
#include "vector_kernels.h"

namespace fused_lstm::cpu {
namespace CPU_CAPABILITY {

using at::vec::Vectorized;

// exp for the gate nonlinearities. double goes to Sleef.
template <typename T>
inline Vectorized<T> gate_exp(const Vectorized<T>& x) {
  return x.exp();
}

// float: on AVX512 and AVX2 inline, so the pointwise loop keeps its registers (an
// out-of-line Sleef call spills every live vector, five calls per 16 hidden
// units; NOTES.md row 20). x = n ln2 + r with
// |r| <= ln2/2 (ln2 in two parts, so n ln2 is exact), e^r from Cephes' expf
// polynomial (degree 7, about 1 ulp on that range), and 2^n applied by
// vscalefps, which overflows to inf, underflows through the subnormals to 0
// and keeps NaN. The input is first held to [-104, 88.8], beyond which the
// result is already 0 or inf, so that +-inf do not become inf - inf; written
// min(cap, x) and max(cap, x), which return x when x is NaN.
inline Vectorized<float> gate_exp(const Vectorized<float>& x_in) {
#if defined(CPU_CAPABILITY_AVX512)
  __m512 x = _mm512_min_ps(_mm512_set1_ps(88.8f), x_in);
  x = _mm512_max_ps(_mm512_set1_ps(-104.f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
#elif defined(CPU_CAPABILITY_AVX2)
  // The same steps in 8 lanes. AVX2 has no vscalefps, so 2^n (n in [-150, 128])
  // is applied as two powers of two, 2^(n/2) and 2^(n - n/2), each a normal float
  // built in the exponent field: p * 2^n1 is exact, and the second product rounds
  // once, into the subnormals or to inf as scalef does (same bits). NaN stays NaN
  // through p, whatever the integer conversion makes of n.
  __m256 x = _mm256_min_ps(_mm256_set1_ps(88.8f), x_in);
  x = _mm256_max_ps(_mm256_set1_ps(-104.f), x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
#else
  return x_in.exp();
#endif
}

template <typename T>
inline Vectorized<T> vec_sigmoid(const Vectorized<T>& a) {
  const Vectorized<T> one(T(1));
  return one / (one + gate_exp(a.neg()));
}

// tanh for the gate and cell nonlinearities. For float, Sleef's tanh costs
// five times its exp here and dominated the pointwise pass, so it is built
// from exp: tanh|x| = (1 - e) / (1 + e) with e = exp(-2|x|), and, below
// |x| = 1/16 where that difference cancels, the odd Taylor series to x^7
// (truncation error < 1e-12 relative). Both are within a few float ulps of
// the exact value; NaN and inf propagate as in std::tanh.
template <typename T>
inline Vectorized<T> vec_tanh(const Vectorized<T>& a) {
  return a.tanh();
}

// double: Sleef's tanh was the largest cost of a float64 forward (NOTES.md row 21).
// Here Cephes' scheme:
// 1 - 2 / (exp(2|x|) + 1) from |x| = 0.625 (no cancellation there), below it
// x + x^3 P(x^2) / Q(x^2), a rational fit good to double precision. Within
// a few ulps (tests/test_edges.py sweeps it); NaN and inf propagate as in
// std::tanh.
template <>
inline Vectorized<double> vec_tanh<double>(const Vectorized<double>& a) {
  using V = Vectorized<double>;
  const V one(1.0);
  const V ax = a.abs();
  const V big = one - V(2.0) / (gate_exp(ax * V(2.0)) + one);
  const V z = a * a;
  const V p = (V(-9.64399179425052238628e-1) * z + V(-9.92877231001918586564e1)) * z +
              V(-1.61468768441708447952e3);
  const V q = ((z + V(1.12811678491632931402e2)) * z + V(2.23548839060100448583e3)) * z +
              V(4.84406305325125486048e3);
  const V small = a + a * z * p / q;
  const V signed_big = V::blendv(big, big.neg(), a < V(0.0));
  return V::blendv(signed_big, small, ax < V(0.625));
}

template <>
inline Vectorized<float> vec_tanh<float>(const Vectorized<float>& a) {
  using V = Vectorized<float>;
  const V one(1.f);
  const V ax = a.abs();
  const V e = gate_exp(ax * V(-2.f));
  const V big = (one - e) / (one + e);
  const V x2 = a * a;
  const V small =
      a * (one + x2 * (V(-1.f / 3.f) + x2 * (V(2.f / 15.f) + x2 * V(-17.f / 315.f))));
  const V signed_big = V::blendv(big, big.neg(), a < V(0.f));
  return V::blendv(signed_big, small, ax < V(0.0625f));
}

// Stores the first n lanes of v at dst + j, or, when dst16 is set (float
// only), at dst16 + j rounded to bfloat16 (nearest even).
template <typename T>
inline void store_or_bf16(const Vectorized<T>& v, T* dst, c10::BFloat16* dst16, int64_t j,
                          int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
#if defined(CPU_CAPABILITY_AVX512)
    if (dst16) {
      // Round to nearest even in the integer unit, NaN to the quiet NaN 0x7fc0
      // (c10::BFloat16's rounding, bit for bit), then narrow to 16 bits,
      // instead of a store through a buffer and at::vec::convert (NOTES.md
      // row 27).
      const __m512 x = v;
      const __m512i bits = _mm512_castps_si512(x);
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
      __m512i r = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
      r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q),
                                _mm512_set1_epi32(0x7fc00000));
      const __m256i h = _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
      if (n == Vectorized<float>::size()) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst16 + j), h);
      } else {
        _mm256_mask_storeu_epi16(dst16 + j, static_cast<__mmask16>((1u << n) - 1), h);
      }
      return;
    }
#endif
    if (dst16) {
      float tmp[Vectorized<float>::size()];
      v.store(tmp, n);
      at::vec::convert(tmp, dst16 + j, n);
      return;
    }
  }
  v.store(dst + j, n);
}

// The activated gates of lanes [j, j + n) of a gate row (i, f, g, o each H wide from gi),
// with the bias (or null) added first.
template <typename T>
inline void activated_gates(const T* gi, int64_t H, const T* bias, int64_t j, int64_t n,
                            Vectorized<T>& i, Vectorized<T>& f, Vectorized<T>& g,
                            Vectorized<T>& o) {
  using V = Vectorized<T>;
  V ai = V::loadu(gi + j, n), af = V::loadu(gi + H + j, n);
  V ag = V::loadu(gi + 2 * H + j, n), ao = V::loadu(gi + 3 * H + j, n);
  if (bias) {
    ai = ai + V::loadu(bias + j, n);
    af = af + V::loadu(bias + H + j, n);
    ag = ag + V::loadu(bias + 2 * H + j, n);
    ao = ao + V::loadu(bias + 3 * H + j, n);
  }
  i = vec_sigmoid(ai);
  f = vec_sigmoid(af);
  g = vec_tanh(ag);
  o = vec_sigmoid(ao);
}

template <typename T>
void forward_step(const ForwardStep<T>& s, int64_t rows, int64_t H, int64_t j0, int64_t j1) {
  using V = Vectorized<T>;
  constexpr int64_t W = V::size();
  for (int64_t r = 0; r < rows; ++r) {
    T* gi = s.gates + r * s.gates_ld;
    T* gf = gi + H;
    T* gg = gi + 2 * H;
    T* go = gi + 3 * H;
    T* c = s.c + r * s.c_ld;
    T* c_out = s.c_out ? s.c_out + r * s.c_out_ld : nullptr;
    T* h = s.h ? s.h + r * s.h_ld : nullptr;
    c10::BFloat16* h16 = s.h_bf16 ? s.h_bf16 + r * s.h_ld : nullptr;
    for (int64_t j = j0; j < j1; j += W) {
      const int64_t n = std::min<int64_t>(W, j1 - j);
      V i, f, g, o;
      activated_gates(gi, H, s.bias, j, n, i, f, g, o);
      const V c_new = lstm_cell_state(i, f, g, V::loadu(c + j, n));
      const V h_new = lstm_hidden(o, vec_tanh(c_new));
      c_new.store(c + j, n);
      if (c_out) c_new.store(c_out + j, n);
      store_or_bf16(h_new, h, h16, j, n);
      if (s.save_gates) {
        i.store(gi + j, n);
        f.store(gf + j, n);
        g.store(gg + j, n);
        o.store(go + j, n);
      }
    }
  }
}

template <typename T>
void backward_step(const BackwardStep<T>& s, int64_t rows, int64_t H, int64_t j0, int64_t j1) {
  using V = Vectorized<T>;
  constexpr int64_t W = V::size();
  for (int64_t r = 0; r < rows; ++r) {
    const T* ai = s.act + r * s.act_ld;
    const T* c = s.c + r * s.c_ld;
    const T* c_prev = s.c_prev + r * s.c_prev_ld;
    const T* dh = s.dh + r * s.dh_ld;
    const T* dh2 = s.dh2 ? s.dh2 + r * s.dh2_ld : nullptr;
    T* dc = s.dc + r * s.dc_ld;
    T* dgi = s.dgates ? s.dgates + r * s.dgates_ld : nullptr;
    c10::BFloat16* dg16 = s.dgates_bf16 ? s.dgates_bf16 + r * s.dgates_ld : nullptr;
    for (int64_t j = j0; j < j1; j += W) {
      const int64_t n = std::min<int64_t>(W, j1 - j);
      V dh_total = V::loadu(dh + j, n);
      if (dh2) dh_total = dh_total + V::loadu(dh2 + j, n);
      V d_ai, d_af, d_ag, d_ao, dc_prev;
      lstm_gate_grads(V::loadu(ai + j, n), V::loadu(ai + H + j, n), V::loadu(ai + 2 * H + j, n),
                      V::loadu(ai + 3 * H + j, n), V::loadu(c_prev + j, n), vec_tanh(V::loadu(c + j, n)),
                      dh_total, V::loadu(dc + j, n), d_ai, d_af, d_ag, d_ao, dc_prev);
      store_or_bf16(d_ai, dgi, dg16, j, n);
      store_or_bf16(d_af, dgi, dg16, H + j, n);
      store_or_bf16(d_ag, dgi, dg16, 2 * H + j, n);
      store_or_bf16(d_ao, dgi, dg16, 3 * H + j, n);
      dc_prev.store(dc + j, n);
    }
  }
}

#if defined(CPU_CAPABILITY_AVX512)
// dst[0:8, 0:8] = src[0:8, 0:8]^T for double: pairs of rows interleaved,
// then 128-bit lanes gathered twice (three rounds of eight shuffles).
inline void transpose_8x8(const double* src, int64_t ld_src, double* dst, int64_t ld_dst) {
  __m512d r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm512_loadu_pd(src + i * ld_src);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);      // columns 0 2 4 6 of rows i, i+1
    t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);  // columns 1 3 5 7
  }
  for (int i = 0; i < 8; i += 4) {
    for (int k = 0; k < 2; ++k) {
      u[i + k] = _mm512_shuffle_f64x2(t[i + k], t[i + k + 2], 0x88);      // columns k, k+4
      u[i + k + 2] = _mm512_shuffle_f64x2(t[i + k], t[i + k + 2], 0xDD);  // k+2, k+6
    }
  }
  // u[0]: columns 0, 4 of rows 0-3; u[1]: 1, 5; u[2]: 2, 6; u[3]: 3, 7; u[4..7]: rows 4-7
  for (int k = 0; k < 4; ++k) {
    _mm512_storeu_pd(dst + k * ld_dst, _mm512_shuffle_f64x2(u[k], u[k + 4], 0x88));
    _mm512_storeu_pd(dst + (k + 4) * ld_dst, _mm512_shuffle_f64x2(u[k], u[k + 4], 0xDD));
  }
}

// dst[0:16, 0:16] = src[0:16, 0:16]^T for float: 4 x 4 blocks transposed
// inside each 128-bit lane (unpack of floats, then of pairs), then the lanes
// gathered across the four row groups by two rounds of lane shuffles. ATen's
// transpose_mxn<float> masks every load and store for any M, N <= 16; this
// one works on full blocks (NOTES.md row 26).
inline void transpose_16x16(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ld_src);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);      // per lane: a0 b0 a1 b1
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);  //           a2 b2 a3 b3
  }
  // r[4g + j]: lane L holds column 4L + j of rows 4g .. 4g + 3
  for (int g = 0; g < 16; g += 4) {
    const __m512d t0 = _mm512_castps_pd(t[g]), t1 = _mm512_castps_pd(t[g + 1]);
    const __m512d t2 = _mm512_castps_pd(t[g + 2]), t3 = _mm512_castps_pd(t[g + 3]);
    r[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    r[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    r[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    r[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 p = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x44);       // lanes 0, 1 of groups 0, 1
    const __m512 q = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xEE);       // lanes 2, 3
    const __m512 u = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x44);  // groups 2, 3
    const __m512 v = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xEE);
    _mm512_storeu_ps(dst + j * ld_dst, _mm512_shuffle_f32x4(p, u, 0x88));
    _mm512_storeu_ps(dst + (4 + j) * ld_dst, _mm512_shuffle_f32x4(p, u, 0xDD));
    _mm512_storeu_ps(dst + (8 + j) * ld_dst, _mm512_shuffle_f32x4(q, v, 0x88));
    _mm512_storeu_ps(dst + (12 + j) * ld_dst, _mm512_shuffle_f32x4(q, v, 0xDD));
  }
}
#endif

#if defined(CPU_CAPABILITY_AVX2)
// dst[0:4, 0:4] = src[0:4, 0:4]^T for double: pairs of rows interleaved, then
// the 128-bit halves gathered.
inline void transpose_4x4(const double* src, int64_t ld_src, double* dst, int64_t ld_dst) {
  const __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + ld_src);
  const __m256d r2 = _mm256_loadu_pd(src + 2 * ld_src), r3 = _mm256_loadu_pd(src + 3 * ld_src);
  const __m256d t0 = _mm256_unpacklo_pd(r0, r1);  // columns 0, 2 of rows 0, 1
  const __m256d t1 = _mm256_unpackhi_pd(r0, r1);  // columns 1, 3
  const __m256d t2 = _mm256_unpacklo_pd(r2, r3);  // rows 2, 3
  const __m256d t3 = _mm256_unpackhi_pd(r2, r3);
  _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
  _mm256_storeu_pd(dst + ld_dst, _mm256_permute2f128_pd(t1, t3, 0x20));
  _mm256_storeu_pd(dst + 2 * ld_dst, _mm256_permute2f128_pd(t0, t2, 0x31));
  _mm256_storeu_pd(dst + 3 * ld_dst, _mm256_permute2f128_pd(t1, t3, 0x31));
}
#endif

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
// dst[N, M] = src[M, N]^T in full kB x kB blocks by block(src, dst), and the
// edges they leave (columns past the last full block of the rows they cover,
// then the rows past the last full block) by ATen's transpose_mxn.
template <int kB, typename T, typename Block>
void transpose_in_blocks(const T* src, int64_t ld_src, T* dst, int64_t ld_dst, int64_t M,
                         int64_t N, const Block& block) {
  const int64_t Mb = M - M % kB, Nb = N - N % kB;
  for (int64_t i = 0; i < Mb; i += kB) {
    for (int64_t j = 0; j < Nb; j += kB) block(src + i * ld_src + j, dst + j * ld_dst + i);
  }
  if (Nb < N && Mb > 0) {
    at::vec::transpose_mxn<T>(src + Nb, ld_src, dst + Nb * ld_dst, ld_dst, static_cast<int>(Mb),
                              static_cast<int>(N - Nb));
  }
  if (Mb < M) {
    at::vec::transpose_mxn<T>(src + Mb * ld_src, ld_src, dst + Mb, ld_dst,
                              static_cast<int>(M - Mb), static_cast<int>(N));
  }
}
#endif

// dst[N, M] = src[M, N]^T
template <typename T>
void transpose(const T* src, int64_t ld_src, T* dst, int64_t ld_dst, int64_t M, int64_t N) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    transpose_in_blocks<16>(src, ld_src, dst, ld_dst, M, N, [&](const float* s, float* d) {
      transpose_16x16(s, ld_src, d, ld_dst);
    });
    return;
  }
  if constexpr (std::is_same_v<T, double>) {
    transpose_in_blocks<8>(src, ld_src, dst, ld_dst, M, N, [&](const double* s, double* d) {
      transpose_8x8(s, ld_src, d, ld_dst);
    });
    return;
  }
#elif defined(CPU_CAPABILITY_AVX2)
  // ATen's AVX2 transpose_mxn<float> with run-time sizes is a scalar loop; its
  // fixed 8 x 8 one is vectorized.
  if constexpr (std::is_same_v<T, float>) {
    transpose_in_blocks<8>(src, ld_src, dst, ld_dst, M, N, [&](const float* s, float* d) {
      at::vec::transpose_mxn<float, 8, 8>(s, ld_src, d, ld_dst);
    });
    return;
  }
  if constexpr (std::is_same_v<T, double>) {
    transpose_in_blocks<4>(src, ld_src, dst, ld_dst, M, N, [&](const double* s, double* d) {
      transpose_4x4(s, ld_src, d, ld_dst);
    });
    return;
  }
#endif
  at::vec::transpose_mxn<T>(src, ld_src, dst, ld_dst, static_cast<int>(M), static_cast<int>(N));
}

template <typename T>
void gemv(int64_t N, int64_t K, const T* a, const T* B, int64_t ldb, T* c, bool accumulate) {
  using V = Vectorized<T>;
  constexpr int64_t W = V::size();
  constexpr int64_t kAcc = 8;  // accumulators (vectors) per pass over B's rows
  for (int64_t j0 = 0; j0 < N; j0 += kAcc * W) {
    const int64_t width = std::min<int64_t>(kAcc * W, N - j0);
    const int64_t nv = (width + W - 1) / W;
    V acc[kAcc];
    for (int64_t v = 0; v < kAcc; ++v) acc[v] = V(T(0));
    for (int64_t k = 0; k < K; ++k) {
      const V ak(a[k]);
      const T* row = B + k * ldb + j0;
      if (width == kAcc * W) {
        for (int64_t v = 0; v < kAcc; ++v) acc[v] = at::vec::fmadd(ak, V::loadu(row + v * W), acc[v]);
      } else {
        for (int64_t v = 0; v < nv; ++v) {
          const int64_t n = std::min<int64_t>(W, width - v * W);
          acc[v] = at::vec::fmadd(ak, V::loadu(row + v * W, n), acc[v]);
        }
      }
    }
    for (int64_t v = 0; v < nv; ++v) {
      const int64_t n = std::min<int64_t>(W, width - v * W);
      T* out = c + j0 + v * W;
      const V r = accumulate ? acc[v] + V::loadu(out, n) : acc[v];
      r.store(out, n);
    }
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace fused_lstm::cpu

#include "variant_kernels_impl.h"

namespace fused_lstm::cpu {
namespace CPU_CAPABILITY {

template <typename T>
const VectorKernels<T>* kernel_table(const char* isa) {
  static const VectorKernels<T> table{&forward_step<T>,          &backward_step<T>,
                                      &transpose<T>,             &gemv<T>,
                                      &variant_forward_step<T>, &variant_backward_step<T>,
                                      &norm_rows<T>,             &norm_rows_backward<T>,
                                      isa};
  return &table;
}

}  // namespace CPU_CAPABILITY
}  // namespace fused_lstm::cpu

#define FUSED_LSTM_DEFINE_VARIANT(NAME)                                         \
  namespace fused_lstm::cpu {                                                   \
  const VectorKernels<float>* vector_kernels_f32_##NAME() {               \
    return CPU_CAPABILITY::kernel_table<float>(#NAME);                          \
  }                                                                             \
  const VectorKernels<double>* vector_kernels_f64_##NAME() {              \
    return CPU_CAPABILITY::kernel_table<double>(#NAME);                         \
  }                                                                             \
  }
