#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "llmc/core/error.h"
#include "llmc/quant/quant.h"
#include "llmc_kernels/qgemm.h"

using namespace llmc;

TEST(Quant, EffectiveGroup) {
  EXPECT_EQ(effective_group(576, 128), 128);
  EXPECT_EQ(effective_group(64, 128), 64);
  EXPECT_EQ(effective_group(40, 128), 64);
  EXPECT_EQ(effective_group(8, 128), 32);
  EXPECT_THROW(effective_group(64, 48), Error);
}

// The fake-quantized weight is exactly what the packed kernel multiplies with.
TEST(Quant, FakeQuantMatchesPackedKernel) {
  at::manual_seed(0);
  for (int bits : {2, 3, 4, 8}) {
    for (auto [N, K] : std::vector<std::pair<int64_t, int64_t>>{{37, 172}, {64, 576}, {13, 64}}) {
      auto w = at::randn({N, K});
      auto x = at::randn({5, K});
      const int g = effective_group(static_cast<int>(K), 128);
      QuantizedLinear q(quantize_rtn(w, bits, g));
      auto ref = at::matmul(x.to(at::kDouble), fake_quantize(w, bits, g).to(at::kDouble).t());
      auto got = q.forward(x).to(at::kDouble);
      // Where the kernel rounds x to int16 per group (qgemm.h), each x moves by at most dx / 2,
      // dx = max|x over the group| / 32767: the result may move by (dx / 2) |W|^T beyond fp32 rounding.
      auto slack = at::zeros_like(ref);
      if (kernels::qgemm_rounds_x_to_int16()) {
        auto dx = at::empty({5, K}, at::kDouble);
        for (int64_t k0 = 0; k0 < K; k0 += g) {
          const int64_t n = std::min<int64_t>(g, K - k0);
          dx.narrow(1, k0, n).copy_(std::get<0>(x.narrow(1, k0, n).abs().max(1, true)).to(at::kDouble).expand({5, n}) / 32767);
        }
        slack = at::matmul(dx / 2, fake_quantize(w, bits, g).to(at::kDouble).abs().t());
      }
      double rel = (((got - ref).abs() - slack).clamp_min(0).max() / ref.abs().max()).item<double>();
      EXPECT_LE(rel, 1e-5) << "bits " << bits << " N " << N << " K " << K;
      EXPECT_TRUE(at::equal(q.dense_weight(), fake_quantize(w, bits, g)));
    }
  }
  auto w = at::randn({4, 32});
  EXPECT_TRUE(at::equal(fake_quantize(w, 16, 32), w));
}

TEST(Quant, StraightThroughGradientIsIdentity) {
  auto w = at::randn({4, 32}).set_requires_grad(true);
  auto wq = fake_quantize(w.detach(), 3, 32);
  auto y = straight_through(w, wq);
  EXPECT_TRUE(at::allclose(y, wq));
  y.sum().backward();
  EXPECT_TRUE(at::equal(w.grad(), at::ones_like(w)));
}

// GPTQ's layer output error on the calibration inputs is below RTN's at 2, 3 and 4 bits.
TEST(Quant, GptqBeatsRtnOnCalibrationData) {
  at::manual_seed(1);
  const int64_t N = 48, K = 192, n = 512;
  // Correlated inputs (as real activations are): x = z A with a few dominant directions.
  auto A = at::randn({K, K}) * at::linspace(2.0, 0.05, K).unsqueeze(1);
  auto X = at::matmul(at::randn({n, K}), A);
  auto W = at::randn({N, K}) * 0.1;
  HessianAccumulator acc(K);
  acc.add(X.narrow(0, 0, 200));
  acc.add(X.narrow(0, 200, n - 200));
  auto H = acc.hessian();
  EXPECT_TRUE(at::allclose(H, 2.0 / n * at::matmul(X.t().to(at::kDouble), X.to(at::kDouble)), 1e-8, 1e-6));
  auto Y = at::matmul(X, W.t());
  for (int bits : {2, 3, 4}) {
    auto rtn = dequantize(quantize_rtn(W, bits, 64));
    auto gptq = dequantize(gptq_quantize(W, H, bits, 64));
    double e_rtn = (at::matmul(X, rtn.t()) - Y).pow(2).mean().item<double>();
    double e_gptq = (at::matmul(X, gptq.t()) - Y).pow(2).mean().item<double>();
    EXPECT_LT(e_gptq, e_rtn) << "bits " << bits;
    RecordProperty("bits" + std::to_string(bits) + "_gptq_over_rtn", std::to_string(e_gptq / e_rtn));
  }
}

