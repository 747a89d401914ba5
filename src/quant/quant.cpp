#include "llmc/quant/quant.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "llmc/core/error.h"
#include "llmc_kernels/group_quant.h"
#include "llmc_kernels/qgemm.h"

namespace llmc {

namespace kq = llmc::kernels;

namespace {

// w: (N, K) -> kernels::quantize_groups, the one group loop of every RTN variant, with `rule`; its
// argument errors (bits, group, a non-finite weight) become llmc errors.
kq::QMatrix quantize_with(const at::Tensor& w, int bits, int group, const kq::GroupRule& rule, const char* who) {
  LLMC_CHECK(w.dim() == 2, "quantize: weight must be 2-D");
  auto wc = w.detach().to(at::kFloat).contiguous();
  try {
    return kq::quantize_groups(wc.data_ptr<float>(), static_cast<int>(wc.size(0)), static_cast<int>(wc.size(1)), bits,
                               group, rule, who);
  } catch (const std::invalid_argument& e) {
    fail("quantize: {}", e.what());
  }
}

}  // namespace

kq::QMatrix quantize_rtn(const at::Tensor& w, int bits, int group) {
  return quantize_with(w, bits, group, [bits](float lo, float hi) { return kq::rtn_group_params(lo, hi, bits); },
                       "quantize_rtn");
}

bool fp16_offset_exact(uint16_t scale_fp16, float zero) {
  const float p = kq::fp16_to_fp32(scale_fp16) * zero;  // exact: 11 x 8 significant bits
  const uint16_t h = kq::fp32_to_fp16(p);
  return (h & 0x7fffu) < 0x7c00u && kq::fp16_to_fp32(h) == p;
}

uint16_t fp16_offset_scale(uint16_t sh, double lo, int bits, float* zero) {
  const float qmax = static_cast<float>((1 << bits) - 1);
  auto zero_of = [&](uint16_t h) {
    return std::clamp(std::nearbyint(static_cast<float>(-lo) / kq::fp16_to_fp32(h)), 0.f, qmax);
  };
  for (int step = 0; step < 0x7c00; ++step) {
    for (int dir : {1, -1}) {
      if (step == 0 && dir < 0) continue;
      const int c = static_cast<int>(sh) + dir * step;
      if (c < 1 || c >= 0x7c00) continue;
      const uint16_t h = static_cast<uint16_t>(c);
      const float z = zero_of(h);
      if (fp16_offset_exact(h, z)) {
        *zero = z;
        return h;
      }
    }
  }
  *zero = zero_of(sh);  // unreachable in practice: a scale with few significant bits always qualifies
  return sh;
}

// 8 bits, GGUF-exact: symmetric, z = 128 and s = fp16(max|w| / 127) (nudged up until max|w| / s
// rounds to at most 127), so every 32-weight block is a Q8_0 block (d = s, q - 128).
uint16_t symmetric8_scale(double amax) {
  uint16_t sh = kq::fp32_to_fp16(static_cast<float>(amax / 127.0));
  if ((sh & 0x7fffu) == 0) sh = 0x0001;
  if ((sh & 0x7fffu) >= 0x7c00u) sh = 0x7bff;
  while (sh < 0x7bff && std::nearbyint(static_cast<float>(amax) / kq::fp16_to_fp32(sh)) > 127.f) ++sh;
  return sh;
}

kq::QMatrix quantize_rtn_fp16_offsets(const at::Tensor& w, int bits, int group) {
  // kernels::quantize_rtn's rule, with the scale moved to an fp16-exact offset (8 bits: symmetric).
  return quantize_with(
      w, bits, group,
      [bits](float lo, float hi) {
        kq::GroupParams p = kq::rtn_group_params(lo, hi, bits);
        lo = std::min(0.f, lo);  // the RTN range, as rtn_group_params widens it
        hi = std::max(0.f, hi);
        if (bits == 8) {
          p.scale = symmetric8_scale(std::max(-static_cast<double>(lo), static_cast<double>(hi)));
          p.zero = 128.f;
        } else {
          p.scale = fp16_offset_scale(p.scale, lo, bits, &p.zero);
        }
        return p;
      },
      "quantize_rtn_fp16_offsets");
}

kq::QMatrix quantize_rtn_minmax(const at::Tensor& w, int bits, int group) {
  return quantize_with(
      w, bits, group,
      [bits](float lo, float hi) {
        kq::GroupParams p;
        p.scale = kq::range_scale_fp16(lo, hi, bits);
        p.zero = kq::fp16_to_fp32(kq::fp32_to_fp16(-lo / kq::fp16_to_fp32(p.scale)));
        if (!(std::fabs(p.zero) <= 64.f)) {  // quantize_rtn's rule: the range widened to hold 0, integer z
          lo = std::min(lo, 0.f);
          hi = std::max(hi, 0.f);
          p.scale = kq::range_scale_fp16(lo, hi, bits);
          p.zero = std::clamp(std::nearbyint(-lo / kq::fp16_to_fp32(p.scale)), 0.f, static_cast<float>((1 << bits) - 1));
        }
        p.round_with_zero = true;  // z is a fraction in general
        return p;
      },
      "quantize_rtn_minmax");
}

at::Tensor dequantize(const kq::QMatrix& q) {
  auto out = at::empty({q.layout.N, q.layout.K}, at::kFloat);
  kq::dequantize(q.view(), out.data_ptr<float>());
  return out;
}

at::Tensor fake_quantize(const at::Tensor& w, int bits, int group) {
  if (bits >= 16) return w.to(at::kFloat);
  return dequantize(quantize_rtn(w, bits, group));
}

at::Tensor straight_through(const at::Tensor& w, const at::Tensor& wq) { return w + (wq.to(w.scalar_type()) - w).detach(); }

HessianAccumulator::HessianAccumulator(int64_t K) : H_(at::zeros({K, K}, at::kDouble)) {}

void HessianAccumulator::add(const at::Tensor& x) {
  auto x2 = x.detach().reshape({-1, x.size(-1)}).to(at::kDouble);
  const int64_t m = x2.size(0);
  // Running mean of 2 x^T x so the scale does not depend on how inputs are batched.
  H_.mul_(static_cast<double>(n_) / (n_ + m));
  n_ += m;
  x2 = x2 * std::sqrt(2.0 / n_);
  H_.addmm_(x2.t(), x2);
}

at::Tensor HessianAccumulator::hessian() const { return H_; }

kq::QMatrix gptq_quantize(const at::Tensor& W_in, const at::Tensor& H_in, int bits, int group, double damp,
                          bool fp16_offsets) {
  LLMC_CHECK(W_in.dim() == 2 && H_in.dim() == 2 && H_in.size(0) == W_in.size(1) && H_in.size(1) == W_in.size(1),
             "gptq: W must be (N, K) and H (K, K)");
  LLMC_CHECK(kq::valid_bits(bits) && kq::valid_group(group), "gptq: bits {} / group {} not supported", bits, group);
  const int64_t N = W_in.size(0), K = W_in.size(1);
  const int qmax = (1 << bits) - 1;
  auto W = W_in.detach().to(at::kDouble).clone();
  auto H = H_in.detach().to(at::kDouble).clone();
  // Inputs that never fire: their weights cannot matter; keep H invertible.
  auto dead = H.diagonal() == 0;
  H.diagonal().masked_fill_(dead, 1.0);
  W.masked_fill_(dead.unsqueeze(0), 0.0);
  H.diagonal().add_(damp * H.diagonal().mean().item<double>());
  // Upper Cholesky factor of H^-1: row i holds the update coefficients of column i.
  auto L = at::linalg_cholesky(H);
  auto Hinv = at::cholesky_inverse(L);
  auto U = at::linalg_cholesky(Hinv).t().contiguous();  // upper

  const kq::QLayout lay = kq::make_layout(bits, group, static_cast<int>(N), static_cast<int>(K));
  std::vector<uint8_t> codes(static_cast<size_t>(N * K));
  std::vector<uint16_t> scales(lay.scale_count), zeros(lay.scale_count);
  std::vector<double> s(N), z(N);
  auto Wa = W.accessor<double, 2>();
  auto Ua = U.accessor<double, 2>();
  std::vector<double> err(N);
  for (int64_t k = 0; k < K; ++k) {
    if (k % group == 0) {  // new group: RTN parameters from the current (updated) weights
      const int64_t k1 = std::min<int64_t>(K, k + group);
      const int64_t gi = k / group;
      for (int64_t n = 0; n < N; ++n) {
        double lo = 0, hi = 0;
        for (int64_t j = k; j < k1; ++j) {
          lo = std::min(lo, Wa[n][j]);
          hi = std::max(hi, Wa[n][j]);
        }
        float sf = hi > lo ? static_cast<float>((hi - lo) / qmax) : 1.f;
        uint16_t sh = kq::fp32_to_fp16(sf);
        if ((sh & 0x7fffu) == 0) sh = 0x0001;
        if ((sh & 0x7fffu) >= 0x7c00u) sh = 0x7bff;
        if (fp16_offsets && bits == 8) {
          sh = symmetric8_scale(std::max(-lo, hi));
          s[n] = kq::fp16_to_fp32(sh);
          z[n] = 128.0;
        } else if (fp16_offsets) {
          float zf = 0;
          sh = fp16_offset_scale(sh, lo, bits, &zf);
          s[n] = kq::fp16_to_fp32(sh);
          z[n] = zf;
        } else {
          s[n] = kq::fp16_to_fp32(sh);
          z[n] = std::clamp(std::nearbyint(static_cast<float>(-lo) / static_cast<float>(s[n])), 0.f,
                            static_cast<float>(qmax));
        }
        scales[n * lay.groups_per_row + gi] = sh;
        zeros[n * lay.groups_per_row + gi] = kq::fp32_to_fp16(static_cast<float>(z[n]));
      }
    }
    const double d = Ua[k][k];
    for (int64_t n = 0; n < N; ++n) {
      const double w = Wa[n][k];
      const float q = std::clamp(std::nearbyint(static_cast<float>(w) / static_cast<float>(s[n])) + static_cast<float>(z[n]),
                                 0.f, static_cast<float>(qmax));
      codes[n * K + k] = static_cast<uint8_t>(q);
      const double deq = static_cast<double>(kq::dequant(static_cast<uint32_t>(q), static_cast<float>(s[n]),
                                                         static_cast<float>(z[n])));
      err[n] = (w - deq) / d;
    }
    // Spread this column's error over the remaining columns: W[:, k+1:] -= err * U[k, k+1:].
    for (int64_t n = 0; n < N; ++n) {
      const double e = err[n];
      if (e == 0) continue;
      double* row = &Wa[n][0];
      const double* u = &Ua[k][0];
      for (int64_t j = k + 1; j < K; ++j) row[j] -= e * u[j];
    }
  }
  return kq::pack(bits, group, static_cast<int>(N), static_cast<int>(K), codes.data(), scales.data(), zeros.data());
}

QuantizedLinear::QuantizedLinear(kq::QMatrix q) : q_(std::move(q)) {}

at::Tensor packed_forward(const at::Tensor& x, int64_t K, int64_t N, const char* who,
                          const std::function<void(const float* x, int M, float* y)>& gemm) {
  LLMC_CHECK(x.size(-1) == K, "{}: input has {} features, expected {}", who, x.size(-1), K);
  auto xf = x.to(at::kFloat).contiguous();
  const int64_t M = xf.numel() / K;
  std::vector<int64_t> out_shape = x.sizes().vec();
  out_shape.back() = N;
  auto y = at::empty(out_shape, at::kFloat);
  if (M > 0) gemm(xf.data_ptr<float>(), static_cast<int>(M), y.data_ptr<float>());
  return y.to(x.scalar_type());
}

at::Tensor QuantizedLinear::forward(const at::Tensor& x) {
  return packed_forward(x, q_.layout.K, q_.layout.N, "QuantizedLinear", [&](const float* xp, int M, float* yp) {
    kq::qgemm_cpu(xp, M, q_.view(), nullptr, yp);
  });
}

}  // namespace llmc
