// Per-choice sensitivity (nas/sensitivity.h): the KL of each option applied alone, and the initial
// architecture logits made from it.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "llmc/finetune/train.h"
#include "llmc/nas/sensitivity.h"
#include "llmc/nas/supernet.h"
#include "synthetic.h"

using namespace llmc;

namespace {

ModelConfig small() {
  auto c = test::tiny_config();
  c.hidden_size = 64;
  c.intermediate_size = 96;
  return c;
}

// KV groups {1, 0.5}, bits {2, 4, 8, 16}, MLP widths as given.
SearchSpace space_with_mlp(const std::string& mlp_fractions) {
  return parse_search_space(R"({"kv_group_fractions":[1.0,0.5],"mlp_width_fractions":)" + mlp_fractions +
                                R"(,"bits":[2,4,8,16],"group_size":32,"width_multiple":16})",
                            "space");
}

}  // namespace

TEST(Sensitivity, KlOfEachOptionAlone) {
  const auto cfg = small();
  auto model = test::random_llama(cfg, 5);
  auto x = at::tensor(std::vector<int64_t>{1, 7, 3, 9, 22, 41, 5, 8, 13, 2, 30, 17}, at::kLong).unsqueeze(0);
  at::Tensor teacher;
  {
    at::NoGradGuard ng;
    teacher = model->forward(x);
  }
  const SearchSpace space = space_with_mlp("[1.0,0.5]");
  const auto ch = make_choices(cfg, space, true, true);
  Supernet net(*model, ch, test::monotone_lookup(), 32, 0, 0);
  const auto kl = choice_kl(net, *model, x, teacher);
  ASSERT_EQ(kl.size(), ch.size());
  for (size_t l = 0; l < ch.size(); ++l) {
    EXPECT_EQ(kl[l].kv[0], 0.0);   // reference: full width
    EXPECT_EQ(kl[l].mlp[0], 0.0);
    EXPECT_GT(kl[l].kv[1], 0.0);
    EXPECT_GT(kl[l].mlp[1], 0.0);
    for (int j = 0; j < kNumLinears; ++j) {
      EXPECT_EQ(kl[l].bits[j][3], 0.0);  // reference: 16 bits
      // Fewer bits, more damage (random weights: 2-bit error is far larger than 8-bit's).
      EXPECT_GT(kl[l].bits[j][0], kl[l].bits[j][2]) << "layer " << l << " linear " << j;
      EXPECT_GT(kl[l].bits[j][2], 0.0);
    }
  }
  // Each value is the option it names: recompute two of them directly.
  auto idx = net.widest();
  idx[1].bits[kDown] = 0;
  net.set_fixed(idx);
  {
    at::NoGradGuard ng;
    EXPECT_NEAR(kl_to_teacher(model->forward(x), teacher).item<double>(), kl[1].bits[kDown][0], 1e-9);
  }
  idx = net.widest();
  idx[0].mlp = 1;
  net.set_fixed(idx);
  {
    at::NoGradGuard ng;
    EXPECT_NEAR(kl_to_teacher(model->forward(x), teacher).item<double>(), kl[0].mlp[1], 1e-9);
  }
}

TEST(Sensitivity, InitialLogitsAndSetAlphas) {
  std::vector<LayerChoices> ch(2);
  for (auto& c : ch) {
    c.kv = {2, 1};
    c.mlp = {96};
    c.bits = {2, 4, 8, 16};
  }
  std::vector<ChoiceLogProbs> kl(2);
  for (size_t l = 0; l < 2; ++l) {
    kl[l].kv = {0.0, 0.5};
    kl[l].mlp = {0.0};
    for (int j = 0; j < kNumLinears; ++j) kl[l].bits[j] = {1.0, 0.1 * (1 + j + 7 * l), 0.01, 0.0};
  }
  // T = mean KL of the middle option (index 1: 4 bits) over the 14 linears.
  double T = 0;
  for (size_t l = 0; l < 2; ++l)
    for (int j = 0; j < kNumLinears; ++j) T += kl[l].bits[j][1] / 14.0;
  const auto a = alphas_from_kl(kl, ch, 2.0);
  EXPECT_NEAR(a[1].kv[1], -0.5 / (2.0 * T), 1e-12);
  EXPECT_NEAR(a[0].bits[kUp][0], -1.0 / (2.0 * T), 1e-12);
  EXPECT_EQ(a[0].bits[kUp][3], 0.0);
  EXPECT_THROW(alphas_from_kl(kl, ch, 0.0), Error);

  const auto cfg = small();
  auto model = test::random_llama(cfg, 6);
  const SearchSpace space = space_with_mlp("[1.0]");
  const auto mch = make_choices(cfg, space, true, true);
  Supernet net(*model, mch, test::monotone_lookup(), 32, 0, 0);
  net.set_alphas(a);
  const auto lp = net.log_probs();
  auto lse = [](const std::vector<double>& v) {
    double m = -1e300, s = 0;
    for (double x : v) m = std::max(m, x);
    for (double x : v) s += std::exp(x - m);
    return m + std::log(s);
  };
  for (size_t l = 0; l < 2; ++l) {
    for (size_t i = 0; i < 2; ++i) EXPECT_NEAR(lp[l].kv[i], a[l].kv[i] - lse(a[l].kv), 1e-5);
    for (int j = 0; j < kNumLinears; ++j)
      for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(lp[l].bits[j][i], a[l].bits[j][i] - lse(a[l].bits[j]), 1e-5);
  }
  std::vector<ChoiceLogProbs> wrong = a;
  wrong[0].bits[kQ].pop_back();
  EXPECT_THROW(net.set_alphas(wrong), Error);
}
