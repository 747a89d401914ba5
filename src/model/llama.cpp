#include "llmc/model/llama.h"

#include <ATen/ATen.h>

#include <cmath>

#include "llmc/core/error.h"
#include "llmc/model/arch.h"
#include "llmc/model/attention.h"

namespace llmc {

at::Tensor CausalLM::forward(const at::Tensor& tokens) {
  const int64_t B = tokens.size(0), T = tokens.size(1);
  auto positions = at::arange(T, at::kLong).unsqueeze(0).expand({B, T});
  auto key_mask = at::ones({B, T}, at::kBool);
  return forward(tokens, positions, key_mask, nullptr);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  auto xf = x.to(at::kFloat);
  auto var = xf.pow(2).mean(-1, /*keepdim=*/true);
  return w * (xf * at::rsqrt(var + eps)).to(x.scalar_type());
}

at::Tensor rope_inv_freq(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<double> f(half);
  for (int64_t i = 0; i < half; ++i) f[i] = 1.0 / std::pow(c.rope_theta, (2.0 * i) / c.head_dim);
  if (c.rope_scaling.type == "llama3") {
    const auto& s = c.rope_scaling;
    const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_ctx / s.low_freq_factor, high_wavelen = old_ctx / s.high_freq_factor;
    for (auto& fi : f) {
      const double wavelen = 2 * M_PI / fi;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        fi = fi / s.factor;
      } else {
        double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        fi = (1 - smooth) * fi / s.factor + smooth * fi;
      }
    }
  }
  std::vector<float> ff(f.begin(), f.end());
  return at::tensor(ff, at::kFloat);
}

namespace {

// x: (B, H, T, hd); cos/sin: (B, 1, T, hd)
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  auto rotated = at::cat({-x2, x1}, -1);
  return x * cos + rotated * sin;
}

}  // namespace

Llama::Llama(ModelConfig config, LlamaWeights weights, std::shared_ptr<const Tokenizer> tokenizer)
    : config_(std::move(config)), weights_(std::move(weights)), tokenizer_(std::move(tokenizer)) {
  inv_freq_ = rope_inv_freq(config_);
}

const Tokenizer& Llama::tokenizer() const {
  if (!tokenizer_) fail("model has no tokenizer");
  return *tokenizer_;
}

std::unique_ptr<KVCache> Llama::new_cache(int64_t batch, int64_t max_len) const {
  auto c = std::make_unique<KVCache>();
  c->max_len = max_len;
  auto opts = at::TensorOptions().dtype(dtype());
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    c->k.push_back(at::zeros({batch, config_.kv_heads(l), max_len, config_.head_dim}, opts));
    c->v.push_back(at::zeros({batch, config_.kv_heads(l), max_len, config_.head_dim}, opts));
  }
  return c;
}

at::Tensor Llama::hidden_states(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& key_mask,
                                KVCache* cache) {
  return run_layers(at::embedding(weights_.embed, tokens.to(at::kLong)), 0, positions, key_mask, cache, nullptr);
}

at::Tensor Llama::forward_from(const at::Tensor& x, int64_t first_layer, const at::Tensor& positions,
                               const at::Tensor& key_mask) {
  LLMC_CHECK(first_layer >= 0 && first_layer <= config_.num_layers, "forward_from: layer {} of {}", first_layer,
             config_.num_layers);
  auto h = run_layers(x, first_layer, positions, key_mask, nullptr, nullptr);
  h = rms_norm(h, weights_.final_norm, config_.rms_norm_eps);
  return weights_.lm_head->forward(h).to(at::kFloat);
}

std::vector<at::Tensor> Llama::layer_inputs(const at::Tensor& tokens, const at::Tensor& positions,
                                            const at::Tensor& key_mask) {
  std::vector<at::Tensor> out;
  run_layers(at::embedding(weights_.embed, tokens.to(at::kLong)), 0, positions, key_mask, nullptr, &out);
  return out;
}

