// The forward plan (model/plan.h) and its readers agree: the LUT's predict_ms, the supernet's
// expected latency, the runtime engine's bytes and the size report all follow one plan.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <random>

#include "llmc/export/format.h"
#include "llmc/latency/lut.h"
#include "llmc/model/plan.h"
#include "llmc/nas/supernet.h"
#include "llmc/quant/quant.h"
#include "llmc/runtime/engine.h"
#include "synthetic.h"

using namespace llmc;

namespace {

SearchSpace plan_space() {
  return parse_search_space(
      R"({"kv_group_fractions":[1.0,0.5],"mlp_width_fractions":[1.0,0.5],"bits":[4,8,16],"group_size":32,
          "width_multiple":16})",
      "plan_space");
}

const LatencyTable& plan_lut() {
  static const LatencyTable t = [] {
    return LatencyTable::parse(build_lut_json(test::tiny_config(), plan_space(), test::fast_lut_options()), "plan.lut");
  }();
  return t;
}

// Sets every architecture logit so that softmax is one-hot on idx (exp(-1e4) is 0 in float32).
void set_one_hot(Supernet& sn, const std::vector<ChoiceIndex>& idx) {
  at::NoGradGuard ng;
  auto params = sn.arch_parameters();  // per layer: kv, mlp, bits q..down (those with > 1 option)
  size_t p = 0;
  auto put = [&](int64_t n, int64_t k) {
    if (n <= 1) return;
    auto& a = params.at(p++);
    a.fill_(-1e4);
    a[k].fill_(0.0);
  };
  for (size_t l = 0; l < idx.size(); ++l) {
    const auto& ch = sn.choices()[l];
    put(static_cast<int64_t>(ch.kv.size()), idx[l].kv);
    put(static_cast<int64_t>(ch.mlp.size()), idx[l].mlp);
    for (int j = 0; j < kNumLinears; ++j) put(static_cast<int64_t>(ch.bits.size()), idx[l].bits[j]);
  }
  ASSERT_EQ(p, params.size());
}

}  // namespace

TEST(Plan, StacksEqualBitsOnly) {
  const ModelConfig c = test::tiny_config();
  Arch a = uniform_arch(c, 4, 32);
  ForwardPlan p = forward_plan(a);
  ASSERT_EQ(p.layers[0].attention.size(), 2u);  // q|k|v, o
  EXPECT_EQ(p.layers[0].attention[0].kinds, (std::vector<int>{kQ, kK, kV}));
  EXPECT_EQ(p.layers[0].attention[0].N, (c.num_heads + 2 * c.num_kv_heads) * c.head_dim);
  ASSERT_EQ(p.layers[0].mlp.size(), 2u);  // gate|up, down
  EXPECT_EQ(p.layers[0].mlp[0].N, 2 * c.intermediate_size);
  a.layers[0].bits[kK] = 8;
  a.layers[0].bits[kUp] = 16;
  p = forward_plan(a);
  EXPECT_EQ(p.layers[0].attention.size(), 4u);  // q, k, v, o
  EXPECT_EQ(p.layers[0].mlp.size(), 3u);        // gate, up, down
  EXPECT_EQ(p.layers[1].attention.size(), 2u);
  // Dropped sub-blocks have no calls and no bytes.
  a.layers[1].kv_heads = 0;
  a.layers[1].mlp_channels = 0;
  for (int& b : a.layers[1].bits) b = 16;
  p = forward_plan(a);
  EXPECT_TRUE(p.layers[1].attention.empty());
  EXPECT_TRUE(p.layers[1].mlp.empty());
}