TEST(Quant, BadArguments) {
  EXPECT_THROW(quantize_rtn(at::randn({4, 32}), 5, 32), Error);
  EXPECT_THROW(quantize_rtn(at::randn({4}), 4, 32), Error);
  EXPECT_THROW(gptq_quantize(at::randn({4, 32}), at::eye(16, at::kDouble), 4, 32), Error);
  QuantizedLinear q(quantize_rtn(at::randn({4, 32}), 4, 32));
  EXPECT_THROW(q.forward(at::randn({2, 31})), Error);
}

namespace {

// Deterministic weights (no torch RNG, so the pinned hashes below do not depend on libtorch's
// generator) that reach every branch of the RTN rules: mixed signs, one-sided and narrow ranges
// far from 0 (quantize_rtn_minmax's fallback), constant groups, -0.0, exact .5 ties, scales that
// underflow or overflow fp16. Row n gets kind n % 8; K = 200 leaves a partial last group.
at::Tensor pinned_weights(int64_t N, int64_t K) {
  auto w = at::empty({N, K}, at::kFloat);
  float* p = w.data_ptr<float>();
  uint64_t s = 0x9e3779b97f4a7c15ull;
  auto u = [&] {  // xorshift64* -> [0, 1)
    s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
    return static_cast<float>((s * 0x2545f4914f6cdd1dull) >> 40) / static_cast<float>(1 << 24);
  };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const float r = u() * 2.f - 1.f;
      float v = 0;
      switch (n % 8) {
        case 0: v = r; break;
        case 1: v = 5.f + 0.01f * r; break;   // narrow, far above 0
        case 2: v = -3.f + 0.5f * r; break;   // all negative
        case 3: v = (k % 3 == 0) ? -0.f : (k / 64) * 0.25f; break;  // -0.0 and constant groups
        case 4: v = 1e-9f * r; break;         // scale underflows fp16
        case 5: v = 1e6f * r; break;          // scale overflows fp16
        case 6: v = std::nearbyint(r * 14.f) * 0.5f; break;  // .5 steps: rounding ties
        default: v = (k % 7 == 0 ? 40.f : 1.f) * r; break;  // outliers
      }
      p[n * K + k] = v;
    }
  return w;
}

uint64_t fnv1a(uint64_t h, const void* data, size_t bytes) {
  const auto* b = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

// Hash of the packed codes, scales and zeros of `quantize` over bits x groups.
uint64_t pinned_hash(const std::function<kernels::QMatrix(const at::Tensor&, int, int)>& quantize) {
  const at::Tensor w = pinned_weights(16, 200);
  uint64_t h = 0xcbf29ce484222325ull;
  for (int bits : {2, 3, 4, 8})
    for (int group : {32, 64, 128}) {
      const kernels::QMatrix q = quantize(w, bits, group);
      h = fnv1a(h, q.codes.data(), q.codes.size());
      h = fnv1a(h, q.scales.data(), q.scales.size() * sizeof(uint16_t));
      h = fnv1a(h, q.zeros.data(), q.zeros.size() * sizeof(uint16_t));
    }
  return h;
}

}  // namespace

// The RTN producers give bit-for-bit the packed matrices they gave when these hashes were recorded
// (before they were rewritten as rules over one group loop, kernels::quantize_groups). A change here changes every
// exported model: update the hashes only for a deliberate change of a rule.
TEST(Quant, RtnOutputsArePinned) {
  EXPECT_EQ(pinned_hash(quantize_rtn), 3437333848903744248ull) << "quantize_rtn";
  EXPECT_EQ(pinned_hash([](const at::Tensor& w, int bits, int group) {
              return kernels::quantize_rtn(w.data_ptr<float>(), static_cast<int>(w.size(0)),
                                           static_cast<int>(w.size(1)), bits, group);
            }),
            3437333848903744248ull)
      << "kernels::quantize_rtn";
  EXPECT_EQ(pinned_hash(quantize_rtn_fp16_offsets), 129602595730995570ull) << "quantize_rtn_fp16_offsets";
  EXPECT_EQ(pinned_hash(quantize_rtn_minmax), 8052739411352813325ull) << "quantize_rtn_minmax";
}