at::Tensor Llama::run_layers(at::Tensor x, int64_t first_layer, const at::Tensor& positions,
                             const at::Tensor& key_mask, KVCache* cache, std::vector<at::Tensor>* inputs) {
  const auto& c = config_;
  const int64_t B = x.size(0), T = x.size(1), hd = c.head_dim;
  const int64_t past = cache ? cache->len : 0, S = past + T;
  LLMC_CHECK(key_mask.dim() == 2 && key_mask.size(0) == B && key_mask.size(1) == S,
             "forward: key_mask must be (B, past+T) = ({}, {})", B, S);
  LLMC_CHECK(positions.dim() == 2 && positions.size(0) == B && positions.size(1) == T,
             "forward: positions must have the shape of tokens");
  if (cache) LLMC_CHECK(S <= cache->max_len, "forward: KV cache full ({} + {} > {})", past, T, cache->max_len);
  const auto dt = dtype();

  // RoPE tables for these positions: (B, 1, T, hd)
  auto freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq_;  // (B, T, hd/2)
  auto emb = at::cat({freqs, freqs}, -1).unsqueeze(1);
  auto cos = emb.cos().to(dt), sin = emb.sin().to(dt);

  // Attention mask (B, 1, 1, T, S): key s visible to query t iff key_mask[b, s] and s <= past + t.
  auto q_slot = at::arange(past, S, at::kLong).view({T, 1});
  auto k_slot = at::arange(S, at::kLong).view({1, S});
  auto allowed = (k_slot <= q_slot).view({1, 1, 1, T, S}) & key_mask.to(at::kBool).view({B, 1, 1, 1, S});
  auto bias = attention_bias(allowed);

  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  for (int64_t l = first_layer; l < c.num_layers; ++l) {
    if (inputs) inputs->push_back(x);
    auto& L = weights_.layers[l];
    const int64_t nkv = c.kv_heads(l), nq = c.q_heads(l), g = nq / std::max<int64_t>(nkv, 1);
    if (nkv > 0) {
      auto h = rms_norm(x, L.input_norm, c.rms_norm_eps);
      auto q = L.q->forward(h).view({B, T, nq, hd}).transpose(1, 2);  // (B, nq, T, hd)
      auto k = L.k->forward(h).view({B, T, nkv, hd}).transpose(1, 2);  // (B, nkv, T, hd)
      auto v = L.v->forward(h).view({B, T, nkv, hd}).transpose(1, 2);
      q = apply_rope(q, cos, sin);
      k = apply_rope(k, cos, sin);
      if (cache) {
        cache->k[l].narrow(2, past, T).copy_(k);
        cache->v[l].narrow(2, past, T).copy_(v);
        k = cache->k[l].narrow(2, 0, S);
        v = cache->v[l].narrow(2, 0, S);
      }
      // GQA without copying K/V: group the g query heads of each KV head.
      auto qg = q.reshape({B, nkv, g, T, hd});
      auto out = attention(qg, k, v, bias, scale);  // (B, nkv, g, T, hd)
      out = out.reshape({B, nq, T, hd}).transpose(1, 2).reshape({B, T, nq * hd});
      x = x + L.o->forward(out);
    }
    if (c.mlp_width(l) > 0) {
      auto h = rms_norm(x, L.post_attn_norm, c.rms_norm_eps);
      x = x + L.down->forward(at::silu(L.gate->forward(h)) * L.up->forward(h));
    }
  }
  if (inputs) inputs->push_back(x);
  if (cache) cache->len = S;
  return x;
}

at::Tensor Llama::forward(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& key_mask,
                          KVCache* cache) {
  auto x = hidden_states(tokens, positions, key_mask, cache);
  x = rms_norm(x, weights_.final_norm, config_.rms_norm_eps);
  return weights_.lm_head->forward(x).to(at::kFloat);
}

std::shared_ptr<Linear>& layer_linear(LayerWeights& L, int kind) {
  switch (kind) {
    case kQ: return L.q;
    case kK: return L.k;
    case kV: return L.v;
    case kO: return L.o;
    case kGate: return L.gate;
    case kUp: return L.up;
    case kDown: return L.down;
    default: fail("layer_linear: bad linear kind {}", kind);
  }
}

const std::shared_ptr<Linear>& layer_linear(const LayerWeights& L, int kind) {
  return layer_linear(const_cast<LayerWeights&>(L), kind);
}

std::shared_ptr<const Tokenizer> borrow_tokenizer(const Llama& model) {
  if (!model.has_tokenizer()) return nullptr;
  // Aliasing constructor with an empty owner: points at the model's tokenizer, owns nothing.
  return std::shared_ptr<const Tokenizer>(std::shared_ptr<const Tokenizer>(), &model.tokenizer());
}

Arch model_arch(const Llama& model, int group_size) { return weights_arch(model.config(), model.weights(), group_size); }

Arch weights_arch(const ModelConfig& c, const LlamaWeights& w, int group_size) {
  Arch a;
  a.base = c;
  a.base.layer_kv_heads.clear();
  a.base.layer_intermediate.clear();
  a.group_size = group_size;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerArch la;
    la.kv_heads = c.kv_heads(l);
    la.mlp_channels = c.mlp_width(l);
    const LayerWeights& L = w.layers[l];
    for (int k = 0; k < kNumLinears; ++k) {
      const auto& lin = layer_linear(L, k);
      la.bits[k] = lin && !linear_dropped(*lin) ? lin->bits() : 16;
    }
    a.layers.push_back(std::move(la));
  }
  return a;
}

int packed_group_size(const Llama& model) { return packed_group_size(model.weights()); }

int packed_group_size(const LlamaWeights& w) {
  int g = 0;
  auto see = [&](const std::shared_ptr<Linear>& l) {
    if (l && l->is_packed()) g = std::max(g, l->packed_layout()->group);
  };
  see(w.lm_head);
  for (const auto& L : w.layers)
    for (int k = 0; k < kNumLinears; ++k) see(layer_linear(L, k));
  return g > 0 ? g : 128;
}

}  // namespace llmc
