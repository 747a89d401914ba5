#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "llmc/model/attention.h"

using namespace llmc;

namespace {

// Random (B, 1, 1, T, S) bias: causal in slot order after `past` slots, some keys masked per row
// (left padding), every query keeps at least one visible key.
at::Tensor random_bias(int64_t B, int64_t T, int64_t S) {
  const int64_t past = S - T;
  auto q_slot = at::arange(past, S, at::kLong).view({T, 1});
  auto k_slot = at::arange(S, at::kLong).view({1, S});
  auto key_mask = at::rand({B, S}) > 0.2;
  key_mask.select(1, 0).fill_(true);
  auto allowed = (k_slot <= q_slot).view({1, 1, 1, T, S}) & key_mask.view({B, 1, 1, 1, S});
  return at::zeros(allowed.sizes(), at::kFloat).masked_fill(allowed.logical_not(), -1e30f);
}

}  // namespace

// The blocked inference path must give the reference's numbers: float32 within 1e-5 (only the
// summation order of the matmuls differs), bf16 within 2e-2 of the output's scale max(1, max |ref|)
// (bf16 rounding of probabilities and outputs: one bf16 ulp of a value near 3 is 0.0156, and an
// absolute 2e-2 failed on an AMD EPYC at 0.0234 for outputs of that size).
TEST(Attention, BlockedEqualsReference) {
  at::manual_seed(3);
  struct Case {
    int64_t B, nkv, g, T, S;
  };
  // S = 3000 with 9 heads gives blocks of 19 queries: several blocks and a partial last one.
  for (const Case& c : {Case{1, 1, 1, 1, 1}, Case{3, 2, 3, 5, 9}, Case{2, 3, 3, 37, 3000}, Case{4, 1, 4, 1, 700}}) {
    for (auto dt : {at::kFloat, at::kBFloat16}) {
      const int64_t hd = 16, max_len = c.S + 5;
      auto q = at::randn({c.B, c.nkv, c.g, c.T, hd}).to(dt);
      // K/V as views of a larger cache, like the model's.
      auto kc = at::randn({c.B, c.nkv, max_len, hd}).to(dt), vc = at::randn({c.B, c.nkv, max_len, hd}).to(dt);
      auto k = kc.narrow(2, 0, c.S), v = vc.narrow(2, 0, c.S);
      auto bias = random_bias(c.B, c.T, c.S);
      auto ref = attention_reference(q, k, v, bias, 0.25);
      auto got = attention_blocked(q, k, v, bias, 0.25);
      ASSERT_EQ(got.sizes(), ref.sizes());
      ASSERT_EQ(got.scalar_type(), dt);
      const double scale = std::max(1.0, ref.to(at::kFloat).abs().max().item<double>());
      const double bound = dt == at::kFloat ? 1e-5 : 2e-2 * scale;
      const double err = (got.to(at::kFloat) - ref.to(at::kFloat)).abs().max().item<double>();
      EXPECT_LE(err, bound) << "B " << c.B << " T " << c.T << " S " << c.S;
      // A tiny block budget forces the per-row, per-block loop on every case (one query per block).
      auto tiny = attention_blocked(q, k, v, bias, 0.25, 1);
      const double err_tiny = (tiny.to(at::kFloat) - ref.to(at::kFloat)).abs().max().item<double>();
      EXPECT_LE(err_tiny, bound) << "block 1: B " << c.B << " T " << c.T << " S " << c.S;
    }
  }
}

// No queries (an empty step) gives an empty result, not a division by zero.
TEST(Attention, EmptyQueries) {
  auto q = at::randn({2, 3, 3, 0, 16});
  auto k = at::randn({2, 3, 0, 16}), v = at::randn({2, 3, 0, 16});
  auto bias = at::zeros({2, 1, 1, 0, 0});
  auto got = attention_blocked(q, k, v, bias, 0.25);
  EXPECT_EQ(got.sizes(), q.sizes());
  EXPECT_EQ(attention_reference(q, k, v, bias, 0.25).sizes(), q.sizes());
}

// attention() keeps the autograd graph when an input needs gradients and otherwise takes the
// blocked path; a bias shared by all batch rows (batch dimension 1) broadcasts in both.
TEST(Attention, DispatchAndSharedBias) {
  at::manual_seed(5);
  const int64_t B = 3, nkv = 2, g = 2, T = 6, hd = 8;
  auto q = at::randn({B, nkv, g, T, hd}), k = at::randn({B, nkv, T, hd}), v = at::randn({B, nkv, T, hd});
  auto bias = at::zeros({T, T}).masked_fill(at::ones({T, T}, at::kBool).triu(1), -1e30f).view({1, 1, 1, T, T});
  auto ref = attention_reference(q, k, v, bias, 0.5);
  auto blocked = attention_blocked(q, k, v, bias, 0.5, 1);
  EXPECT_LE((blocked - ref).abs().max().item<double>(), 1e-5);
  EXPECT_FALSE(attention(q, k, v, bias, 0.5).requires_grad());

  auto qg = q.clone().requires_grad_(true);
  auto out = attention(qg, k, v, bias, 0.5);
  ASSERT_TRUE(out.requires_grad());
  out.sum().backward();
  EXPECT_TRUE(qg.grad().defined());
  EXPECT_LE((out.detach() - ref).abs().max().item<double>(), 1e-6);
}
