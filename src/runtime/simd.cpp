#include "simd.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

// GCC 12's AVX-512 headers self-initialize "undefined" vectors (_mm256_undefined_pd), which
// -Wuninitialized reports wherever those intrinsics are inlined.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LLMC_RT_X86 1
#endif

// Declared in kernels/src/qgemm_impl.h (not a public header of the kernels library).
namespace llmc::kernels::detail {
void parallel_for(int nthreads, int ntasks, void (*fn)(void*, int), void* ctx);
}

namespace llmc::rt {

void parallel_for(int nthreads, int ntasks, void (*fn)(void*, int), void* ctx) {
  kernels::detail::parallel_for(nthreads, ntasks, fn, ctx);
}

namespace {

float dot_plain(const float* a, const float* b, int64_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

void axpy_plain(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void gemv_plain(const float* W, const float* x, int64_t rows, int64_t K, float* y) {
  for (int64_t r = 0; r < rows; ++r) y[r] = dot_plain(W + r * K, x, K);
}

void wsum_plain(const float* V, int64_t ld, const float* p, int64_t rows, int64_t n, float* out) {
  for (int64_t c = 0; c < n; ++c) out[c] = 0.f;
  for (int64_t r = 0; r < rows; ++r) axpy_plain(p[r], V + r * ld, out, n);
}

// The heads one after the other (the portable and AVX2 paths).
template <void (*G)(const float*, const float*, int64_t, int64_t, float*)>
void gemv_heads_loop(const float* W, const float* X, int64_t ldx, int nh, int64_t rows, int64_t K, float* Y,
                     int64_t ldy) {
  for (int h = 0; h < nh; ++h) G(W, X + h * ldx, rows, K, Y + h * ldy);
}

template <void (*S)(const float*, int64_t, const float*, int64_t, int64_t, float*)>
void wsum_heads_loop(const float* V, int64_t ld, const float* P, int64_t ldp, int nh, int64_t rows, int64_t n,
                     float* out, int64_t ldo) {
  for (int h = 0; h < nh; ++h) S(V, ld, P + h * ldp, rows, n, out + h * ldo);
}

float exp_shift_sum_plain(float* x, float shift, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return static_cast<float>(sum);
}

float mask_scale_max_plain(float* r, const bool* mask, float scale, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    r[j] = mask[j] ? r[j] * scale : -std::numeric_limits<float>::infinity();
    // A NaN score makes the maximum NaN and with it the head's output (as in torch's softmax);
    // std::max would skip it, and a query whose scores are all NaN would pass for a padding
    // query with output 0 (a corrupt weight hidden from the first-forward check).
    if (!std::isnan(mx) && !(r[j] <= mx)) mx = r[j];
  }
  return mx;
}

void sumsq_rows_plain(const float* x, int64_t ld, int64_t rows, int64_t n, double* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld;
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    out[r] = ss;
  }
}

void silu_mul_plain(const float* g, const float* u, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

#if defined(LLMC_RT_X86)

__attribute__((target("avx2,fma"))) inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
  float s = hsum256(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

__attribute__((target("avx2,fma"))) void axpy_avx2(float a, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

__attribute__((target("avx2,fma"))) void gemv_avx2(const float* W, const float* x, int64_t rows, int64_t K, float* y) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float* w0 = W + r * K;
    const float *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= K; i += 8) {
      const __m256 xv = _mm256_loadu_ps(x + i);
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), xv, s0);
      s1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), xv, s1);
      s2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), xv, s2);
      s3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), xv, s3);
    }
    float t0 = hsum256(s0), t1 = hsum256(s1), t2 = hsum256(s2), t3 = hsum256(s3);
    for (; i < K; ++i) {
      t0 += w0[i] * x[i];
      t1 += w1[i] * x[i];
      t2 += w2[i] * x[i];
      t3 += w3[i] * x[i];
    }
    y[r] = t0;
    y[r + 1] = t1;
    y[r + 2] = t2;
    y[r + 3] = t3;
  }
  for (; r < rows; ++r) y[r] = dot_avx2(W + r * K, x, K);
}

