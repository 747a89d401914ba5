#pragma once
// Rolling log-likelihood perplexity, as lm-evaluation-harness's loglikelihood_rolling: each
// document is tokenized without special tokens; the first window is prefixed with BOS (EOS when
// the model has no BOS) and every token of the document is predicted exactly once. With
// stride == max_length (the default, lm-eval's behaviour) each window after the first predicts up
// to max_length tokens with the tokens before it as context; a smaller stride predicts `stride`
// tokens per window with max_length - stride tokens of extra context.
#include <cstdint>
#include <string>
#include <vector>

#include "llmc/eval/text_docs.h"
#include "llmc/model/causal_lm.h"

namespace llmc {

struct PerplexityOptions {
  int64_t max_length = 0;  // 0: the model's max_position_embeddings
  int64_t stride = 0;      // 0: max_length
  int64_t batch_size = 8;  // windows per forward
  std::string label = "ppl";
};

struct PerplexityResult {
  double loglikelihood = 0;  // sum over all predicted tokens (natural log)
  int64_t tokens = 0, words = 0, bytes = 0, documents = 0;
  double token_perplexity = 0, word_perplexity = 0, byte_perplexity = 0, bits_per_byte = 0;
  double seconds = 0, tokens_per_second = 0;
};

struct Window {
  std::vector<int32_t> input;  // model input tokens
  int64_t n_predict = 0;       // the last n_predict positions' next tokens are scored
  std::vector<int32_t> target; // (n_predict) tokens scored
};

// The windows of one tokenized document (ids without special tokens).
std::vector<Window> rolling_windows(const std::vector<int32_t>& ids, int32_t prefix_token, int64_t max_length,
                                   int64_t stride);

PerplexityResult evaluate_perplexity(CausalLM& model, const std::vector<TextDocument>& docs,
                                     const PerplexityOptions& opts);

}  // namespace llmc
