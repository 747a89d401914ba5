#pragma once
// Token-level perplexity under two protocols that papers report and that give different numbers:
//
// Rolling (PerplexityProtocol::Rolling), as lm-evaluation-harness's loglikelihood_rolling: each
// document is tokenized without special tokens; the first window is prefixed with BOS (EOS when
// the model has no BOS) and every token of the document is predicted exactly once. With
// stride == max_length (the default, lm-eval's behaviour) each window after the first predicts up
// to max_length tokens with the tokens before it as context; a smaller stride predicts `stride`
// tokens per window with max_length - stride tokens of extra context.
//
// Chunks (PerplexityProtocol::Chunks), as GPTQ's evaluation code computes WikiText-2 perplexity
// (most quantization papers reuse it; the shared SmolLM2 reference ran it with transformers): the
// text is tokenized without special tokens and cut into non-overlapping windows [i*L, (i+1)*L);
// only full windows count (the tail is dropped); each window is scored alone (no BOS, no context
// carried over), so its first token is never predicted; perplexity = exp(mean over windows of the
// window's mean NLL).
#include <cstdint>
#include <string>
#include <vector>

#include "llmc/data/text_docs.h"
#include "llmc/eval/scoring.h"
#include "llmc/model/causal_lm.h"

namespace llmc {

enum class PerplexityProtocol { Rolling, Chunks, LlamaCpp };

struct PerplexityOptions {
  PerplexityProtocol protocol = PerplexityProtocol::Rolling;
  // 0: the model's max_position_embeddings (Rolling); min(2048, that) for Chunks, 2048 being
  // the sequence length GPTQ-style papers report.
  int64_t max_length = 0;
  int64_t stride = 0;       // Rolling only; 0: max_length
  int64_t max_windows = 0;  // Chunks / LlamaCpp: score the first N windows (0: all)
  int64_t batch_size = 8;   // windows per forward
  std::string label = "ppl";
  // The model's fast path (eval/scoring.h): log-probabilities of the scored positions only; empty:
  // forward() + log_softmax of the scored rows.
  TokenLogprobsFn logprobs;
};

struct PerplexityResult {
  double loglikelihood = 0;  // sum over all predicted tokens (natural log)
  int64_t tokens = 0;        // tokens predicted
  int64_t documents = 0;
  int64_t words = 0, bytes = 0;  // Rolling only: Chunks windows cut through words and drop a tail
  int64_t windows = 0, window_length = 0;
  double token_perplexity = 0, word_perplexity = 0, byte_perplexity = 0, bits_per_byte = 0;
  std::vector<double> window_nll;  // Chunks: each window's mean NLL, in text order
  double seconds = 0, tokens_per_second = 0;
};

struct Window {
  std::vector<int32_t> input;  // model input tokens
  int64_t score_from = 0;      // logits at positions [score_from, score_from + n_predict) are scored
  int64_t n_predict = 0;
  std::vector<int32_t> target; // (n_predict) tokens scored
};

// The Rolling windows of one tokenized document (ids without special tokens).
std::vector<Window> rolling_windows(const std::vector<int32_t>& ids, int32_t prefix_token, int64_t max_length,
                                   int64_t stride);

// The Chunks windows of one token stream: every full window of `length` tokens, in order; input =
// the window's tokens, position t predicts token t + 1 (length - 1 predictions).
std::vector<Window> chunk_windows(const std::vector<int32_t>& ids, int64_t length);

// The LlamaCpp windows of one token stream (already BOS-prefixed when add_bos): every full chunk
// of `length` tokens, its first token replaced by `bos` when add_bos, the second half scored.
std::vector<Window> llamacpp_windows(const std::vector<int32_t>& ids, int64_t length, bool add_bos, int32_t bos);

PerplexityResult evaluate_perplexity(CausalLM& model, const std::vector<TextDocument>& docs,
                                     const PerplexityOptions& opts);

}  // namespace llmc
