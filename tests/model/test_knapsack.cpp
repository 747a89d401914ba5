// Knapsack discretization (nas/knapsack.h) against brute force on small spaces, with a latency
// predictor that stacks q|k|v and gate|up (cheaper when their bits agree), as the LUT does.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "llmc/nas/knapsack.h"

using namespace llmc;

namespace {

// Two widths per part, bits {4, 8}. Per-linear ms grow with bits and width; a stack of equal bits
// saves a fixed call overhead per part member beyond the first.
struct Toy {
  std::vector<LayerChoices> ch;
  std::vector<ChoiceLogProbs> lp;
  double ms(const std::vector<ChoiceIndex>& a) const {
    double t = 0.1;
    for (size_t l = 0; l < a.size(); ++l) {
      const double wa = a[l].kv == 0 ? 1.0 : 0.6, wm = a[l].mlp == 0 ? 1.0 : 0.55;
      auto lin = [&](int j, double w) { return (0.05 + 0.03 * (ch[l].bits[a[l].bits[j]] / 4.0)) * w + 0.02; };
      for (int j : {kQ, kK, kV, kO}) t += lin(j, wa);
      for (int j : {kGate, kUp, kDown}) t += lin(j, wm);
      if (a[l].bits[kQ] == a[l].bits[kK] && a[l].bits[kK] == a[l].bits[kV]) t -= 2 * 0.02;
      if (a[l].bits[kGate] == a[l].bits[kUp]) t -= 0.02;
      t += 0.01 * wa;  // attention itself
    }
    return t;
  }
  double log_prob(const std::vector<ChoiceIndex>& a) const {
    double s = 0;
    for (size_t l = 0; l < a.size(); ++l) {
      s += lp[l].kv[a[l].kv] + lp[l].mlp[a[l].mlp];
      for (int j = 0; j < kNumLinears; ++j) s += lp[l].bits[j][a[l].bits[j]];
    }
    return s;
  }
};

std::vector<double> log_softmax(std::vector<double> a) {
  double m = a[0];
  for (double x : a) m = std::max(m, x);
  double z = 0;
  for (double x : a) z += std::exp(x - m);
  for (double& x : a) x -= m + std::log(z);
  return a;
}

Toy random_toy(int layers, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n(0.0, 2.0);
  Toy t;
  for (int l = 0; l < layers; ++l) {
    t.ch.push_back({{4, 2}, {64, 32}, {4, 8}});
    ChoiceLogProbs p;
    p.kv = log_softmax({n(rng), n(rng)});
    p.mlp = log_softmax({n(rng), n(rng)});
    for (int j = 0; j < kNumLinears; ++j) p.bits[j] = log_softmax({n(rng), n(rng)});
    t.lp.push_back(p);
  }
  return t;
}

// Every architecture of a one-layer toy: 2 x 2 widths x 2^7 bit assignments.
std::vector<std::vector<ChoiceIndex>> all_archs() {
  std::vector<std::vector<ChoiceIndex>> out;
  for (int code = 0; code < 4 * 128; ++code) {
    ChoiceIndex c;
    c.kv = code & 1;
    c.mlp = (code >> 1) & 1;
    for (int j = 0; j < kNumLinears; ++j) c.bits[j] = (code >> (2 + j)) & 1;
    out.push_back({c});
  }
  return out;
}

}  // namespace

// One layer: exhaustive search gives the optimum; the Lagrangian plus the slack pass must find it
// in most instances and never break the target. Its worst case is bounded by local optimality
// (checked below), not by a guarantee of exactness, so the test states the rate it holds to.
TEST(Knapsack, MatchesBruteForceOnOneLayer) {
  const auto archs = all_archs();
  int exact = 0, cases = 0;
  for (uint32_t seed = 0; seed < 40; ++seed) {
    const Toy t = random_toy(1, seed);
    auto ms = [&](const std::vector<ChoiceIndex>& a) { return t.ms(a); };
    double lo = 1e9, hi = 0;
    for (const auto& a : archs) lo = std::min(lo, t.ms(a)), hi = std::max(hi, t.ms(a));
    for (double f : {0.2, 0.5, 0.8}) {
      const double target = lo + f * (hi - lo);
      double best = -1e300;
      for (const auto& a : archs)
        if (t.ms(a) <= target) best = std::max(best, t.log_prob(a));
      const KnapsackResult r = knapsack_fit(t.lp, t.ch, ms, target, archs[0]);
      ASSERT_TRUE(r.met) << "seed " << seed << " target " << target;
      EXPECT_LE(r.ms, target + 1e-12);
      EXPECT_NEAR(r.ms, t.ms(r.idx), 1e-12);
      EXPECT_NEAR(r.log_prob, t.log_prob(r.idx), 1e-9);
      EXPECT_LE(r.log_prob, best + 1e-9);
      exact += r.log_prob >= best - 1e-9;
      ++cases;
    }
  }
  EXPECT_GE(exact, cases * 9 / 10) << exact << " of " << cases << " optimal";
}