// Vector exp (Cephes expf): x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two for an exact
// n * ln2_hi), exp(r) = 1 + r + r^2 P(r) with P of degree 5, times 2^n. Inputs below kExpMin give 0
// (so exp(-inf) = 0), inputs above kExpMax are clamped; NaN stays NaN (the clamps take x as the
// second operand, which max/min_ps return when either is NaN).
constexpr float kExpMin = -87.33f, kExpMax = 88.37f, kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kExpP[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                            4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

// 8 lanes.
__attribute__((target("avx2,fma"))) inline __m256 exp256(__m256 x) {
  const __m256 zero_below = _mm256_cmp_ps(x, _mm256_set1_ps(kExpMin), _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_set1_ps(kExpMax), _mm256_max_ps(_mm256_set1_ps(kExpMin), x));
  const __m256 n =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x));
  __m256 y = _mm256_set1_ps(kExpP[0]);
  for (int i = 1; i < 6; ++i) y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP[i]));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  // 2^n through the exponent field: n in [-126, 128) after the clamp; 2^128 (x near 88.37) is
  // built as 2 * 2^127.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i big = _mm256_cmpgt_epi32(ni, _mm256_set1_epi32(127));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, _mm256_and_si256(big, _mm256_set1_epi32(1))),
                                                       _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  y = _mm256_blendv_ps(y, _mm256_add_ps(y, y), _mm256_castsi256_ps(big));
  return _mm256_andnot_ps(zero_below, y);
}

__attribute__((target("avx2,fma"))) void wsum_avx2(const float* V, int64_t ld, const float* p, int64_t rows, int64_t n,
                                                    float* out) {
  int64_t c = 0;
  for (; c + 32 <= n; c += 32) {  // 32 columns in 4 register accumulators over all rows
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t r = 0; r < rows; ++r) {
      const __m256 pr = _mm256_set1_ps(p[r]);
      for (int u = 0; u < 4; ++u) a[u] = _mm256_fmadd_ps(pr, _mm256_loadu_ps(V + r * ld + c + 8 * u), a[u]);
    }
    for (int u = 0; u < 4; ++u) _mm256_storeu_ps(out + c + 8 * u, a[u]);
  }
  for (; c < n; ++c) {
    float a = 0.f;
    for (int64_t r = 0; r < rows; ++r) a += p[r] * V[r * ld + c];
    out[c] = a;
  }
}

__attribute__((target("avx2,fma"))) float exp_shift_sum_avx2(float* x, float shift, int64_t n) {
  const __m256 sh = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float sum = hsum256(acc);
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

__attribute__((target("avx2,fma"))) void silu_mul_avx2(const float* g, const float* u, float* out, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) out[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

// Horizontal sum (GCC 12's _mm512_reduce_add_ps trips -Wmaybe-uninitialized).
__attribute__((target("avx512f,avx2,fma"))) inline float hsum512(__m512 v) {
  const __m256 lo = _mm512_castps512_ps256(v);
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  return hsum256(_mm256_add_ps(lo, hi));
}

__attribute__((target("avx512f,avx2,fma"))) float dot_avx512(const float* a, const float* b, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), a1);
  }
  for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), a0);
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), a1);
  }
  return hsum512(_mm512_add_ps(a0, a1));
}

__attribute__((target("avx512f,avx2,fma"))) void axpy_avx512(float a, const float* x, float* y, int64_t n) {
  const __m512 va = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

// Per 128-bit block of a, b (each [r0, r1, r0', r1'], two rows' partial sums): [a0, a1, b0, b1] +
// [a2, a3, b2, b3], four rows' partial sums.
__attribute__((target("avx512f,avx2,fma"))) inline __m512 reduce_pairs_avx512(__m512 a, __m512 b) {
  const __m512d ad = _mm512_castps_pd(a), bd = _mm512_castps_pd(b);
  return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(ad, bd)), _mm512_castpd_ps(_mm512_unpackhi_pd(ad, bd)));
}

