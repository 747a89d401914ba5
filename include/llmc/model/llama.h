#pragma once
// Reference Llama forward in libtorch: RMSNorm, rotate_half RoPE (with optional llama3 scaling),
// GQA attention with causal + key padding masks, SwiGLU MLP, KV cache.
#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "llmc/model/arch.h"
#include "llmc/model/causal_lm.h"
#include "llmc/model/linear.h"

namespace llmc {

struct LayerWeights {
  at::Tensor input_norm, post_attn_norm;  // (hidden)
  std::shared_ptr<Linear> q, k, v, o;     // q: (heads*hd, hidden), k/v: (kv*hd, hidden), o: (hidden, heads*hd)
  std::shared_ptr<Linear> gate, up, down;  // gate/up: (inter, hidden), down: (hidden, inter)
};

struct LlamaWeights {
  at::Tensor embed;       // (vocab, hidden)
  at::Tensor final_norm;  // (hidden)
  std::shared_ptr<Linear> lm_head;  // (vocab, hidden); shares `embed` when tied
  std::vector<LayerWeights> layers;
};

class Llama : public CausalLM {
 public:
  // weights must already be in the compute dtype (float32 or bfloat16).
  Llama(ModelConfig config, LlamaWeights weights, std::shared_ptr<const Tokenizer> tokenizer);

  const ModelConfig& config() const override { return config_; }
  const Tokenizer& tokenizer() const override;
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& key_mask,
                     KVCache* cache) override;
  std::unique_ptr<KVCache> new_cache(int64_t batch, int64_t max_len) const override;
  using CausalLM::forward;

  LlamaWeights& weights() { return weights_; }
  const LlamaWeights& weights() const { return weights_; }
  at::ScalarType dtype() const override { return weights_.embed.scalar_type(); }
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  const std::shared_ptr<const Tokenizer>& tokenizer_ptr() const { return tokenizer_; }

  // Hidden states before the final norm: (B, T, hidden). Used by calibration statistics.
  at::Tensor hidden_states(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& key_mask,
                           KVCache* cache);
  // The hidden state entering each layer, then the last layer's output: num_layers + 1 tensors
  // (B, T, hidden). With forward_from, a change confined to layer l needs only layers l.. rerun
  // (nas/sensitivity.cpp).
  std::vector<at::Tensor> layer_inputs(const at::Tensor& tokens, const at::Tensor& positions,
                                       const at::Tensor& key_mask);
  // Logits (B, T, vocab) float32 of layers [first_layer, num_layers) applied to x, the hidden state
  // entering first_layer (no cache).
  at::Tensor forward_from(const at::Tensor& x, int64_t first_layer, const at::Tensor& positions,
                          const at::Tensor& key_mask);

 private:
  ModelConfig config_;
  LlamaWeights weights_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  at::Tensor inv_freq_;  // (head_dim/2) float32
  // Layers [first_layer, num_layers) on x (B, T, hidden); `inputs` (optional) receives each layer's
  // input and the final output.
  at::Tensor run_layers(at::Tensor x, int64_t first_layer, const at::Tensor& positions, const at::Tensor& key_mask,
                        KVCache* cache, std::vector<at::Tensor>* inputs);
};

// y = w * x / sqrt(mean(x^2) + eps), computed in float32 and returned in x's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps);

// RoPE inverse frequencies (head_dim/2), with llama3 scaling when configured.
at::Tensor rope_inv_freq(const ModelConfig& c);

// A non-owning handle on the model's tokenizer (nullptr when it has none). The model must
// outlive every copy of the handle.
std::shared_ptr<const Tokenizer> borrow_tokenizer(const Llama& model);

// True for a linear of a dropped sub-block (0 KV heads or 0 MLP channels): no rows or no inputs.
inline bool linear_dropped(const Linear& l) { return l.out_features() == 0 || l.in_features() == 0; }

// The linear of kind k (q, k, v, o, gate, up, down) of a layer.
std::shared_ptr<Linear>& layer_linear(LayerWeights& L, int kind);
const std::shared_ptr<Linear>& layer_linear(const LayerWeights& L, int kind);

// The architecture a (possibly sliced and quantized) model has: widths from its config, bits from
// its linears (model/linear.h), identity orders, base = the config without per-layer widths.
// group_size: the requested quantization group (see packed_group_size).
Arch model_arch(const Llama& model, int group_size);
Arch weights_arch(const ModelConfig& config, const LlamaWeights& weights, int group_size);
// The largest group any packed linear (lm_head included) uses, 128 when none is packed: a requested
// group that gives every packed linear its group again through effective_group().
int packed_group_size(const Llama& model);
int packed_group_size(const LlamaWeights& weights);

}  // namespace llmc
