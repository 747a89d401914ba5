// Shared helpers for the kernel tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "llmc_kernels/qformat.h"

namespace llmc::kernels::test {

// Random packed matrix: uniform codes, scales in [0.5, 2] * 2^-6, zero points uniform in
// [0, 2^bits - 1]; every third group gets a fractional zero (the format allows any fp16 zero).
inline QMatrix random_qmatrix(int bits, int group, int N, int K, uint32_t seed) {
  std::mt19937 rng(seed);
  const QLayout l = make_layout(bits, group, N, K);
  const int qmax = (1 << bits) - 1;
  std::uniform_int_distribution<int> code(0, qmax);
  std::uniform_real_distribution<float> sdist(0.5f, 2.0f), zdist(0.f, static_cast<float>(qmax));
  std::vector<uint8_t> codes(static_cast<size_t>(N) * K);
  for (auto& c : codes) c = static_cast<uint8_t>(code(rng));
  std::vector<uint16_t> scales(l.scale_count), zeros(l.scale_count);
  for (size_t i = 0; i < l.scale_count; ++i) {
    scales[i] = fp32_to_fp16(sdist(rng) / 64.f);
    const float z = zdist(rng);
    zeros[i] = fp32_to_fp16(i % 3 == 2 ? z : std::round(z));
  }
  return pack(bits, group, N, K, codes.data(), scales.data(), zeros.data());
}

inline std::vector<float> random_vec(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Relative error used by all GEMM tests: max_i |y_i - ref_i| / max_i |ref_i|.
inline double rel_error(const std::vector<float>& y, const std::vector<float>& ref) {
  double num = 0, den = 0;
  if (y.size() != ref.size()) return INFINITY;
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) return INFINITY;  // NaN would slip through std::max
    num = std::max(num, std::fabs(static_cast<double>(y[i]) - ref[i]));
    den = std::max(den, std::fabs(static_cast<double>(ref[i])));
  }
  return den > 0 ? num / den : num;
}

}  // namespace llmc::kernels::test
