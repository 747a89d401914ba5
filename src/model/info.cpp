#include "llmc/model/info.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "llmc/model/load.h"

namespace llmc {

namespace {

nlohmann::ordered_json info(const Llama& m, const std::string& path) {
  const auto& c = m.config();
  const auto& w = m.weights();
  int64_t attn = 0, mlp = 0, norms = w.final_norm.numel();
  for (const auto& L : w.layers) {
    attn += L.q->in_features() * L.q->out_features() + L.k->in_features() * L.k->out_features() +
            L.v->in_features() * L.v->out_features() + L.o->in_features() * L.o->out_features();
    mlp += L.gate->in_features() * L.gate->out_features() + L.up->in_features() * L.up->out_features() +
           L.down->in_features() * L.down->out_features();
    norms += L.input_norm.numel() + L.post_attn_norm.numel();
  }
  const int64_t embed = w.embed.numel();
  const int64_t head = c.tie_word_embeddings ? 0 : w.lm_head->in_features() * w.lm_head->out_features();
  nlohmann::ordered_json j;
  j["path"] = path;
  j["architecture"] = c.model_type;
  j["config"] = {{"hidden_size", c.hidden_size},
                 {"intermediate_size", c.intermediate_size},
                 {"num_layers", c.num_layers},
                 {"num_heads", c.num_heads},
                 {"num_kv_heads", c.num_kv_heads},
                 {"head_dim", c.head_dim},
                 {"vocab_size", c.vocab_size},
                 {"max_position_embeddings", c.max_position_embeddings},
                 {"rope_theta", c.rope_theta},
                 {"rope_scaling", c.rope_scaling.type.empty() ? "none" : c.rope_scaling.type},
                 {"rms_norm_eps", c.rms_norm_eps},
                 {"tie_word_embeddings", c.tie_word_embeddings}};
  j["parameters"] = {{"embedding", embed}, {"attention", attn}, {"mlp", mlp},
                     {"norms", norms},     {"lm_head", head},   {"total", embed + attn + mlp + norms + head}};
  j["stored_dtype"] = c.torch_dtype;
  j["compute_dtype"] = dtype_option_name(m.dtype());
  if (m.has_tokenizer()) {
    const auto& t = m.tokenizer();
    j["tokenizer"] = {{"type", t.type()}, {"vocab_size", t.vocab_size()}, {"bos_id", t.bos_id()},
                      {"eos_id", t.eos_id()}, {"add_bos", t.add_bos_default()}};
  } else {
    j["tokenizer"] = nullptr;
  }
  return j;
}

}  // namespace

std::string model_info_json(const Llama& m, const std::string& path) { return info(m, path).dump(2); }

std::string model_info_text(const Llama& m, const std::string& path) {
  auto j = info(m, path);
  std::string s = fmt::format("model         {}\narchitecture  {}\n", path, j["architecture"].get<std::string>());
  for (auto& [k, v] : j["config"].items()) s += fmt::format("  {:<24} {}\n", k, v.dump());
  s += "parameters\n";
  for (auto& [k, v] : j["parameters"].items())
    s += fmt::format("  {:<24} {:>14}\n", k, v.get<int64_t>());
  s += fmt::format("dtype         stored {}, compute {}\n", j["stored_dtype"].get<std::string>(),
                   j["compute_dtype"].get<std::string>());
  if (!j["tokenizer"].is_null())
    s += fmt::format("tokenizer     {} ({} tokens, bos {}, eos {})\n", j["tokenizer"]["type"].get<std::string>(),
                     j["tokenizer"]["vocab_size"].get<int>(), j["tokenizer"]["bos_id"].get<int>(),
                     j["tokenizer"]["eos_id"].get<int>());
  return s;
}

}  // namespace llmc
