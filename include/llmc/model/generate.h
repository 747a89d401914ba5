#pragma once
// Token generation over any CausalLM with a KV cache: prefill the prompt once, then one token per
// step. Greedy when temperature == 0.
#include <cstdint>
#include <functional>
#include <vector>

#include "llmc/model/causal_lm.h"

namespace llmc {

struct GenerateOptions {
  int max_new_tokens = 64;
  double temperature = 0.0;
  double top_p = 1.0;
  uint64_t seed = 0;
  bool stop_at_eos = true;
};

struct GenerateStats {
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t prompt_tokens = 0, new_tokens = 0;
};

// Returns the generated ids only (the EOS that stopped generation included). on_token, when set,
// is called after each new token.
std::vector<int32_t> generate(CausalLM& model, const std::vector<int32_t>& prompt_ids, const GenerateOptions& opts,
                              const std::function<void(int32_t)>& on_token = nullptr, GenerateStats* stats = nullptr);

// Picks the next token from (vocab) float32 logits: argmax at temperature 0, else top-p sampling.
int32_t sample_token(const float* logits, int64_t vocab, double temperature, double top_p, uint64_t* rng_state);

}  // namespace llmc
