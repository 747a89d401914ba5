#include "llmc/model/config.h"

#include <limits>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"

namespace llmc {

using json = nlohmann::json;

namespace {

// nlohmann converts 5.5 to an int64 5 without a word: integer keys must hold integers.
template <typename T>
void check_integer(const json& j, const char* key, const std::string& where) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    const json& v = j.at(key);
    if (v.is_number_float()) fail("{}: key '{}' must be an integer (got {})", where, key, v.dump());
  }
}

template <typename T>
T get_req(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key)) fail("{}: missing required key '{}'", where, key);
  check_integer<T>(j, key, where);
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    fail("{}: key '{}' has the wrong type ({})", where, key, j.at(key).dump());
  }
}

template <typename T>
T get_opt(const json& j, const char* key, T dflt, const std::string& where) {
  if (!j.contains(key) || j.at(key).is_null()) return dflt;
  check_integer<T>(j, key, where);
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    fail("{}: key '{}' has the wrong type ({})", where, key, j.at(key).dump());
  }
}

// A token id, or the first of a list of them; -1 when absent or null.
int first_id(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || j.at(key).is_null()) return -1;
  const json& v = j.at(key);
  const json* id = v.is_array() ? (v.empty() ? nullptr : &v[0]) : &v;
  if (!id) return -1;
  if (!id->is_number_integer()) fail("{}: key '{}' must be a token id, an integer (got {})", where, key, v.dump());
  const int64_t x = id->get<int64_t>();
  if (x < 0 || x > std::numeric_limits<int>::max())
    fail("{}: key '{}' is {}, not a token id (expected >= 0, or null for none)", where, key, x);
  return static_cast<int>(x);
}

}  // namespace

void ModelConfig::validate(const std::string& where) const {
  auto pos = [&](int64_t v, const char* name) {
    if (v <= 0) fail("{}: {} must be positive (got {})", where, name, v);
  };
  pos(hidden_size, "hidden_size");
  pos(intermediate_size, "intermediate_size");
  pos(num_layers, "num_hidden_layers");
  pos(num_heads, "num_attention_heads");
  pos(num_kv_heads, "num_key_value_heads");
  pos(head_dim, "head_dim");
  pos(vocab_size, "vocab_size");
  if (num_heads % num_kv_heads != 0)
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", where, num_heads, num_kv_heads);
  pos(max_position_embeddings, "max_position_embeddings");
  if (bos_token_id >= vocab_size || eos_token_id >= vocab_size)
    fail("{}: bos_token_id {} / eos_token_id {} outside the vocabulary of {} tokens", where, bos_token_id,
         eos_token_id, vocab_size);
  if (head_dim % 2 != 0) fail("{}: head_dim {} must be even for RoPE", where, head_dim);
  if (rms_norm_eps <= 0) fail("{}: rms_norm_eps must be positive", where);
  if (rope_theta <= 0) fail("{}: rope_theta must be positive", where);
  if (!rope_scaling.type.empty() && rope_scaling.type != "llama3")
    fail("{}: rope_scaling type '{}' is not supported (null or llama3)", where, rope_scaling.type);
  if (!layer_kv_heads.empty() && static_cast<int64_t>(layer_kv_heads.size()) != num_layers)
    fail("{}: layer_kv_heads has {} entries, expected {}", where, layer_kv_heads.size(), num_layers);
  if (!layer_intermediate.empty() && static_cast<int64_t>(layer_intermediate.size()) != num_layers)
    fail("{}: layer_intermediate has {} entries, expected {}", where, layer_intermediate.size(), num_layers);
  for (auto h : layer_kv_heads)
    if (h < 0 || h > num_kv_heads) fail("{}: layer_kv_heads value {} out of range", where, h);
  for (auto w : layer_intermediate)
    if (w < 0 || w > intermediate_size) fail("{}: layer_intermediate value {} out of range", where, w);
}

