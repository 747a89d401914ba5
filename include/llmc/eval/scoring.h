#pragma once
// The scorers' fast path. Scoring needs log p(target | prefix) at a few positions of a forward,
// not its (B, T, vocab) logits: a model that can run its LM head on chosen rows only offers
//
//   out = fn(tokens, positions, key_mask, cache, rows, targets, segments)
//
// with CausalLM::forward's arguments (the cache, when given, advances as there), rows flat
// indices b * T + t (may repeat; empty: fill the cache only), and out[i] = log_softmax(logits of
// rows[i])[targets[i]]. segments (B, T), or undefined: branches of a row (RuntimeEngine::
// token_logprobs): a token of segment s > 0 attends among this call's tokens only to those of
// segments 0 and s, so one row holds a context (segment 0) and each of its continuations. The runtime engine offers it (RuntimeLlama::token_logprobs: lm_head on the
// scored rows only, fp64 log-sum-exp, no logits tensor); eval sits below runtime, so the caller that
// opens the model (tools/cmd_eval.cpp) passes it in. Without one (an empty function) the scorers
// run forward() and log_softmax, as they always did.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "llmc/model/causal_lm.h"

namespace llmc {

using TokenLogprobsFn = std::function<std::vector<double>(
    const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& key_mask, KVCache* cache,
    const std::vector<int64_t>& rows, const std::vector<int64_t>& targets, const at::Tensor& segments)>;

}  // namespace llmc
