#include "llmc/runtime/open.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/runtime/engine.h"
#include "llmc/runtime/folder.h"

namespace llmc {

EngineChoice parse_engine(const std::string& name, const std::string& option) {
  if (name == "auto") return EngineChoice::kAuto;
  if (name == "runtime") return EngineChoice::kRuntime;
  if (name == "torch") return EngineChoice::kTorch;
  fail("{}: '{}' is not auto, runtime or torch", option, name);
}

const char* engine_name(EngineChoice e) {
  switch (e) {
    case EngineChoice::kAuto: return "auto";
    case EngineChoice::kRuntime: return "runtime";
    case EngineChoice::kTorch: return "torch";
  }
  return "?";
}

namespace {

bool all_finite(const at::Tensor& t) { return !t.defined() || t.numel() == 0 || at::isfinite(t).all().item<bool>(); }

// The first weight tensor holding a NaN or Inf, by its checkpoint name; "" when all are finite.
std::string first_non_finite_weight(const Llama& model) {
  const LlamaWeights& w = model.weights();
  if (!all_finite(w.embed)) return "model.embed_tokens.weight";
  static const char* const kHf[kNumLinears] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                               "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                               "mlp.down_proj"};
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    if (!all_finite(L.input_norm)) return fmt::format("model.layers.{}.input_layernorm.weight", l);
    for (int k = 0; k < kNumLinears; ++k) {
      const auto& lin = layer_linear(L, k);
      if (lin && !linear_dropped(*lin) && !all_finite(lin->dense_weight()))
        return fmt::format("model.layers.{}.{}", l, kHf[k]);
    }
    if (!all_finite(L.post_attn_norm)) return fmt::format("model.layers.{}.post_attention_layernorm.weight", l);
  }
  if (!all_finite(w.final_norm)) return "model.norm.weight";
  if (w.lm_head && !all_finite(w.lm_head->dense_weight())) return "lm_head";
  return "";
}

}  // namespace

void check_first_forward(Llama& model, const std::string& path) {
  const ModelConfig& c = model.config();
  const int64_t n = std::min<int64_t>(8, std::max<int64_t>(1, c.max_position_embeddings));
  std::vector<int64_t> ids;
  if (c.bos_token_id >= 0 && c.bos_token_id < c.vocab_size) ids.push_back(c.bos_token_id);
  for (int64_t i = 0; static_cast<int64_t>(ids.size()) < n; ++i) ids.push_back(i % c.vocab_size);
  at::Tensor tokens = at::tensor(ids, at::kLong).unsqueeze(0);  // (1, n)
  at::Tensor logits;
  {
    at::NoGradGuard ng;
    logits = model.forward(tokens);  // (1, n, vocab)
  }
  const int64_t bad = logits.numel() - at::isfinite(logits).sum().item<int64_t>();
  if (bad == 0) return;
  const std::string w = first_non_finite_weight(model);
  fail("{}: the model's first forward gives non-finite logits ({} of {} are NaN or Inf): {}", path, bad,
       logits.numel(),
       w.empty() ? std::string("every weight is finite, the values overflow in the forward")
                 : "corrupt weights, '" + w + "' holds a NaN or Inf");
}

std::unique_ptr<Llama> open_model(const std::string& path, const LoadOptions& opts, EngineChoice engine) {
  std::unique_ptr<Llama> model;
  if (is_exported_folder(path)) {
    model = load_exported(path, opts, engine != EngineChoice::kTorch);
  } else {
    model = load_llama(path, opts);
    if (engine == EngineChoice::kRuntime) {
      if (model->dtype() != at::kFloat) fail("{}: --engine runtime needs --dtype float32", path);
      // The runtime model shares the loaded weights (tensors and linears are reference counted)
      // and the tokenizer, so the reference Llama can go.
      model = std::make_unique<RuntimeLlama>(model->config(), model->weights(), model->tokenizer_ptr());
    }
  }
  if (opts.check_logits) check_first_forward(*model, path);
  return model;
}

bool runs_on_runtime(const Llama& model) { return dynamic_cast<const RuntimeLlama*>(&model) != nullptr; }

}  // namespace llmc