// The lane sums of 4 vectors as one vector of 4 (out[j] = sum of v[j]'s lanes), by a fixed tree:
// lanes l and l + 2 of each 128-bit block, then those two pairs, then the four blocks pairwise (B0 +
// B1, B2 + B3, then their sum). A row's sum depends only on its own vector, so every block of rows
// below adds it the same way. 13 shuffles and adds for 4 rows where a horizontal sum took ~8 per row
// (most of a 64-wide head's scores).
__attribute__((target("avx512f,avx2,fma"))) inline __m128 reduce4_avx512(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 w = reduce_pairs_avx512(_mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b)),
                                       _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d)));
  const __m512 z = _mm512_add_ps(w, _mm512_shuffle_f32x4(w, w, _MM_SHUFFLE(2, 3, 0, 1)));  // blocks B0+B1, B2+B3
  return _mm512_castps512_ps128(_mm512_add_ps(z, _mm512_shuffle_f32x4(z, z, _MM_SHUFFLE(1, 0, 3, 2))));
}

// Rows ahead that the attention's GEMV and weighted sum prefetch: a decode's cached keys and values
// come from L3 (the weights streamed through L2 since the layer's last token), and the loads of a
// block's first rows waited on them.
constexpr int64_t kPrefetchRows = 16;

// R rows (r..r+R-1, R <= 8) of W times NH vectors of X: per (row, vector) one running FMA sum over K
// (16 columns a step, a masked tail), then reduce4_avx512 per 4 rows (R = 1, 4 or 8).
// pf: prefetch rows r + kPrefetchRows .. + R - 1 (the caller says they exist).
template <int NH, int R>
__attribute__((target("avx512f,avx2,fma"))) inline void gemv_rows_avx512(const float* W, const float* X,
                                                                                 int64_t ldx, int64_t r, int64_t K,
                                                                                 float* Y, int64_t ldy, bool pf = false) {
  const float* w = W + r * K;
  __m512 s[NH][8];
  for (int h = 0; h < NH; ++h)
    for (int j = 0; j < 8; ++j) s[h][j] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= K; i += 16) {
    __m512 xv[NH];
    for (int h = 0; h < NH; ++h) xv[h] = _mm512_loadu_ps(X + h * ldx + i);
    if (pf)  // rows r + kPrefetchRows .. + R - 1 are R K contiguous floats: R lines of them a step
      for (int j = 0; j < R; ++j)
        _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchRows * K + i * R + 16 * j), _MM_HINT_T0);
    for (int j = 0; j < R; ++j) {
      const __m512 wv = _mm512_loadu_ps(w + j * K + i);
      for (int h = 0; h < NH; ++h) s[h][j] = _mm512_fmadd_ps(wv, xv[h], s[h][j]);
    }
  }
  if (i < K) {
    const __mmask16 m = static_cast<__mmask16>((1u << (K - i)) - 1);
    __m512 xv[NH];
    for (int h = 0; h < NH; ++h) xv[h] = _mm512_maskz_loadu_ps(m, X + h * ldx + i);
    for (int j = 0; j < R; ++j) {
      const __m512 wv = _mm512_maskz_loadu_ps(m, w + j * K + i);
      for (int h = 0; h < NH; ++h) s[h][j] = _mm512_fmadd_ps(wv, xv[h], s[h][j]);
    }
  }
  for (int h = 0; h < NH; ++h) {
    if constexpr (R == 1) {
      Y[h * ldy + r] = _mm_cvtss_f32(reduce4_avx512(s[h][0], s[h][1], s[h][2], s[h][3]));
    } else {
      for (int j = 0; j < R; j += 4)
        _mm_storeu_ps(Y + h * ldy + r + j, reduce4_avx512(s[h][j], s[h][j + 1], s[h][j + 2], s[h][j + 3]));
    }
  }
}

