#pragma once
// Discretization as a knapsack (search config "schedule": {"discretize": "knapsack"}): the
// architecture that maximizes the summed log-probability of its choices under the searched
// distributions, subject to the predicted latency <= target.
//
// Argmax ignores the target (the expected latency met it, the most likely architecture need not),
// and a greedy repair of the argmax only ever moves towards faster options. The knapsack trades
// both ways: it may keep one linear at 8 bits and put another at 4 if that costs less probability
// at the same latency. With "init": "sensitivity" the logits start at -KL / (scale T) of each
// option alone, so before any step the knapsack minimizes the summed measured KL at the target.
//
// Latency is additive over the parts of a layer (its attention: KV width and the bits of q, k, v,
// o; its MLP: width and the bits of gate, up, down) because the forward plan's calls never cross a
// part; within a part the calls depend on every option together (q|k|v stack only when their bits
// agree), so each part is priced whole, by the caller's predictor. Exact search over the parts'
// options by a Lagrangian (one multiplier on latency, bisected to the target), then a greedy pass
// that spends the slack the multiplier left on the parts whose better option fits.
#include <functional>
#include <vector>

#include "llmc/nas/supernet.h"

namespace llmc {

struct KnapsackResult {
  std::vector<ChoiceIndex> idx;  // the chosen architecture
  double ms = 0;                 // its predicted latency
  double log_prob = 0;           // summed log-probability of its choices (unweighted)
  bool met = false;              // ms <= target (false: the fastest architecture is slower than the target)
};

// lp: log-probabilities of every option (Supernet::log_probs); ch: the options; ms: predicted
// latency of a whole architecture (LUT); start: any valid architecture (the parts not being
// priced are held at it). Cost: (|kv| |bits|^4 + |mlp| |bits|^3) predictions per layer.
// width_weight multiplies the width choices' log-probabilities in the objective (1: the plain
// summed log-probability; > 1: width cuts cost more than their single-option KL says, the search's
// candidates in schedule.knapsack_width_weights).
KnapsackResult knapsack_fit(const std::vector<ChoiceLogProbs>& lp, const std::vector<LayerChoices>& ch,
                            const std::function<double(const std::vector<ChoiceIndex>&)>& ms, double target_ms,
                            const std::vector<ChoiceIndex>& start, double width_weight = 1.0);

}  // namespace llmc
