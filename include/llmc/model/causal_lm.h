#pragma once
// The one interface every logit-producing model answers (reference Llama, a masked supernet, a
// discretized fake-quant subnet, the packed runtime engine), so generate, eval, perplexity and
// bench are written once.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "llmc/model/config.h"
#include "llmc/tokenizer/tokenizer.h"

namespace llmc {

// Per-layer keys and values, preallocated for max_len positions.
struct KVCache {
  std::vector<at::Tensor> k, v;  // each (B, n_kv_heads(layer), max_len, head_dim)
  int64_t len = 0;               // slots filled
  int64_t max_len = 0;
};

class CausalLM {
 public:
  virtual ~CausalLM() = default;
  virtual const ModelConfig& config() const = 0;
  virtual const Tokenizer& tokenizer() const = 0;

  // tokens:    (B, T) int64
  // positions: (B, T) int64 RoPE positions (for left padding: count of real tokens before)
  // key_mask:  (B, S) bool, S = (cache ? cache->len : 0) + T; true = a real token that may be
  //            attended to. Attention is also causal in slot order.
  // cache:     optional; when given, K/V of these T steps are appended at cache->len and
  //            cache->len advances by T.
  // returns logits (B, T, vocab) float32.
  virtual at::Tensor forward(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& key_mask,
                             KVCache* cache) = 0;

  virtual std::unique_ptr<KVCache> new_cache(int64_t batch, int64_t max_len) const = 0;

  // The dtype the model computes in (its logits are float32 either way).
  virtual at::ScalarType dtype() const { return at::kFloat; }

  // Convenience: one unpadded batch (B, T), positions 0..T-1, no cache.
  at::Tensor forward(const at::Tensor& tokens);
};

}  // namespace llmc
