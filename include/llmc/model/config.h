#pragma once
// Architecture of a Llama-family model (HF config.json, GGUF metadata or an exported folder).
#include <cstdint>
#include <string>
#include <vector>

namespace llmc {

struct RopeScaling {
  std::string type;  // "" (none) or "llama3"
  double factor = 1.0, low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string model_type = "llama";  // llama | mistral
  int64_t hidden_size = 0, intermediate_size = 0, num_layers = 0;
  int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0, vocab_size = 0;
  double rms_norm_eps = 1e-5, rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  int bos_token_id = -1, eos_token_id = -1;
  std::string torch_dtype = "float32";  // as stored
  // Compressed models: per-layer KV heads and MLP channels kept (empty = all layers full width).
  std::vector<int64_t> layer_kv_heads, layer_intermediate;

  int64_t kv_heads(int64_t layer) const { return layer_kv_heads.empty() ? num_kv_heads : layer_kv_heads[layer]; }
  int64_t q_heads(int64_t layer) const { return kv_heads(layer) * (num_heads / num_kv_heads); }
  int64_t mlp_width(int64_t layer) const {
    return layer_intermediate.empty() ? intermediate_size : layer_intermediate[layer];
  }
  // Throws llmc::Error (prefixed with `where`) on inconsistent values.
  void validate(const std::string& where) const;
};

// Parses a Hugging Face config.json. Throws llmc::Error naming the file and key on problems.
ModelConfig load_hf_config(const std::string& config_json_path);
// Parses the same from a JSON string (`where` names the source in errors).
ModelConfig parse_hf_config(const std::string& json_text, const std::string& where);
// The inverse, for writers (exported folders, tests).
std::string hf_config_to_json(const ModelConfig& c);

}  // namespace llmc