// The supernet's expected latency of a one-hot architecture is predict_ms of that architecture:
// with stacked calls (q, k, v at equal bits; gate, up at equal bits) and without.
TEST(Plan, SupernetOneHotLatencyEqualsPredictMs) {
  const LatencyTable& lut = plan_lut();
  const ModelConfig c = test::tiny_config();
  auto model = test::random_llama(c, 7);
  const SearchSpace space = plan_space();
  for (int64_t M : {int64_t{1}, int64_t{4}}) {
    const LatencyLookup look = lookup_from(lut, M);
    Supernet sn(*model, make_choices(c, space, true, true), look, space.group_size, 0, 1, /*install=*/false);
    std::mt19937_64 rng(M);
    int stacked_qkv = 0, split_qkv = 0, stacked_gu = 0, split_gu = 0;
    for (int trial = 0; trial < 40; ++trial) {
      std::vector<ChoiceIndex> idx(c.num_layers);
      for (size_t l = 0; l < idx.size(); ++l) {
        const auto& ch = sn.choices()[l];
        idx[l].kv = static_cast<int64_t>(rng() % ch.kv.size());
        idx[l].mlp = static_cast<int64_t>(rng() % ch.mlp.size());
        // Half the trials share bits within the stacks, so both cases are covered.
        const int64_t shared = static_cast<int64_t>(rng() % ch.bits.size());
        for (int j = 0; j < kNumLinears; ++j)
          idx[l].bits[j] = trial % 2 ? shared : static_cast<int64_t>(rng() % ch.bits.size());
        const auto& b = idx[l].bits;
        (b[kQ] == b[kK] && b[kQ] == b[kV] ? stacked_qkv : split_qkv)++;
        (b[kGate] == b[kUp] ? stacked_gu : split_gu)++;
      }
      Arch a = arch_of_choices(idx, sn.choices(), c);
      a.group_size = space.group_size;
      const double want = lut.predict_ms(a, M);
      // The supernet holds its tables in float32: each entry within 6e-8 relative.
      EXPECT_NEAR(sn.latency_ms(idx), want, 1e-6 * want) << "trial " << trial << " M " << M;
      set_one_hot(sn, idx);
      const double expected = sn.expected_latency_ms().item<double>();
      EXPECT_NEAR(expected, want, 1e-5 * want) << "trial " << trial << " M " << M;  // float32 sums
    }
    EXPECT_GT(stacked_qkv, 0);
    EXPECT_GT(split_qkv, 0);
    EXPECT_GT(stacked_gu, 0);
    EXPECT_GT(split_gu, 0);
  }
}

// The bytes every reader reports come from the same plan: the LUT's weight accounting, the size
// report of a quantized model and the runtime engine's bytes per decoded token.
TEST(Plan, BytesAgreeAcrossReaders) {
  const ModelConfig c = test::tiny_config();
  auto model = test::random_llama(c, 3);
  Arch a = uniform_arch(c, 4, 32);
  a.layers[0].bits[kV] = 8;
  a.layers[1].bits[kDown] = 16;
  for (int64_t l = 0; l < c.num_layers; ++l)
    for (int k = 0; k < kNumLinears; ++k) {
      auto& lin = layer_linear(model->weights().layers[l], k);
      const int b = a.layers[l].bits[k];
      if (b < 16)
        lin = std::make_shared<QuantizedLinear>(
            quantize_rtn(lin->dense_weight(), b, effective_group(static_cast<int>(lin->in_features()), 32)));
    }
  const ForwardPlan plan = forward_plan(a);
  EXPECT_EQ(arch_weight_bytes(a), plan.weight_bytes());
  EXPECT_EQ(arch_linear_bytes(a), plan.linear_bytes());
  const SizeReport r = size_report(*model);
  EXPECT_EQ(r.linear_bytes, plan.linear_bytes());
  EXPECT_EQ(r.total(), plan.weight_bytes());
  // What a decoded token reads: each linear once, the dense fp32 lm_head, one embedding row, norms.
  auto rt = make_runtime(*model, 1);
  const int64_t H = c.hidden_size;
  EXPECT_EQ(rt->engine().bytes_per_token(),
            plan.linear_bytes() + c.vocab_size * H * 4 + H * 4 + (2 * c.num_layers + 1) * H * 4);
  EXPECT_EQ(rt->engine().bytes_per_token(), plan.bytes_per_token());
}