// Several layers: the result meets the target, and no single choice can move to a more likely
// option without breaking it (what the slack pass guarantees per part, checked per choice here).
TEST(Knapsack, LocallyOptimalOnSeveralLayers) {
  for (uint32_t seed = 100; seed < 110; ++seed) {
    const Toy t = random_toy(4, seed);
    auto ms = [&](const std::vector<ChoiceIndex>& a) { return t.ms(a); };
    std::vector<ChoiceIndex> start(4);  // widest, 4 bits
    std::vector<ChoiceIndex> fastest(4);
    for (auto& c : fastest) c.kv = 1, c.mlp = 1;
    const double target = 0.5 * (t.ms(fastest) + t.ms(std::vector<ChoiceIndex>(4, [] {
                                                   ChoiceIndex c;
                                                   c.bits.fill(1);
                                                   return c;
                                                 }())));
    const KnapsackResult r = knapsack_fit(t.lp, t.ch, ms, target, start);
    ASSERT_TRUE(r.met);
    for (size_t l = 0; l < 4; ++l) {
      auto try_one = [&](auto set) {
        std::vector<ChoiceIndex> a = r.idx;
        set(a[l]);
        if (t.ms(a) <= target) EXPECT_LE(t.log_prob(a), r.log_prob + 1e-9) << "seed " << seed << " layer " << l;
      };
      try_one([](ChoiceIndex& c) { c.kv ^= 1; });
      try_one([](ChoiceIndex& c) { c.mlp ^= 1; });
      for (int j = 0; j < kNumLinears; ++j) try_one([j](ChoiceIndex& c) { c.bits[j] ^= 1; });
    }
  }
}

// A target the argmax meets: the argmax (the most likely architecture) comes back unchanged.
TEST(Knapsack, KeepsArgmaxWhenItFits) {
  const Toy t = random_toy(3, 7);
  std::vector<ChoiceIndex> argmax(3);
  for (size_t l = 0; l < 3; ++l) {
    argmax[l].kv = t.lp[l].kv[1] > t.lp[l].kv[0];
    argmax[l].mlp = t.lp[l].mlp[1] > t.lp[l].mlp[0];
    for (int j = 0; j < kNumLinears; ++j) argmax[l].bits[j] = t.lp[l].bits[j][1] > t.lp[l].bits[j][0];
  }
  auto ms = [&](const std::vector<ChoiceIndex>& a) { return t.ms(a); };
  const KnapsackResult r = knapsack_fit(t.lp, t.ch, ms, t.ms(argmax) + 1e-9, std::vector<ChoiceIndex>(3));
  EXPECT_TRUE(r.met);
  EXPECT_NEAR(r.log_prob, t.log_prob(argmax), 1e-12);
}

// A target equal to the most likely architecture's own predicted latency (as a sweep's top target is
// uniform 8-bit's LUT latency) keeps it: the knapsack's running total (a start plus per-part
// differences) rounds differently from the prediction, so the comparisons allow 1e-12 relative.
// (On SmolLM2's LUT that rounding excluded uniform 8-bit at exactly its latency; these toys do not
// hit it, so this checks the property, and the SmolLM2 case was checked with `search`.)
TEST(Knapsack, KeepsArgmaxAtExactlyItsLatency) {
  int kept = 0;
  for (uint32_t seed = 0; seed < 40; ++seed) {
    const Toy t = random_toy(30, 100 + seed);
    std::vector<ChoiceIndex> argmax(30), start(30);
    for (size_t l = 0; l < 30; ++l) {
      argmax[l].kv = t.lp[l].kv[1] > t.lp[l].kv[0];
      argmax[l].mlp = t.lp[l].mlp[1] > t.lp[l].mlp[0];
      for (int j = 0; j < kNumLinears; ++j) argmax[l].bits[j] = t.lp[l].bits[j][1] > t.lp[l].bits[j][0];
      start[l] = {1, 1, {0, 0, 0, 0, 0, 0, 0}};  // the fastest: every part's difference is non-zero
    }
    // Latencies that are not short binary fractions, on a large fixed cost (as a model's lm_head and
    // embedding are), so the per-part differences do not add up exactly.
    auto ms = [&](const std::vector<ChoiceIndex>& a) { return 100.0 / 3.0 + t.ms(a) * M_PI; };
    const KnapsackResult r = knapsack_fit(t.lp, t.ch, ms, ms(argmax), start);
    EXPECT_TRUE(r.met) << seed;
    kept += std::fabs(r.log_prob - t.log_prob(argmax)) < 1e-9;
  }
  EXPECT_EQ(kept, 40);
}

