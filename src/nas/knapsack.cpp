// Knapsack discretization (include/llmc/nas/knapsack.h).
#include "llmc/nas/knapsack.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "llmc/core/error.h"

namespace llmc {
namespace {

// One part of one layer: the attention (width = KV heads; linears q, k, v, o) or the MLP (width =
// channels; linears gate, up, down).
struct PartKind {
  bool attention;
  std::vector<int> linears;
};
const std::array<PartKind, 2> kParts = {PartKind{true, {kQ, kK, kV, kO}}, PartKind{false, {kGate, kUp, kDown}}};

// One option of a part: its width index and the bit index of each of its linears.
struct PartOption {
  int64_t width = 0;
  std::vector<int64_t> bits;
  double cost = 0;  // -log-probability of the option's choices, the width's weighted (knapsack_fit)
  double lp = 0;    // the unweighted log-probability
  double dt = 0;    // predicted ms relative to the start architecture's option of this part
};

void apply(ChoiceIndex& c, const PartKind& p, const PartOption& o) {
  (p.attention ? c.kv : c.mlp) = o.width;
  for (size_t i = 0; i < p.linears.size(); ++i) c.bits[p.linears[i]] = o.bits[i];
}

// Every option of part p of layer l, priced, reduced to its Pareto front (sorted by dt, cost
// strictly decreasing, so the first is the fastest, the last the most likely): an option that is slower and no more likely than another is never chosen.
std::vector<PartOption> part_front(size_t l, const PartKind& p, const ChoiceLogProbs& lp, const LayerChoices& ch,
                                   std::vector<ChoiceIndex>& arch, double base_ms,
                                   const std::function<double(const std::vector<ChoiceIndex>&)>& ms,
                                   double width_weight) {
  const ChoiceIndex keep = arch[l];
  const int64_t widths = static_cast<int64_t>(p.attention ? ch.kv.size() : ch.mlp.size());
  const int64_t nb = static_cast<int64_t>(ch.bits.size());
  std::vector<PartOption> all;
  PartOption o;
  o.bits.assign(p.linears.size(), 0);
  for (o.width = 0; o.width < widths; ++o.width) {
    // Odometer over the bit indices of the part's linears.
    std::fill(o.bits.begin(), o.bits.end(), 0);
    while (true) {
      const double lw = p.attention ? lp.kv[o.width] : lp.mlp[o.width];
      o.lp = lw;
      for (size_t i = 0; i < p.linears.size(); ++i) o.lp += lp.bits[p.linears[i]][o.bits[i]];
      o.cost = -(o.lp + (width_weight - 1.0) * lw);
      apply(arch[l], p, o);
      o.dt = ms(arch) - base_ms;
      all.push_back(o);
      size_t i = 0;
      while (i < o.bits.size() && ++o.bits[i] == nb) o.bits[i++] = 0;
      if (i == o.bits.size()) break;
    }
  }
  arch[l] = keep;
  std::sort(all.begin(), all.end(), [](const PartOption& a, const PartOption& b) {
    return a.dt != b.dt ? a.dt < b.dt : a.cost < b.cost;
  });
  std::vector<PartOption> front;
  for (const PartOption& x : all)
    if (front.empty() || x.cost < front.back().cost) front.push_back(x);
  return front;
}

}  // namespace

KnapsackResult knapsack_fit(const std::vector<ChoiceLogProbs>& lp, const std::vector<LayerChoices>& ch,
                            const std::function<double(const std::vector<ChoiceIndex>&)>& ms, double target_ms,
                            const std::vector<ChoiceIndex>& start, double width_weight) {
  if (lp.size() != ch.size() || start.size() != ch.size())
    fail("knapsack_fit: {} layers of log-probabilities, {} of choices, {} in the start architecture", lp.size(),
         ch.size(), start.size());
  if (!(width_weight > 0)) fail("knapsack_fit: width weight {} (expected > 0)", width_weight);
  std::vector<ChoiceIndex> arch = start;
  const double base_ms = ms(arch);
  // fronts[l * 2 + part]
  std::vector<std::vector<PartOption>> fronts;
  for (size_t l = 0; l < ch.size(); ++l)
    for (const PartKind& p : kParts) fronts.push_back(part_front(l, p, lp[l], ch[l], arch, base_ms, ms, width_weight));

  // Start's own dt per part is 0 by construction; the total of a pick is base_ms + sum dt.
  std::vector<size_t> pick(fronts.size());
  auto total_ms = [&](const std::vector<size_t>& pk) {
    double t = base_ms;
    for (size_t i = 0; i < fronts.size(); ++i) t += fronts[i][pk[i]].dt;
    return t;
  };
  auto solve = [&](double lambda, std::vector<size_t>& pk) {
    for (size_t i = 0; i < fronts.size(); ++i) {
      double best = std::numeric_limits<double>::infinity();
      for (size_t k = 0; k < fronts[i].size(); ++k) {
        const double v = fronts[i][k].cost + lambda * fronts[i][k].dt;
        if (v < best) best = v, pk[i] = k;
      }
    }
    return total_ms(pk);
  };
  // The running totals (a start plus per-part differences) round differently from ms() of the same
  // architecture: an architecture whose own prediction equals the target (a sweep's top target is
  // uniform 8-bit's LUT latency) came out a few ulps over it and was ruled out. Every comparison
  // allows the relative 1e-12 that `met` allows.
  const double limit = target_ms * (1 + 1e-12);
  KnapsackResult r;
  if (solve(0.0, pick) > limit) {
    // The smallest multiplier that meets the target: bracket, then bisect.
    double lo = 0, hi = 1;
    std::vector<size_t> pk(fronts.size());
    while (solve(hi, pk) > limit && hi < 1e15) lo = hi, hi *= 4;
    if (solve(hi, pk) > limit) {
      // Unreachable: the fastest option of every part (the first of each front).
      std::fill(pick.begin(), pick.end(), 0);
    } else {
      for (int it = 0; it < 100 && hi - lo > 1e-12 * hi; ++it) {
        const double mid = 0.5 * (lo + hi);
        (solve(mid, pk) > limit ? lo : hi) = mid;
      }
      solve(hi, pick);
      // The multiplier's solution sits on the convex hull and may leave slack: move any part to a
      // more likely option that still fits, most log-probability gained first.
      double t = total_ms(pick);
      while (true) {
        double best_gain = 0;
        size_t bi = 0, bk = 0;
        for (size_t i = 0; i < fronts.size(); ++i) {
          const PartOption& cur = fronts[i][pick[i]];
          for (size_t k = pick[i] + 1; k < fronts[i].size(); ++k) {  // later on the front: slower, more likely
            const PartOption& o = fronts[i][k];
            if (t + o.dt - cur.dt <= limit && cur.cost - o.cost > best_gain)
              best_gain = cur.cost - o.cost, bi = i, bk = k;
          }
        }
        if (best_gain <= 0) break;
        t += fronts[bi][bk].dt - fronts[bi][pick[bi]].dt;
        pick[bi] = bk;
      }
    }
  }
  for (size_t l = 0; l < ch.size(); ++l)
    for (size_t p = 0; p < kParts.size(); ++p) {
      const PartOption& o = fronts[l * kParts.size() + p][pick[l * kParts.size() + p]];
      apply(arch[l], kParts[p], o);
      r.log_prob += o.lp;
    }
  r.idx = arch;
  r.ms = ms(arch);
  r.met = r.ms <= limit;
  return r;
}

}  // namespace llmc
