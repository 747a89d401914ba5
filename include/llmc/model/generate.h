#pragma once
// Token generation over any CausalLM with a KV cache: prefill the prompt once, then one token per
// step. Greedy when temperature == 0.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "llmc/model/causal_lm.h"

namespace llmc {

struct GenerateOptions {
  int max_new_tokens = 64;
  double temperature = 0.0;
  double top_p = 1.0;
  uint64_t seed = 0;
  bool stop_at_eos = true;
  // Past the model's context (config().max_position_embeddings) the model was never trained:
  // without this a longer prompt is an error and generation stops at the context with a warning.
  bool allow_past_context = false;
};

struct GenerateStats {
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t prompt_tokens = 0, new_tokens = 0;
  bool stopped_at_context = false;  // fewer than max_new_tokens: the context was full
  // Decode speed: the first new token comes from the prefill, the others from decode steps
  // (0 with fewer than two new tokens).
  double decode_tokens_per_second() const {
    return new_tokens > 1 && decode_seconds > 0 ? (new_tokens - 1) / decode_seconds : 0.0;
  }
};

// Returns the generated ids only (the EOS that stopped generation included). on_token, when set,
// is called after each new token. Throws when the prompt alone is longer than the model's context
// (unless opts.allow_past_context).
std::vector<int32_t> generate(CausalLM& model, const std::vector<int32_t>& prompt_ids, const GenerateOptions& opts,
                              const std::function<void(int32_t)>& on_token = nullptr, GenerateStats* stats = nullptr);

// The text of `ids` as it continues `prompt_ids`: decoded together with the prompt, so that a
// tokenizer that drops the leading space of a text's first piece (SentencePiece) keeps the space
// between prompt and continuation. Falls back to decoding `ids` alone when the prompt's text is not
// a prefix of the whole.
std::string decode_continuation(const Tokenizer& tok, const std::vector<int32_t>& prompt_ids,
                                const std::vector<int32_t>& ids);

// Picks the next token from (vocab) float32 logits: argmax at temperature 0, else top-p sampling.
int32_t sample_token(const float* logits, int64_t vocab, double temperature, double top_p, uint64_t* rng_state);

}  // namespace llmc
