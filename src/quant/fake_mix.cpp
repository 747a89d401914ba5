#include "llmc/quant/fake_mix.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "llmc/core/error.h"
#include "llmc_kernels/hd.h"

namespace llmc {

namespace {

namespace kq = llmc::kernels;

constexpr int kMaxGroup = 128;
// Rows whose dot products are summed in float before they are added to the double totals.
constexpr int64_t kFlushRows = 32;
// Round to nearest even by the 1.5 * 2^23 trick: exact for |t| <= 2^22. |w / s| stays far below
// (s >= (hi - lo) / qmax up to fp16 rounding); the clamp keeps larger t (impossible for RTN
// scales) on the same clamped code as std::nearbyint would.
constexpr float kRound = 12582912.f;
constexpr float kTMax = 4194304.f;

// One row of the slice: w (K floats), out/drow rows or null, part: (nq + 1, K) float dot partials.
// Compiled for AVX2 and baseline x86-64, picked at load time; the arithmetic (no FMA contraction
// of the quantizer: a division, adds and one multiply) is the same in both.
__attribute__((target_clones("avx2", "default"))) void mix_row(const FakeMixSlice& S, const float* w, float* out,
                                                                const float* drow, float* part) {
  const int64_t K = S.K;
  const int group = S.group;
  float acc[kMaxGroup], v[kMaxGroup];
  for (int64_t g0 = 0; g0 < K; g0 += group) {
    const int L = static_cast<int>(std::min<int64_t>(group, K - g0));
    const float* wg = w + g0;
    // kernels::quantize_rtn's range: [min(0, w), max(0, w)] of the group.
    float lo = 0.f, hi = 0.f;
    for (int k = 0; k < L; ++k) {
      lo = wg[k] < lo ? wg[k] : lo;
      hi = hi < wg[k] ? wg[k] : hi;
    }
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
      // Scale and zero exactly as kernels::quantize_rtn computes and stores them.
      const float qmax = static_cast<float>((1 << S.bits[b]) - 1);
      float s = (hi > lo) ? static_cast<float>((static_cast<double>(hi) - lo) / qmax) : 1.f;
      uint16_t sh = kq::fp32_to_fp16(s);
      if ((sh & 0x7fffu) == 0) sh = 0x0001;
      if ((sh & 0x7fffu) >= 0x7c00u) sh = 0x7bff;
      s = kq::fp16_to_fp32(sh);
      const float z = std::clamp(std::nearbyint(-lo / s), 0.f, qmax);  // integer: exact in fp16
      // q = clamp(nearbyint(w / s) + z, 0, qmax); dequantized s * (q - z) (kernels::dequant).
      for (int k = 0; k < L; ++k) {
        float t = wg[k] / s;
        t = t < -kTMax ? -kTMax : (t > kTMax ? kTMax : t);
        const float r = (t + kRound) - kRound;
        float q = r + z;
        q = q < 0.f ? 0.f : q;
        q = q > qmax ? qmax : q;
        v[k] = s * (q - z);
      }
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
      mix_row(S, w, out ? out + n * ldo : nullptr, dW ? dW + n * ldd : nullptr, part.data());
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
