#include "llmc/export/discretize.h"

#include <ATen/ATen.h>

#include <numeric>

#include "llmc/core/error.h"
#include "llmc/quant/quant.h"

namespace llmc {

namespace {

std::vector<int64_t> kept(const std::vector<int64_t>& order, int64_t n, int64_t keep) {
  std::vector<int64_t> idx(order);
  if (idx.empty()) {
    idx.resize(n);
    std::iota(idx.begin(), idx.end(), 0);
  }
  idx.resize(keep);
  return idx;
}

at::Tensor index_tensor(const std::vector<int64_t>& v) { return at::tensor(v, at::kLong); }

}  // namespace

std::unique_ptr<Llama> discretize(const Llama& model, const Arch& arch) {
  const ModelConfig& src = model.config();
  check_arch_matches(arch, src, "arch");
  arch.validate("arch");
  LLMC_CHECK(src.layer_kv_heads.empty() && src.layer_intermediate.empty(),
             "discretize: the model is already sliced (per-layer widths set)");
  ModelConfig c = src;
  c.layer_kv_heads.clear();
  c.layer_intermediate.clear();
  const int64_t hd = c.head_dim, g = c.num_heads / c.num_kv_heads;
  const auto& w = model.weights();
  LlamaWeights out;
  out.embed = w.embed.to(at::kFloat);
  out.final_norm = w.final_norm.to(at::kFloat);
  out.lm_head = c.tie_word_embeddings ? std::make_shared<DenseLinear>(out.embed)
                                      : std::make_shared<DenseLinear>(w.lm_head->dense_weight().to(at::kFloat));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerArch& la = arch.layers[l];
    const LayerWeights& L = w.layers[l];
    LayerWeights O;
    O.input_norm = L.input_norm.to(at::kFloat);
    O.post_attn_norm = L.post_attn_norm.to(at::kFloat);
    // Attention: rows of q (per query head), k, v (per KV head); columns of o (per query head).
    std::vector<int64_t> qrows, kvrows;
    for (int64_t h : kept(la.kv_order, c.num_kv_heads, la.kv_heads)) {
      for (int64_t j = 0; j < g; ++j)
        for (int64_t d = 0; d < hd; ++d) qrows.push_back((h * g + j) * hd + d);
      for (int64_t d = 0; d < hd; ++d) kvrows.push_back(h * hd + d);
    }
    auto rows = [](const std::shared_ptr<Linear>& lin, const std::vector<int64_t>& idx) {
      return std::make_shared<DenseLinear>(
          lin->dense_weight().to(at::kFloat).index_select(0, index_tensor(idx)).contiguous());
    };
    auto cols = [](const std::shared_ptr<Linear>& lin, const std::vector<int64_t>& idx) {
      return std::make_shared<DenseLinear>(
          lin->dense_weight().to(at::kFloat).index_select(1, index_tensor(idx)).contiguous());
    };
    O.q = rows(L.q, qrows);
    O.k = rows(L.k, kvrows);
    O.v = rows(L.v, kvrows);
    O.o = cols(L.o, qrows);
    const auto ch = kept(la.mlp_order, c.intermediate_size, la.mlp_channels);
    O.gate = rows(L.gate, ch);
    O.up = rows(L.up, ch);
    O.down = cols(L.down, ch);
    c.layer_kv_heads.push_back(la.kv_heads);
    c.layer_intermediate.push_back(la.mlp_channels);
    out.layers.push_back(std::move(O));
  }
  c.torch_dtype = "float32";
  c.validate("discretized arch");
  return std::make_unique<Llama>(c, std::move(out), borrow_tokenizer(model));
}

std::unique_ptr<Llama> fake_quant_subnet(const Llama& model, const Arch& arch) {
  auto sub = discretize(model, arch);
  for (int64_t l = 0; l < sub->config().num_layers; ++l) {
    auto& L = sub->weights().layers[l];
    for (int k = 0; k < kNumLinears; ++k) {
      auto& lin = layer_linear(L, k);
      const int bits = arch.layers[l].bits[k];
      if (bits >= 16 || linear_dropped(*lin)) continue;
      const int grp = effective_group(static_cast<int>(lin->in_features()), arch.group_size);
      lin = std::make_shared<DenseLinear>(fake_quantize(lin->dense_weight(), bits, grp));
    }
  }
  return sub;
}

}  // namespace llmc
