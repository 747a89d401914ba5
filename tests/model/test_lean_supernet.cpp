// The memory-lean supernet (docs/lean-supernet.md) against the stacked reference it replaced.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <random>

#include "llmc/latency/space.h"
#include "llmc/model/linear.h"
#include "llmc/nas/supernet.h"
#include "llmc/quant/fake_mix.h"
#include "llmc/quant/quant.h"
#include "synthetic.h"

using namespace llmc;

namespace {

ModelConfig wide_tiny() {
  auto c = test::tiny_config();
  c.hidden_size = 64;
  c.intermediate_size = 96;
  return c;
}

SearchSpace space_with_group(int group) {
  return parse_search_space(
      fmt::format(R"({{"kv_group_fractions":[1.0,0.5],"mlp_width_fractions":[1.0,0.75,0.5],"bits":[2,3,4,8,16],
          "group_size":{},"width_multiple":16}})",
                  group),
      "space");
}

// Every linear of the model rounded to bfloat16 values (the lean store keeps those as bfloat16).
void round_to_bf16(Llama& m) {
  for (auto& L : m.weights().layers)
    for (auto* lin : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) {
      auto d = std::dynamic_pointer_cast<DenseLinear>(*lin);
      ASSERT_TRUE(d);
      d->weight() = d->weight().to(at::kBFloat16).to(at::kFloat);
    }
}

float max_abs(const at::Tensor& t) { return t.abs().max().item<float>(); }

}  // namespace

// fake_mix with one option at coefficient 1 is fake_quantize, bit for bit; its dots are <dW, Q>.
TEST(FakeMix, OneOptionIsFakeQuantizeBitExactly) {
  at::manual_seed(5);
  for (int64_t K : {1, 16, 31, 32, 45, 64, 100, 128, 300})
    for (int group : {32, 64, 128})
      for (bool bf16 : {false, true}) {
        const int64_t N = 6;
        auto w = at::randn({N, K}) * 0.05;
        w[1] = at::rand({K}) + 0.5;  // one-signed rows: zero point at a range end
        w[2] = -at::rand({K});
        w[3].zero_();               // all-zero row: scale 1
        w[4] *= 1e-9;               // scale below fp16's smallest normal
        if (bf16) w = w.to(at::kBFloat16).to(at::kFloat);
        auto stored = bf16 ? w.to(at::kBFloat16).contiguous() : w.contiguous();
        auto dW = at::randn({N, K});
        for (int bits : {2, 3, 4, 8}) {
          FakeMixSlice s;
          s.w = stored.data_ptr();
          s.bf16 = bf16;
          s.ldw = K;
          s.N = N;
          s.K = K;
          s.group = group;
          s.nq = 1;
          s.bits[0] = bits;
          s.coef[0] = 1.f;
          auto out = at::zeros({N, K});
          std::vector<double> dots(2 * K, 0.0);
          fake_mix(s, out.data_ptr<float>(), K, dW.data_ptr<float>(), K, dots.data());
          const auto ref = fake_quantize(w, bits, group);
          EXPECT_TRUE(at::equal(out, ref)) << "K " << K << " group " << group << " bits " << bits << " bf16 " << bf16
                                           << " max diff " << max_abs(out - ref);
          auto want = (dW * ref).sum(0).to(at::kDouble), want16 = (dW * w).sum(0).to(at::kDouble);
          auto got = at::tensor(dots, at::kDouble).view({2, K});
          EXPECT_LE(max_abs((got[0] - want).to(at::kFloat)), 1e-5 * std::max(1.f, max_abs(want.to(at::kFloat))));
          EXPECT_LE(max_abs((got[1] - want16).to(at::kFloat)), 1e-5 * std::max(1.f, max_abs(want16.to(at::kFloat))));
        }
      }
}