// Below the fastest architecture: the fastest one, flagged as missing the target.
TEST(Knapsack, UnreachableReturnsFastest) {
  const Toy t = random_toy(2, 3);
  auto ms = [&](const std::vector<ChoiceIndex>& a) { return t.ms(a); };
  // Narrowest widths, fewest bits, stacked: the fastest the toy allows.
  const ChoiceIndex f{1, 1, {0, 0, 0, 0, 0, 0, 0}};
  const double fastest = t.ms({f, f});
  const KnapsackResult r = knapsack_fit(t.lp, t.ch, ms, 0.5 * fastest, std::vector<ChoiceIndex>(2));
  EXPECT_FALSE(r.met);
  EXPECT_NEAR(r.ms, fastest, 1e-12);
}

// width_weight w: the objective is the bits' log-probability plus w times the widths'. Brute force
// on one layer under that objective; log_prob still reports the unweighted sum. A large weight keeps
// the most likely widths (with the sensitivity prior: full width) whenever bits alone reach the
// target.
TEST(Knapsack, WidthWeightScalesTheWidthsCost) {
  const auto archs = all_archs();
  int exact = 0, cases = 0, kept = 0, keepable = 0;
  for (uint32_t seed = 0; seed < 40; ++seed) {
    Toy t = random_toy(1, seed);
    auto ms = [&](const std::vector<ChoiceIndex>& a) { return t.ms(a); };
    double lo = 1e9, hi = 0;
    for (const auto& a : archs) lo = std::min(lo, t.ms(a)), hi = std::max(hi, t.ms(a));
    const double w = 5.0;
    auto weighted = [&](const std::vector<ChoiceIndex>& a) {
      return t.log_prob(a) + (w - 1.0) * (t.lp[0].kv[a[0].kv] + t.lp[0].mlp[a[0].mlp]);
    };
    for (double f : {0.2, 0.5, 0.8}) {
      const double target = lo + f * (hi - lo);
      const int64_t kv = t.lp[0].kv[1] > t.lp[0].kv[0], mlp = t.lp[0].mlp[1] > t.lp[0].mlp[0];
      double best = -1e300, fastest_likely = 1e300;
      for (const auto& a : archs) {
        if (t.ms(a) <= target) best = std::max(best, weighted(a));
        if (a[0].kv == kv && a[0].mlp == mlp) fastest_likely = std::min(fastest_likely, t.ms(a));
      }
      const KnapsackResult r = knapsack_fit(t.lp, t.ch, ms, target, archs[0], w);
      ASSERT_TRUE(r.met);
      EXPECT_NEAR(r.log_prob, t.log_prob(r.idx), 1e-9);
      EXPECT_LE(weighted(r.idx), best + 1e-9);
      exact += weighted(r.idx) >= best - 1e-9;
      ++cases;
      if (fastest_likely <= target) {
        ++keepable;
        const KnapsackResult k = knapsack_fit(t.lp, t.ch, ms, target, archs[0], 1e6);
        kept += k.idx[0].kv == kv && k.idx[0].mlp == mlp;
      }
    }
  }
  EXPECT_GE(exact, cases * 9 / 10) << exact << " of " << cases << " optimal";
  EXPECT_GT(keepable, 0);
  EXPECT_EQ(kept, keepable);
  const Toy t = random_toy(1, 0);
  auto ms = [&](const std::vector<ChoiceIndex>& a) { return t.ms(a); };
  EXPECT_THROW(knapsack_fit(t.lp, t.ch, ms, 1.0, archs[0], 0.0), std::exception);
}
