#include "llmc/quant/fake_mix.h"

#include <ATen/Parallel.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "llmc/core/error.h"
#include "llmc_kernels/group_quant.h"
#include "llmc_kernels/hd.h"

namespace llmc {

namespace {

namespace kq = llmc::kernels;

constexpr int kMaxGroup = 128;
// Rows whose dot products are summed in float before they are added to the double totals.
constexpr int64_t kFlushRows = 32;

struct Quantizer {
  float s, z, qmax;
};

// Scale and zero exactly as kernels::quantize_rtn computes and stores them (its rule,
// kernels::rtn_group_params), for a group whose range is [lo, hi] (lo <= 0 <= hi).
inline Quantizer quantizer(int bits, float lo, float hi) {
  const kq::GroupParams p = kq::rtn_group_params(lo, hi, bits);
  return {kq::fp16_to_fp32(p.scale), p.zero, static_cast<float>((1 << bits) - 1)};
}

// Q(w) for k in [k0, L): q = clamp(nearbyint(w / s) + z, 0, qmax), dequantized s * (q - z)
// (kernels::dequant).
inline void quantize_scalar(const Quantizer& Q, const float* w, int k0, int L, float* v) {
  for (int k = k0; k < L; ++k) v[k] = Q.s * (std::clamp(std::nearbyint(w[k] / Q.s) + Q.z, 0.f, Q.qmax) - Q.z);
}

// What one row does with a group's range and quantized values (both kernels): mixture and dots.
// The loops are plain: the compiler vectorizes them (without FMA contraction: the AVX2 path is
// compiled for "avx2" only, so both paths give the same floats).
template <class Range, class Quantize>
__attribute__((always_inline)) inline void row_body(const FakeMixSlice& S, const float* w, float* out,
                                                    const float* drow, float* part, Range range, Quantize quantize) {
  const int64_t K = S.K;
  const int group = S.group;
  alignas(32) float acc[kMaxGroup];
  alignas(32) float v[kMaxGroup];
  for (int64_t g0 = 0; g0 < K; g0 += group) {
    const int L = static_cast<int>(std::min<int64_t>(group, K - g0));
    const float* wg = w + g0;
    float lo = 0.f, hi = 0.f;  // kernels::quantize_rtn's range: [min(0, w), max(0, w)]
    range(wg, L, lo, hi);
    if (out) {
      if (S.coef16 == 0.f) {
        for (int k = 0; k < L; ++k) acc[k] = 0.f;
      } else if (S.colw16) {
        const float* cw = S.colw16 + g0;
        for (int k = 0; k < L; ++k) acc[k] = S.coef16 * cw[k] * wg[k];
      } else {
        for (int k = 0; k < L; ++k) acc[k] = S.coef16 * wg[k];
      }
    }
    if (drow) {
      float* d = part + S.nq * K + g0;
      const float* dg = drow + g0;
      for (int k = 0; k < L; ++k) d[k] += dg[k] * wg[k];
    }
    for (int b = 0; b < S.nq; ++b) {
      const bool use_out = out && S.coef[b] != 0.f;
      if (!use_out && !drow) continue;
      const Quantizer Q = quantizer(S.bits[b], lo, hi);
      quantize(Q, wg, L, v);
      if (use_out) {
        const float c = S.coef[b];
        if (S.colw) {
          const float* cw = S.colw + g0;
          for (int k = 0; k < L; ++k) acc[k] += c * cw[k] * v[k];
        } else {
          for (int k = 0; k < L; ++k) acc[k] += c * v[k];
        }
      }
      if (drow) {
        float* d = part + b * K + g0;
        const float* dg = drow + g0;
        for (int k = 0; k < L; ++k) d[k] += dg[k] * v[k];
      }
    }
    if (out) {
      float* o = out + g0;
      for (int k = 0; k < L; ++k) o[k] += acc[k];
    }
  }
}

// One row of the slice: w (K floats), out/drow rows or null, part: (nq + 1, K) float dot partials.
void mix_row_scalar(const FakeMixSlice& S, const float* w, float* out, const float* drow, float* part) {
  row_body(
      S, w, out, drow, part,
      [](const float* wg, int L, float& lo, float& hi) {
        for (int k = 0; k < L; ++k) {
          lo = std::min(lo, wg[k]);
          hi = std::max(hi, wg[k]);
        }
      },
      [](const Quantizer& Q, const float* wg, int L, float* v) { quantize_scalar(Q, wg, 0, L, v); });
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LLMC_FAKE_MIX_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2")
// The same row with the range and the quantizer in AVX2: min/max, an IEEE division and
// round-to-nearest-even (vroundps) give the scalar path's floats (signed zeros aside).
void mix_row_avx2(const FakeMixSlice& S, const float* w, float* out, const float* drow, float* part) {
  row_body(
      S, w, out, drow, part,
      [](const float* wg, int L, float& lo, float& hi) {
        int k = 0;
        __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_setzero_ps();
        for (; k + 8 <= L; k += 8) {
          const __m256 x = _mm256_loadu_ps(wg + k);
          vlo = _mm256_min_ps(vlo, x);
          vhi = _mm256_max_ps(vhi, x);
        }
        alignas(32) float l8[8], h8[8];
        _mm256_store_ps(l8, vlo);
        _mm256_store_ps(h8, vhi);
        for (int i = 0; i < 8; ++i) {
          lo = std::min(lo, l8[i]);
          hi = std::max(hi, h8[i]);
        }
        for (; k < L; ++k) {
          lo = std::min(lo, wg[k]);
          hi = std::max(hi, wg[k]);
        }
      },
      [](const Quantizer& Q, const float* wg, int L, float* v) {
        int k = 0;
        const __m256 vs = _mm256_set1_ps(Q.s), vz = _mm256_set1_ps(Q.z), vq = _mm256_set1_ps(Q.qmax);
        const __m256 zero = _mm256_setzero_ps();
        for (; k + 8 <= L; k += 8) {
          const __m256 t = _mm256_div_ps(_mm256_loadu_ps(wg + k), vs);
          const __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
          const __m256 q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, vz), zero), vq);
          _mm256_store_ps(v + k, _mm256_mul_ps(vs, _mm256_sub_ps(q, vz)));
        }
        quantize_scalar(Q, wg, k, L, v);
      });
}
#pragma GCC pop_options
#endif