// Blocks of 8 rows (4 for 4-6 vectors: 8 x 4 accumulators would not fit the 32 registers), then 4,
// then single rows: every output's sum in the same order for any NH, so the heads call gives the
// single calls' bits.
template <int NH>
__attribute__((target("avx512f,avx2,fma"))) void gemv_heads_avx512_n(const float* W, const float* X, int64_t ldx,
                                                                              int64_t rows, int64_t K, float* Y,
                                                                              int64_t ldy) {
  int64_t r = 0;
  if constexpr (NH <= 3)
    for (; r + 8 <= rows; r += 8) gemv_rows_avx512<NH, 8>(W, X, ldx, r, K, Y, ldy, r + kPrefetchRows + 8 <= rows);
  for (; r + 4 <= rows; r += 4) gemv_rows_avx512<NH, 4>(W, X, ldx, r, K, Y, ldy, r + kPrefetchRows + 4 <= rows);
  for (; r < rows; ++r) gemv_rows_avx512<NH, 1>(W, X, ldx, r, K, Y, ldy);
}

__attribute__((target("avx512f,avx2,fma"))) void gemv_avx512(const float* W, const float* x, int64_t rows, int64_t K, float* y) {
  gemv_heads_avx512_n<1>(W, x, 0, rows, K, y, 0);
}

__attribute__((target("avx512f,avx2,fma"))) void gemv_heads_avx512(const float* W, const float* X, int64_t ldx, int nh,
                                                                   int64_t rows, int64_t K, float* Y, int64_t ldy) {
  switch (nh) {
    case 1: gemv_avx512(W, X, rows, K, Y); break;
    case 2: gemv_heads_avx512_n<2>(W, X, ldx, rows, K, Y, ldy); break;
    case 3: gemv_heads_avx512_n<3>(W, X, ldx, rows, K, Y, ldy); break;
    case 4: gemv_heads_avx512_n<4>(W, X, ldx, rows, K, Y, ldy); break;
    case 5: gemv_heads_avx512_n<5>(W, X, ldx, rows, K, Y, ldy); break;
    default: gemv_heads_avx512_n<6>(W, X, ldx, rows, K, Y, ldy); break;
  }
}

// 16 lanes (2^n by vscalefps, which also handles n = 128).
__attribute__((target("avx512f,avx2,fma"))) inline __m512 exp512(__m512 x) {
  const __mmask16 zero_below = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpMin), _CMP_LT_OQ);
  x = _mm512_min_ps(_mm512_set1_ps(kExpMax), _mm512_max_ps(_mm512_set1_ps(kExpMin), x));  // NaN stays NaN (exp256)
  const __m512 n =
      _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x));
  __m512 y = _mm512_set1_ps(kExpP[0]);
  for (int i = 1; i < 6; ++i) y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(kExpP[i]));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~zero_below), _mm512_scalef_ps(y, n));
}

