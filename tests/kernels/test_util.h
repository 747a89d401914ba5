// Shared helpers for the kernel tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "llmc_kernels/qformat.h"
#include "llmc_kernels/qgemm.h"

namespace llmc::kernels::test {

// Random packed matrix: uniform codes, scales in [0.5, 2] * 2^-6, zero points uniform in
// [0, 2^bits - 1]; every third group gets a fractional zero (the format allows any fp16 zero).
// Zeros: every third one fractional, the others integers; integer_zeros: all integers (8 bits: the
// symmetric zero 128, as our 8-bit quantizer writes), as RTN / GPTQ exports have them.
inline QMatrix random_qmatrix(int bits, int group, int N, int K, uint32_t seed, bool integer_zeros = false) {
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
    zeros[i] = fp32_to_fp16(integer_zeros ? (bits == 8 ? 128.f : std::round(z)) : i % 3 == 2 ? z : std::round(z));
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

// rel_error beyond what rounding x to integers in [-qmax, qmax] explains (qgemm.h: the AVX2 paths,
// qmax = 32767; the int8-x prefill, 127): with dx_g = max_{k in g} |x_mk| / qmax each x_mk moves by
// at most dx_g / 2, so y_mn may move by
//     b_mn = sum_g dx_g / 2 * sum_{k in g} |w_nk|      (w dequantized in fp64).
// Returns max_i max(0, |y_i - ref_i| - b_i) / max_i |ref_i|, to be held to the fp32 bound. A
// wrong code or x order in that path gives errors of the size of y itself, far above b.
inline double rel_error_rounded_x(const std::vector<float>& y, const std::vector<float>& ref, const std::vector<float>& x,
                                  int M, const QMatrixView& w, double qmax) {
  const QLayout l = w.layout();
  const std::vector<uint8_t> codes = unpack_codes(w);
  double num = 0, den = 0;
  for (int m = 0; m < M; ++m) {
    std::vector<double> dx(static_cast<size_t>(l.groups_per_row), 0.0);
    for (int k = 0; k < l.K; ++k) {
      double& d = dx[static_cast<size_t>(k / l.group)];
      d = std::max(d, std::fabs(static_cast<double>(x[static_cast<size_t>(m) * l.K + k])) / qmax);
    }
    for (int n = 0; n < l.N; ++n) {
      double b = 0;
      for (int k = 0; k < l.K; ++k) {
        const size_t gi = group_index(l.groups_per_row, l.group, n, k);
        const double wk = fp16_to_fp32(w.scales[gi]) * (codes[static_cast<size_t>(n) * l.K + k] - fp16_to_fp32(w.zeros[gi]));
        b += dx[static_cast<size_t>(k / l.group)] / 2 * std::fabs(wk);
      }
      const size_t i = static_cast<size_t>(m) * l.N + n;
      if (!std::isfinite(y[i])) return INFINITY;
      num = std::max(num, std::fabs(static_cast<double>(y[i]) - ref[i]) - b);
      den = std::max(den, std::fabs(static_cast<double>(ref[i])));
    }
  }
  return den > 0 ? num / den : num;
}

// The error a qgemm_cpu(x, M, w, ..., isa) result is held to: rel_error_rounded_x where that call
// rounds x to int16 or int8 (qgemm_x_bits), rel_error otherwise.
inline double gemm_error(const std::vector<float>& y, const std::vector<float>& ref, const std::vector<float>& x, int M,
                         const QMatrixView& w, Isa isa) {
  const int xb = qgemm_x_bits(isa, M, w.bits);
  return xb == 32 ? rel_error(y, ref) : rel_error_rounded_x(y, ref, x, M, w, xb == 8 ? 127.0 : 32767.0);
}

// Sets prefill_x_bits() for a scope (the default, 16, restored at its end).
struct PrefillXBits {
  explicit PrefillXBits(int bits) { set_prefill_x_bits(bits); }
  ~PrefillXBits() { set_prefill_x_bits(16); }
  PrefillXBits(const PrefillXBits&) = delete;
  PrefillXBits& operator=(const PrefillXBits&) = delete;
};

}  // namespace llmc::kernels::test
