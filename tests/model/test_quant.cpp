#include <ATen/ATen.h>
#include <gtest/gtest.h>

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
