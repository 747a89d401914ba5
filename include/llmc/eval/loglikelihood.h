#pragma once
// Log-likelihood of continuations given contexts, as lm-evaluation-harness computes it for
// loglikelihood requests: the model sees (context + continuation)[-(L+1):][:-1] (left truncation to
// the model length L) and the request's score is the sum of log-softmax probabilities of the
// continuation tokens.
//
// loglikelihoods() computes the same numbers faster:
//  - requests with the same (truncated) context are one group: the context runs once. With
//    opts.logprobs (the runtime engine) one row holds the context and every continuation of the
//    group as a branch that sees the context and itself only (segments, eval/scoring.h): one forward
//    a batch. Without it each continuation is scored from a copy of the context's KV cache, in
//    chunks of rows of similar length;
//  - groups are sorted by context (long shared prefixes, e.g. MMLU's few-shot block, become
//    clusters) and by length, and batched with left padding of the contexts;
//  - a prefix shared by all contexts of a batch (>= 8 tokens) runs once, then is copied to every row;
//    a prefix shared by a whole cluster (MMLU: a subject's header and few-shot block) runs once for
//    all of the cluster's batches;
//  - only the logits that score a token are computed for the reference Llama, and for any model
//    through opts.logprobs (eval/scoring.h; the runtime engine: its lm_head on the scored rows
//    only, no (B, T, vocab) logits and no log_softmax over them).
// loglikelihoods_naive() is the one-request-per-forward reference used by tests and the benchmark.
#include <cstdint>
#include <string>
#include <vector>

#include "llmc/eval/scoring.h"
#include "llmc/eval/tasks.h"
#include "llmc/model/causal_lm.h"

namespace llmc {

struct LoglikelihoodOptions {
  int64_t batch_size = 8;  // continuation rows (requests) per forward
  int64_t max_length = 0;  // 0: the model's max_position_embeddings
  std::string label = "loglikelihood";
  TokenLogprobsFn logprobs;  // the model's fast path (eval/scoring.h); empty: forward() + log_softmax
};

struct LoglikelihoodStats {
  int64_t requests = 0;
  int64_t tokens = 0;        // sum over requests of (truncated context + continuation) tokens
  int64_t model_tokens = 0;  // real (non-padding) token positions actually run through the model
  int64_t forwards = 0;      // forward calls
  double seconds = 0;
};

std::vector<double> loglikelihoods(CausalLM& model, const std::vector<TokenizedRequest>& requests,
                                   const LoglikelihoodOptions& opts, LoglikelihoodStats* stats = nullptr);

std::vector<double> loglikelihoods_naive(CausalLM& model, const std::vector<TokenizedRequest>& requests,
                                         const LoglikelihoodOptions& opts, LoglikelihoodStats* stats = nullptr);

}  // namespace llmc
