// QA-LoRA adapters: attaching is the identity, merging into the fp16 zero points (and dense LoRA
// into the weights) leaves the logits unchanged (1e-4 relative), and fine-tuning lowers the loss.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "llmc_kernels/qgemm.h"
#include "llmc/export/discretize.h"
#include "llmc/export/quantize_model.h"
#include "llmc/finetune/qalora.h"
#include "llmc/quant/quant.h"
#include "synthetic.h"

using namespace llmc;

namespace {

double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

struct Subnet {
  std::unique_ptr<Llama> original, sub;
};

Subnet quantized_subnet(uint64_t seed) {
  auto c = test::tiny_config();
  c.intermediate_size = 96;  // 3 groups of 32 in down_proj
  Subnet s;
  s.original = test::random_llama(c, seed);
  Arch a = uniform_arch(c, 4, 32);
  a.layers[0].bits = {4, 3, 8, 2, 16, 4, 3};
  a.layers[1].mlp_channels = 64;
  s.sub = discretize(*s.original, a);
  QuantizeOptions qo;
  qo.group_size = 32;
  quantize_model(*s.sub, a, qo, {});
  return s;
}

}  // namespace

TEST(QALoRA, AttachIsIdentityAndMergeIsExact) {
  auto s = quantized_subnet(21);
  at::manual_seed(1);
  auto tokens = at::randint(0, s.sub->config().vocab_size, {2, 12}, at::kLong);
  at::NoGradGuard ng;
  auto base = s.sub->forward(tokens);
  LoRAAdapters ad(*s.sub, 4, 0, 3);
  // The packed GEMM is exact up to fp32 rounding, except where it rounds x to int16 (qgemm.h: the
  // AVX2 paths, a relative perturbation of x below 1.6e-5 of each group's largest |x|), which
  // reaches the logits of this 2-layer model at ~4e-5.
  const bool int16_x = kernels::qgemm_rounds_x_to_int16();
  EXPECT_LE(rel_diff(s.sub->forward(tokens), base), int16_x ? 1e-4 : 1e-5);  // B = 0 (only at::linear vs qgemm order)
  ad.randomize(0.05, 4);
  auto unmerged = s.sub->forward(tokens);
  EXPECT_GT(rel_diff(unmerged, base), 1e-3) << "the adapters should change the model";
  MergeStats st = ad.merge();
  EXPECT_EQ(st.quantized, 2 * 7 - 1);
  EXPECT_EQ(st.dense, 1);
  // Merged layers are packed linears again (with new zero points).
  auto* q = dynamic_cast<QuantizedLinear*>(s.sub->weights().layers[1].q.get());
  ASSERT_NE(q, nullptr);
  auto merged = s.sub->forward(tokens);
  const double e = rel_diff(merged, unmerged);
  EXPECT_LE(e, int16_x ? 3e-4 : 1e-4);
  RecordProperty("merge_rel_diff", fmt::format("{:.3e}", e));
  RecordProperty("max_zero_rounding_steps", fmt::format("{:.3e}", st.max_zero_rounding));
}

TEST(QALoRA, FinetuneLowersLossAndMergesExactly) {
  for (bool distill : {false, true}) {
    auto s = quantized_subnet(22);
    at::manual_seed(2);
    // A learnable toy language: each sequence repeats a short random pattern.
    auto pat = at::randint(3, s.sub->config().vocab_size, {8, 4}, at::kLong);
    auto tokens = pat.repeat({1, 6});
    FinetuneOptions o;
    o.steps = 30;
    o.rank = 4;
    o.lr = 1e-2;
    o.distill = distill;
    o.log_every = 100;
    auto r = finetune_lora(*s.sub, s.original.get(), tokens, o);
    ASSERT_EQ(r.losses.size(), 30u);
    double first = 0, last = 0;
    for (int i = 0; i < 5; ++i) {
      first += r.losses[i];
      last += r.losses[25 + i];
    }
    EXPECT_LT(last, first) << (distill ? "distill" : "cross-entropy");
    EXPECT_LE(r.merge_rel_diff, 1e-4);
    for (int k = 0; k < kNumLinears; ++k) {  // merged: packed or dense linears, no adapters left
      auto* lin = layer_linear(s.sub->weights().layers[1], k).get();
      EXPECT_TRUE(dynamic_cast<QuantizedLinear*>(lin) || dynamic_cast<DenseLinear*>(lin)) << k;
    }
  }
}