// out[h * ldo + c] = sum_r P[h * ldp + r] * V[r * ld + c] for NH probability vectors at once: 64
// columns at a time (a head_dim of 64 in one pass) in NH x 4 accumulators, each row of V loaded once
// for all vectors, then 16 at a time (masked). Each output column is the same chain of FMAs over the
// rows in order for any NH, so the heads calls give the single call's (NH = 1) bits; with 3 heads the
// 12 chains keep the FMA units busy where one head's 4 waited on the FMA latency.
template <int NH>
__attribute__((target("avx512f,avx2,fma"))) void wsum_heads_avx512_n(const float* V, int64_t ld, const float* P,
                                                                     int64_t ldp, int64_t rows, int64_t n, float* out,
                                                                     int64_t ldo) {
  int64_t c = 0;
  for (; c + 64 <= n; c += 64) {
    __m512 a[NH][4];
    for (int h = 0; h < NH; ++h)
      for (int u = 0; u < 4; ++u) a[h][u] = _mm512_setzero_ps();
    for (int64_t r = 0; r < rows; ++r) {
      if (r + kPrefetchRows < rows)
        for (int u = 0; u < 4; ++u)
          _mm_prefetch(reinterpret_cast<const char*>(V + (r + kPrefetchRows) * ld + c + 16 * u), _MM_HINT_T0);
      __m512 v[4];
      for (int u = 0; u < 4; ++u) v[u] = _mm512_loadu_ps(V + r * ld + c + 16 * u);
      for (int h = 0; h < NH; ++h) {
        const __m512 pr = _mm512_set1_ps(P[h * ldp + r]);
        for (int u = 0; u < 4; ++u) a[h][u] = _mm512_fmadd_ps(pr, v[u], a[h][u]);
      }
    }
    for (int h = 0; h < NH; ++h)
      for (int u = 0; u < 4; ++u) _mm512_storeu_ps(out + h * ldo + c + 16 * u, a[h][u]);
  }
  for (; c < n; c += 16) {
    const __mmask16 m = static_cast<__mmask16>(n - c >= 16 ? 0xffff : (1u << (n - c)) - 1);
    __m512 a[NH];
    for (int h = 0; h < NH; ++h) a[h] = _mm512_setzero_ps();
    for (int64_t r = 0; r < rows; ++r) {
      const __m512 v = _mm512_maskz_loadu_ps(m, V + r * ld + c);
      for (int h = 0; h < NH; ++h) a[h] = _mm512_fmadd_ps(_mm512_set1_ps(P[h * ldp + r]), v, a[h]);
    }
    for (int h = 0; h < NH; ++h) _mm512_mask_storeu_ps(out + h * ldo + c, m, a[h]);
  }
}

__attribute__((target("avx512f,avx2,fma"))) void wsum_avx512(const float* V, int64_t ld, const float* p, int64_t rows,
                                                              int64_t n, float* out) {
  wsum_heads_avx512_n<1>(V, ld, p, 0, rows, n, out, 0);
}

__attribute__((target("avx512f,avx2,fma"))) void wsum_heads_avx512(const float* V, int64_t ld, const float* P,
                                                                   int64_t ldp, int nh, int64_t rows, int64_t n,
                                                                   float* out, int64_t ldo) {
  switch (nh) {
    case 1: wsum_avx512(V, ld, P, rows, n, out); break;
    case 2: wsum_heads_avx512_n<2>(V, ld, P, ldp, rows, n, out, ldo); break;
    case 3: wsum_heads_avx512_n<3>(V, ld, P, ldp, rows, n, out, ldo); break;
    case 4: wsum_heads_avx512_n<4>(V, ld, P, ldp, rows, n, out, ldo); break;
    case 5: wsum_heads_avx512_n<5>(V, ld, P, ldp, rows, n, out, ldo); break;
    default: wsum_heads_avx512_n<6>(V, ld, P, ldp, rows, n, out, ldo); break;
  }
}

__attribute__((target("avx512f,avx2,fma"))) float exp_shift_sum_avx512(float* x, float shift, int64_t n) {
  const __m512 sh = _mm512_set1_ps(shift);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = static_cast<__mmask16>(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
    const __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), sh)));
    _mm512_mask_storeu_ps(x + i, m, e);
    acc = _mm512_add_ps(acc, e);
  }
  return hsum512(acc);
}

__attribute__((target("avx512f,avx2,fma"))) void silu_mul_avx512(const float* g, const float* u, float* out, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = static_cast<__mmask16>(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, u + i)));
  }
}

// 16 scores at a time: the mask bytes widened to a lane mask, the scale multiplied where set and
// -inf stored elsewhere, a running vector maximum with NaN lanes tracked apart (vmaxps drops them).
__attribute__((target("avx512f,avx2,fma"))) float mask_scale_max_avx512(float* r, const bool* mask, float scale,
                                                                        int64_t n) {
  const __m512 sc = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 vmax = ninf;
  __mmask16 nan = 0;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512i mb = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mask + j)));
    const __mmask16 k = _mm512_test_epi32_mask(mb, mb);
    const __m512 v = _mm512_mask_mul_ps(ninf, k, _mm512_loadu_ps(r + j), sc);
    _mm512_storeu_ps(r + j, v);
    vmax = _mm512_max_ps(vmax, v);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  }
  const float tail = mask_scale_max_plain(r + j, mask + j, scale, n - j);
  if (nan != 0 || std::isnan(tail)) return std::numeric_limits<float>::quiet_NaN();
  return std::max(_mm512_reduce_max_ps(vmax), tail);
}