using RowFn = void (*)(const FakeMixSlice&, const float*, float*, const float*, float*);

RowFn row_kernel() {
#ifdef LLMC_FAKE_MIX_AVX2
  static const RowFn f = __builtin_cpu_supports("avx2") ? mix_row_avx2 : mix_row_scalar;
  return f;
#else
  return mix_row_scalar;
#endif
}

}  // namespace

void fake_mix(const FakeMixSlice& S, float* out, int64_t ldo, const float* dW, int64_t ldd, double* dots) {
  LLMC_CHECK(S.w && S.N >= 0 && S.K >= 0 && S.ldw >= S.K, "fake_mix: bad slice ({} x {}, ldw {})", S.N, S.K, S.ldw);
  LLMC_CHECK(S.group == 32 || S.group == 64 || S.group == 128, "fake_mix: group {} (32, 64 or 128)", S.group);
  LLMC_CHECK(S.nq >= 0 && S.nq <= FakeMixSlice::kMaxOptions, "fake_mix: {} options", S.nq);
  for (int b = 0; b < S.nq; ++b)
    LLMC_CHECK(S.bits[b] == 2 || S.bits[b] == 3 || S.bits[b] == 4 || S.bits[b] == 8, "fake_mix: {} bits",
               S.bits[b]);
  LLMC_CHECK(!dW || dots, "fake_mix: dW without dots");
  if (S.N == 0 || S.K == 0) return;
  const int64_t K = S.K, width = (S.nq + 1) * K;
  const int threads = std::max(1, at::get_num_threads());
  const int64_t grain = std::max<int64_t>(8, (S.N + 4 * threads - 1) / (4 * threads));
  const RowFn kernel = row_kernel();
  std::mutex mu;
  at::parallel_for(0, S.N, grain, [&](int64_t n0, int64_t n1) {
    std::vector<float> row(S.bf16 ? K : 0);
    std::vector<float> part(dW ? width : 0);
    std::vector<double> sum(dW ? width : 0);
    for (int64_t n = n0; n < n1; ++n) {
      const float* w;
      if (S.bf16) {
        const uint16_t* src = static_cast<const uint16_t*>(S.w) + n * S.ldw;
        for (int64_t k = 0; k < K; ++k) {
          const uint32_t u = static_cast<uint32_t>(src[k]) << 16;
          std::memcpy(&row[k], &u, 4);
        }
        w = row.data();
      } else {
        w = static_cast<const float*>(S.w) + n * S.ldw;
      }
      kernel(S, w, out ? out + n * ldo : nullptr, dW ? dW + n * ldd : nullptr, part.data());
      if (dW && ((n - n0 + 1) % kFlushRows == 0 || n + 1 == n1)) {
        for (int64_t i = 0; i < width; ++i) sum[i] += part[i];
        std::fill(part.begin(), part.end(), 0.f);
      }
    }
    if (dW) {
      std::lock_guard<std::mutex> lock(mu);
      for (int64_t i = 0; i < width; ++i) dots[i] += sum[i];
    }
  });
}

}  // namespace llmc