// The lean supernet computes what the stacked one does: equal logits at one-hot choices, and within
// float32 rounding (summation order) for soft and straight-through samples, gradients included.
TEST(LeanSupernet, MatchesStackedForwardAndGradients) {
  const auto cfg = wide_tiny();
  for (int group : {32, 128})
    for (bool bf16 : {false, true}) {
      SCOPED_TRACE(fmt::format("group {} bf16 {}", group, bf16));
      auto lean_model = test::random_llama(cfg, 4), stacked_model = test::random_llama(cfg, 4);
      if (bf16) {
        round_to_bf16(*lean_model);
        round_to_bf16(*stacked_model);
      }
      const auto ch = make_choices(cfg, space_with_group(group), true, true);
      Supernet lean(*lean_model, ch, test::monotone_lookup(), group, 2, 0, true, SupernetStore::Lean);
      Supernet stacked(*stacked_model, ch, test::monotone_lookup(), group, 2, 0, true, SupernetStore::Stacked);
      // Each weight once: float32, or bfloat16 when the values are bfloat16's.
      int64_t params = 0;
      for (const auto& L : stacked_model->weights().layers)
        for (const auto* lin : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down})
          params += (*lin)->in_features() * (*lin)->out_features();
      EXPECT_EQ(lean.weight_bytes(), params * (bf16 ? 2 : 4));
      EXPECT_GT(stacked.weight_bytes(), 5 * params * 4);

      auto x = at::tensor(std::vector<int64_t>{1, 7, 3, 9, 22, 41, 5, 8, 30, 2, 17, 11}, at::kLong).view({2, 6});
      std::mt19937_64 rng_a(9), rng_b(9), pick(3);
      for (int trial = 0; trial < 6; ++trial) {
        SCOPED_TRACE(fmt::format("trial {}", trial));
        // Random logits, then a soft (trials 0-2) or straight-through hard sample (3-4), or one-hot (5).
        {
          at::NoGradGuard ng;
          auto pl = lean.arch_parameters(), ps = stacked.arch_parameters();
          ASSERT_EQ(pl.size(), ps.size());
          for (size_t i = 0; i < pl.size(); ++i) {
            auto r = at::randn(pl[i].sizes());
            pl[i].copy_(r);
            ps[i].copy_(r);
          }
        }
        if (trial < 5) {
          lean.sample(0.7, trial >= 3, rng_a);
          stacked.sample(0.7, trial >= 3, rng_b);
        } else {
          std::vector<ChoiceIndex> idx;
          for (const auto& c : ch) {
            ChoiceIndex i;
            i.kv = pick() % c.kv.size();
            i.mlp = pick() % c.mlp.size();
            for (auto& b : i.bits) b = pick() % c.bits.size();
            idx.push_back(i);
          }
          lean.set_fixed(idx);
          stacked.set_fixed(idx);
        }
        auto ya = lean_model->forward(x), yb = stacked_model->forward(x);
        const float scale = max_abs(yb);
        if (trial == 5) {
          EXPECT_TRUE(at::equal(ya, yb)) << "one-hot logits differ by " << max_abs(ya - yb);
          at::NoGradGuard ng;
          EXPECT_TRUE(at::equal(lean_model->forward(x), stacked_model->forward(x)));
        }
        EXPECT_LE(max_abs(ya - yb), 2e-6f * scale);
        // A loss that reaches every logit, and its gradients.
        auto loss = [&](const at::Tensor& y) { return (y * at::cos(y)).mean() + y.pow(2).mean(); };
        auto pa = lean.arch_parameters(), pb = stacked.arch_parameters();
        auto wa = lean.weight_parameters(), wb = stacked.weight_parameters();
        std::vector<at::Tensor> all_a(pa), all_b(pb);
        all_a.insert(all_a.end(), wa.begin(), wa.end());
        all_b.insert(all_b.end(), wb.begin(), wb.end());
        loss(ya).backward();
        loss(yb).backward();
        // float32 sums over N*K products in another order: the error scales with the products, so
        // with the largest gradient entry (a gradient that cancels to ~0 keeps the others' error).
        float gscale = 1e-3f;
        for (const auto& p : all_b)
          if (p.grad().defined()) gscale = std::max(gscale, max_abs(p.grad()));
        for (size_t i = 0; i < all_a.size(); ++i) {
          const bool has_a = all_a[i].grad().defined(), has_b = all_b[i].grad().defined();
          ASSERT_EQ(has_a, has_b) << "parameter " << i;
          if (!has_a) continue;
          const auto ga = all_a[i].grad(), gb = all_b[i].grad();
          EXPECT_LE(max_abs(ga - gb), 1e-5f * gscale) << "parameter " << i << ", largest gradient " << gscale;
          all_a[i].mutable_grad() = at::Tensor();
          all_b[i].mutable_grad() = at::Tensor();
        }
      }
    }
}

TEST(LeanSupernet, StoreFromEnvironment) {
  unsetenv("LLMC_SUPERNET_STORE");
  EXPECT_EQ(supernet_store_from_env(), SupernetStore::Lean);
  setenv("LLMC_SUPERNET_STORE", "stacked", 1);
  EXPECT_EQ(supernet_store_from_env(), SupernetStore::Stacked);
  setenv("LLMC_SUPERNET_STORE", "fast", 1);
  EXPECT_NE(test::error_of([] { supernet_store_from_env(); }).find("LLMC_SUPERNET_STORE=fast"), std::string::npos);
  unsetenv("LLMC_SUPERNET_STORE");
}