ModelConfig parse_hf_config(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", where, e.what());
  }
  if (!j.is_object()) fail("{}: expected a JSON object", where);
  ModelConfig c;
  c.model_type = get_opt<std::string>(j, "model_type", "", where);
  if (c.model_type.empty()) {
    std::string arch;
    if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
        j["architectures"][0].is_string())
      arch = j["architectures"][0].get<std::string>();
    if (arch == "LlamaForCausalLM") c.model_type = "llama";
    else if (arch == "MistralForCausalLM") c.model_type = "mistral";
    else fail("{}: missing required key 'model_type'", where);
  }
  if (c.model_type != "llama" && c.model_type != "mistral")
    fail("{}: unsupported architecture model_type='{}' (supported: llama, mistral)", where, c.model_type);
  c.hidden_size = get_req<int64_t>(j, "hidden_size", where);
  c.intermediate_size = get_req<int64_t>(j, "intermediate_size", where);
  c.num_layers = get_req<int64_t>(j, "num_hidden_layers", where);
  c.num_heads = get_req<int64_t>(j, "num_attention_heads", where);
  c.num_kv_heads = get_opt<int64_t>(j, "num_key_value_heads", c.num_heads, where);
  c.vocab_size = get_req<int64_t>(j, "vocab_size", where);
  c.head_dim = get_opt<int64_t>(j, "head_dim", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0, where);
  c.rms_norm_eps = get_opt<double>(j, "rms_norm_eps", 1e-6, where);
  c.rope_theta = get_opt<double>(j, "rope_theta", 10000.0, where);
  c.max_position_embeddings = get_opt<int64_t>(j, "max_position_embeddings", 2048, where);
  c.tie_word_embeddings = get_opt<bool>(j, "tie_word_embeddings", false, where);
  c.bos_token_id = first_id(j, "bos_token_id", where);
  c.eos_token_id = first_id(j, "eos_token_id", where);
  c.torch_dtype = get_opt<std::string>(j, "torch_dtype", "float32", where);
  std::string act = get_opt<std::string>(j, "hidden_act", "silu", where);
  if (act != "silu") fail("{}: hidden_act '{}' is not supported (silu)", where, act);
  if (get_opt<bool>(j, "attention_bias", false, where)) fail("{}: attention_bias=true is not supported", where);
  if (get_opt<bool>(j, "mlp_bias", false, where)) fail("{}: mlp_bias=true is not supported", where);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    const json& rs = j["rope_scaling"];
    if (!rs.is_object()) fail("{}: rope_scaling must be null or an object", where);
    std::string type = get_opt<std::string>(rs, "rope_type", get_opt<std::string>(rs, "type", "", where), where);
    if (type == "default") type = "";
    c.rope_scaling.type = type;
    c.rope_scaling.factor = get_opt<double>(rs, "factor", 1.0, where);
    c.rope_scaling.low_freq_factor = get_opt<double>(rs, "low_freq_factor", 1.0, where);
    c.rope_scaling.high_freq_factor = get_opt<double>(rs, "high_freq_factor", 4.0, where);
    c.rope_scaling.original_max_position_embeddings =
        get_opt<int64_t>(rs, "original_max_position_embeddings", 8192, where);
  }
  if (j.contains("llmc_layer_kv_heads")) c.layer_kv_heads = get_req<std::vector<int64_t>>(j, "llmc_layer_kv_heads", where);
  if (j.contains("llmc_layer_intermediate"))
    c.layer_intermediate = get_req<std::vector<int64_t>>(j, "llmc_layer_intermediate", where);
  c.validate(where);
  return c;
}

ModelConfig load_hf_config(const std::string& path) {
  if (!file_exists(path)) fail("{}: config.json not found", path);
  return parse_hf_config(read_text_file(path), path);
}

std::string hf_config_to_json(const ModelConfig& c) {
  json j = {{"architectures", {c.model_type == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"}},
            {"model_type", c.model_type},
            {"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"num_hidden_layers", c.num_layers},
            {"num_attention_heads", c.num_heads},
            {"num_key_value_heads", c.num_kv_heads},
            {"head_dim", c.head_dim},
            {"vocab_size", c.vocab_size},
            {"rms_norm_eps", c.rms_norm_eps},
            {"rope_theta", c.rope_theta},
            {"max_position_embeddings", c.max_position_embeddings},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"hidden_act", "silu"},
            {"torch_dtype", c.torch_dtype}};
  j["bos_token_id"] = c.bos_token_id >= 0 ? json(c.bos_token_id) : json(nullptr);
  j["eos_token_id"] = c.eos_token_id >= 0 ? json(c.eos_token_id) : json(nullptr);
  if (c.rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
  } else {
    j["rope_scaling"] = {{"rope_type", c.rope_scaling.type},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  }
  if (!c.layer_kv_heads.empty()) j["llmc_layer_kv_heads"] = c.layer_kv_heads;
  if (!c.layer_intermediate.empty()) j["llmc_layer_intermediate"] = c.layer_intermediate;
  return j.dump(2);
}

}  // namespace llmc