// Eight rows at a time, one per fp64 lane: each lane adds its row's squares in the loop's order (a
// dependent chain of n FMAs per row before, 8 rows per chain now). Rows past `rows`: masked off.
__attribute__((target("avx512f,avx2,fma"))) void sumsq_rows_avx512(const float* x, int64_t ld, int64_t rows, int64_t n,
                                                                   double* out) {
  if (ld > (int64_t{1} << 27)) {  // 32-bit gather offsets (8 rows x ld x 4 bytes)
    sumsq_rows_plain(x, ld, rows, n, out);
    return;
  }
  const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(static_cast<int>(ld)));
  for (int64_t r0 = 0; r0 < rows; r0 += 8) {
    const int nr = static_cast<int>(std::min<int64_t>(8, rows - r0));
    if (nr < 4) {  // a decode's single row: the scalar chain, not gathers of one lane
      sumsq_rows_plain(x + r0 * ld, ld, nr, n, out + r0);
      continue;
    }
    const __mmask8 k = static_cast<__mmask8>((1u << nr) - 1u);
    const __m256 km = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(nr), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    const float* xb = x + r0 * ld;
    __m512d ss = _mm512_setzero_pd();
    for (int64_t i = 0; i < n; ++i) {
      const __m512d d = _mm512_cvtps_pd(_mm256_mask_i32gather_ps(_mm256_setzero_ps(), xb + i, idx, km, 4));
      ss = _mm512_fmadd_pd(d, d, ss);
    }
    _mm512_mask_storeu_pd(out + r0, k, ss);
  }
}

#endif

Simd portable() {
  return {dot_plain,      axpy_plain,     gemv_plain, wsum_plain, exp_shift_sum_plain, silu_mul_plain,
          gemv_heads_loop<gemv_plain>, wsum_heads_loop<wsum_plain>, mask_scale_max_plain, sumsq_rows_plain, "portable"};
}

bool has_avx512() {
#if defined(LLMC_RT_X86)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

bool has_avx2() {
#if defined(LLMC_RT_X86)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

#if defined(LLMC_RT_X86)
Simd avx512() {
  return {dot_avx512,        axpy_avx512,       gemv_avx512, wsum_avx512, exp_shift_sum_avx512, silu_mul_avx512,
          gemv_heads_avx512, wsum_heads_avx512, mask_scale_max_avx512, sumsq_rows_avx512, "avx512"};
}
Simd avx2() {
  return {dot_avx2,      axpy_avx2,     gemv_avx2, wsum_avx2, exp_shift_sum_avx2, silu_mul_avx2,
          gemv_heads_loop<gemv_avx2>, wsum_heads_loop<wsum_avx2>, mask_scale_max_plain, sumsq_rows_plain, "avx2"};
}
#endif

}  // namespace

const Simd& simd() {
  static const Simd* s = [] {
    for (const char* name : {"avx512", "avx2"})
      if (const Simd* p = simd_path(name)) return p;
    return simd_path("portable");
  }();
  return *s;
}

const Simd* simd_path(const char* name) {
  static const Simd p = portable();
  if (std::string(name) == "portable") return &p;
#if defined(LLMC_RT_X86)
  static const Simd a2 = avx2(), a5 = avx512();
  if (std::string(name) == "avx2") return has_avx2() ? &a2 : nullptr;
  if (std::string(name) == "avx512") return has_avx512() ? &a5 : nullptr;
#endif
  return nullptr;
}

}  // namespace llmc::rt
