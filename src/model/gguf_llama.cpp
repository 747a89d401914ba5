// Llama-architecture GGUF -> Hugging Face LlamaForCausalLM layout: config from llama.* metadata,
// tensor renaming, fp32 dequantization, shape checks and the q/k RoPE row order.
#include <fmt/ranges.h>

#include <cstring>

#include "llmc/core/error.h"
#include "llmc/core/log.h"
#include "llmc/model/gguf_llama.h"

namespace llmc {

int64_t FloatTensor::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

namespace {

// Token ids stored as uint32; llama.cpp writes 0xFFFFFFFF (-1) for "none".
int token_id_or_none(const GGUFFile& f, const char* key, int64_t vocab) {
  if (!f.has(key)) return -1;
  const uint32_t id = f.get_u32(key);
  if (id == 0xffffffffu) return -1;
  if (static_cast<int64_t>(id) >= vocab)
    fail("{}: metadata '{}' = {} is outside the vocabulary ({} tokens)", f.path(), key, id, vocab);
  return static_cast<int>(id);
}

int64_t positive(const GGUFFile& f, const char* key) {
  const uint32_t v = f.get_u32(key);
  if (v == 0) fail("{}: metadata '{}' must be positive", f.path(), key);
  return v;
}

std::string shape_str(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

// Per-layer suffixes: llama.cpp name after "blk.N." -> HF name after "model.layers.N.".
struct LayerName {
  const char* gguf;
  const char* hf;
};
constexpr LayerName kLayerNames[] = {
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
    {"attn_norm.weight", "input_layernorm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
};

// Expected HF shape of a tensor under config c ({} for an unknown name).
std::vector<int64_t> expected_shape(const std::string& hf, const ModelConfig& c) {
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  if (hf == "model.embed_tokens.weight" || hf == "lm_head.weight") return {c.vocab_size, c.hidden_size};
  if (hf == "model.norm.weight") return {c.hidden_size};
  auto ends = [&](const char* s) {
    const size_t n = std::strlen(s);
    return hf.size() >= n && hf.compare(hf.size() - n, n, s) == 0;
  };
  if (ends("q_proj.weight")) return {q, c.hidden_size};
  if (ends("k_proj.weight") || ends("v_proj.weight")) return {kv, c.hidden_size};
  if (ends("o_proj.weight")) return {c.hidden_size, q};
  if (ends("gate_proj.weight") || ends("up_proj.weight")) return {c.intermediate_size, c.hidden_size};
  if (ends("down_proj.weight")) return {c.hidden_size, c.intermediate_size};
  if (ends("layernorm.weight")) return {c.hidden_size};
  return {};
}

}  // namespace

std::string gguf_llama_hf_name(const std::string& name) {
  if (name == "token_embd.weight") return "model.embed_tokens.weight";
  if (name == "output_norm.weight") return "model.norm.weight";
  if (name == "output.weight") return "lm_head.weight";
  if (name.rfind("blk.", 0) != 0) return "";
  size_t p = 4, digits = 0;
  while (p < name.size() && name[p] >= '0' && name[p] <= '9') ++p, ++digits;
  if (digits == 0 || digits > 6 || p >= name.size() || name[p] != '.') return "";
  if (digits > 1 && name[4] == '0') return "";  // "blk.01" is not a name llama.cpp writes
  const std::string layer = name.substr(4, digits), rest = name.substr(p + 1);
  for (const auto& ln : kLayerNames)
    if (rest == ln.gguf) return "model.layers." + layer + "." + ln.hf;
  return "";
}

void unpermute_rope_rows(FloatTensor& w, int64_t n_heads, const std::string& where) {
  if (w.shape.size() != 2) fail("{}: expected a 2-D projection, got shape {}", where, shape_str(w.shape));
  const int64_t rows = w.shape[0], cols = w.shape[1];
  if (n_heads <= 0 || rows % n_heads != 0 || (rows / n_heads) % 2 != 0)
    fail("{}: {} rows cannot be split into {} heads of even size", where, rows, n_heads);
  if (static_cast<int64_t>(w.data.size()) != rows * cols)
    fail("{}: {} values do not match shape {}", where, w.data.size(), shape_str(w.shape));
  const int64_t hd = rows / n_heads, half = hd / 2;
  std::vector<float> out(w.data.size());
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t j = 0; j < half; ++j) {
      const float* even = &w.data[static_cast<size_t>((h * hd + 2 * j) * cols)];
      const float* odd = even + cols;
      std::memcpy(&out[static_cast<size_t>((h * hd + j) * cols)], even, sizeof(float) * cols);
      std::memcpy(&out[static_cast<size_t>((h * hd + half + j) * cols)], odd, sizeof(float) * cols);
    }
  }
  w.data = std::move(out);
}

ModelConfig gguf_llama_config(const GGUFFile& f) {
  const std::string& path = f.path();
  if (!f.has("general.architecture")) fail("{}: metadata 'general.architecture' is missing", path);
  const std::string arch = f.get_string("general.architecture");
  if (arch != "llama")
    fail("{}: unsupported architecture '{}' (only general.architecture = 'llama' GGUF files can be loaded)", path,
         arch);

  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = positive(f, "llama.embedding_length");
  c.intermediate_size = positive(f, "llama.feed_forward_length");
  c.num_layers = positive(f, "llama.block_count");
  c.num_heads = positive(f, "llama.attention.head_count");
  c.num_kv_heads = f.has("llama.attention.head_count_kv") ? positive(f, "llama.attention.head_count_kv") : c.num_heads;
  // Sizes far beyond any real model are corruption; bounding them keeps products like
  // heads * head_dim far from int64 overflow.
  constexpr int64_t kMaxDim = int64_t(1) << 24;
  for (int64_t v : {c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads, c.num_kv_heads})
    if (v > kMaxDim) fail("{}: llama.* size {} is implausibly large (corrupt file?)", path, v);
  c.rms_norm_eps = f.get_f32("llama.attention.layer_norm_rms_epsilon");
  c.rope_theta = f.get_f32_or("llama.rope.freq_base", 10000.0f);
  c.max_position_embeddings = f.has("llama.context_length") ? positive(f, "llama.context_length") : 2048;

  if (f.has("tokenizer.ggml.tokens")) {
    const GGUFValue& toks = f.get("tokenizer.ggml.tokens");
    if (toks.type != GGUFType::ARRAY || toks.elem_type != GGUFType::STRING)
      fail("{}: metadata 'tokenizer.ggml.tokens' is not an array of strings", path);
    c.vocab_size = static_cast<int64_t>(toks.array.size());
  } else if (f.has("llama.vocab_size")) {
    c.vocab_size = f.get_u32("llama.vocab_size");
  } else {
    fail("{}: neither 'tokenizer.ggml.tokens' nor 'llama.vocab_size' gives the vocabulary size", path);
  }

  if (f.has("llama.attention.key_length")) {
    c.head_dim = positive(f, "llama.attention.key_length");
  } else {
    if (c.hidden_size % c.num_heads != 0)
      fail("{}: embedding_length {} is not a multiple of head_count {} (and no attention.key_length)", path,
           c.hidden_size, c.num_heads);
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim > kMaxDim) fail("{}: llama.attention.key_length {} is implausibly large", path, c.head_dim);
  if (f.has("llama.attention.value_length") && f.get_u32("llama.attention.value_length") != c.head_dim)
    fail("{}: attention.value_length {} differs from the key length {} (not a Llama layout)", path,
         f.get_u32("llama.attention.value_length"), c.head_dim);
  if (f.has("llama.rope.dimension_count") && f.get_u32("llama.rope.dimension_count") != c.head_dim)
    fail("{}: rope.dimension_count {} differs from head_dim {}: partial rotary embeddings are not supported", path,
         f.get_u32("llama.rope.dimension_count"), c.head_dim);
  if (f.has("llama.rope.scaling.type")) {
    const std::string t = f.get_string("llama.rope.scaling.type");
    if (t != "none" && !t.empty()) fail("{}: rope scaling '{}' is not supported", path, t);
  }
  if (f.has("llama.expert_count") && f.get_u32("llama.expert_count") > 0)
    fail("{}: mixture-of-experts Llama files are not supported", path);

  c.tie_word_embeddings = f.find("output.weight") == nullptr;
  c.bos_token_id = token_id_or_none(f, "tokenizer.ggml.bos_token_id", c.vocab_size);
  c.eos_token_id = token_id_or_none(f, "tokenizer.ggml.eos_token_id", c.vocab_size);
  c.torch_dtype = "float32";
  c.validate(path);
  return c;
}

GGUFLlama read_gguf_llama(const std::string& path) {
  GGUFFile f(path);
  return read_gguf_llama(f);
}

GGUFLlama read_gguf_llama(const GGUFFile& f) {
  const std::string& path = f.path();
  GGUFLlama out;
  out.config = gguf_llama_config(f);
  const ModelConfig& c = out.config;
  out.tokenizer_model = f.get_string_or("tokenizer.ggml.model", "");
  out.name = f.get_string_or("general.name", "");

  // Validate names and shapes of everything first, so a bad file fails before minutes of work.
  std::vector<std::pair<const GGUFTensorInfo*, std::string>> plan;
  std::map<std::string, bool> seen;
  for (const auto& t : f.tensors()) {
    const std::string hf = gguf_llama_hf_name(t.name);
    if (hf.empty()) fail("{}: tensor '{}' is not part of a Llama model (unsupported variant)", path, t.name);
    if (hf.rfind("model.layers.", 0) == 0) {
      const int64_t layer = std::stoll(hf.substr(13));
      if (layer >= c.num_layers)
        fail("{}: tensor '{}' belongs to layer {}, but block_count is {}", path, t.name, layer, c.num_layers);
    }
    const auto want = expected_shape(hf, c);
    if (t.shape() != want)
      fail("{}: tensor '{}' has shape {} (row-major), expected {} from the llama.* metadata", path, t.name,
           shape_str(t.shape()), shape_str(want));
    seen[hf] = true;
    plan.emplace_back(&t, hf);
  }
  // 9 tensors per layer plus embedding and final norm: checked before listing the required names,
  // so a corrupt block_count cannot make that list huge.
  if (static_cast<int64_t>(f.tensors().size()) < 9 * c.num_layers + 2)
    fail("{}: block_count {} needs at least {} tensors, the file has {}", path, c.num_layers, 9 * c.num_layers + 2,
         f.tensors().size());
  std::vector<std::string> required = {"model.embed_tokens.weight", "model.norm.weight"};
  if (!c.tie_word_embeddings) required.push_back("lm_head.weight");
  for (int64_t l = 0; l < c.num_layers; ++l)
    for (const auto& ln : kLayerNames) required.push_back(fmt::format("model.layers.{}.{}", l, ln.hf));
  for (const auto& r : required)
    if (!seen.count(r)) fail("{}: the Llama weight {} is missing", path, r);

  out.tensors.reserve(plan.size());
  for (const auto& [t, hf] : plan) {
    FloatTensor ft;
    ft.shape = t->shape();
    ft.data = f.dequantize(*t);
    const std::string where = fmt::format("{}: tensor '{}'", path, t->name);
    if (hf.size() > 13 && hf.compare(hf.size() - 13, 13, "q_proj.weight") == 0)
      unpermute_rope_rows(ft, c.num_heads, where);
    else if (hf.size() > 13 && hf.compare(hf.size() - 13, 13, "k_proj.weight") == 0)
      unpermute_rope_rows(ft, c.num_kv_heads, where);
    out.source_types[hf] = ggml_type_info(static_cast<uint32_t>(t->type))->name;
    out.tensors.emplace_back(hf, std::move(ft));
  }
  spdlog::debug("{}: {} Llama tensors dequantized to fp32", path, out.tensors.size());
  return out;
}

}  // namespace llmc
