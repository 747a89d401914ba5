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

// Layer index of an HF per-layer name ("model.layers.N.…"), -1 for the others.
int64_t hf_layer(const std::string& hf) {
  if (hf.rfind("model.layers.", 0) != 0) return -1;
  return std::stoll(hf.substr(13));
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Whether an HF per-layer name belongs to the attention block (else the MLP block).
bool attention_part(const std::string& hf) {
  return hf.find(".self_attn.") != std::string::npos || ends_with(hf, "input_layernorm.weight");
}

// Expected HF shape of a tensor under config c ({} for an unknown name); per-layer widths apply.
std::vector<int64_t> expected_shape(const std::string& hf, const ModelConfig& c) {
  if (hf == "model.embed_tokens.weight" || hf == "lm_head.weight") return {c.vocab_size, c.hidden_size};
  if (hf == "model.norm.weight") return {c.hidden_size};
  const int64_t l = hf_layer(hf);
  if (l < 0 || l >= c.num_layers) return {};
  const int64_t q = c.q_heads(l) * c.head_dim, kv = c.kv_heads(l) * c.head_dim, I = c.mlp_width(l);
  if (ends_with(hf, "q_proj.weight")) return {q, c.hidden_size};
  if (ends_with(hf, "k_proj.weight") || ends_with(hf, "v_proj.weight")) return {kv, c.hidden_size};
  if (ends_with(hf, "o_proj.weight")) return {c.hidden_size, q};
  if (ends_with(hf, "gate_proj.weight") || ends_with(hf, "up_proj.weight")) return {I, c.hidden_size};
  if (ends_with(hf, "down_proj.weight")) return {c.hidden_size, I};
  if (ends_with(hf, "layernorm.weight")) return {c.hidden_size};
  return {};
}

// A per-layer count: an array of block_count integers (deci) or one positive integer for all.
std::vector<int64_t> per_layer(const GGUFFile& f, const std::string& key, int64_t n_layers) {
  const GGUFValue& v = f.get(key);
  if (v.type == GGUFType::ARRAY) {
    const auto a = f.get_i32_array(key);
    if (static_cast<int64_t>(a.size()) != n_layers)
      fail("{}: metadata '{}' has {} entries, block_count is {}", f.path(), key, a.size(), n_layers);
    std::vector<int64_t> out;
    for (size_t l = 0; l < a.size(); ++l) {
      if (a[l] < 0) fail("{}: metadata '{}' entry {} is negative ({})", f.path(), key, l, a[l]);
      out.push_back(a[l]);
    }
    return out;
  }
  return std::vector<int64_t>(static_cast<size_t>(n_layers), positive(f, key.c_str()));
}

// Layers listed in an llmcompress.filler_* key (blocks our GGUF export filled in for llama.cpp).
std::vector<bool> filler_layers(const GGUFFile& f, const char* key, int64_t n_layers) {
  std::vector<bool> out(static_cast<size_t>(n_layers), false);
  if (!f.has(key)) return out;
  for (int32_t l : f.get_i32_array(key)) {
    if (l < 0 || l >= n_layers) fail("{}: metadata '{}' names layer {}, block_count is {}", f.path(), key, l, n_layers);
    out[static_cast<size_t>(l)] = true;
  }
  return out;
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
  if (arch != "llama" && arch != "deci")
    fail("{}: unsupported architecture '{}' (only general.architecture = 'llama' or 'deci' GGUF files can be loaded)",
         path, arch);
  const std::string P = arch + ".";
  auto key = [&](const char* k) { return P + k; };

  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = positive(f, key("embedding_length").c_str());
  c.num_layers = positive(f, key("block_count").c_str());
  constexpr int64_t kMaxDim = int64_t(1) << 24;
  if (c.num_layers > kMaxDim) fail("{}: {}block_count {} is implausibly large (corrupt file?)", path, P, c.num_layers);
  // Per-layer widths: llama files hold one value, deci files (pruned models) one per layer.
  std::vector<int64_t> ff = per_layer(f, key("feed_forward_length"), c.num_layers);
  std::vector<int64_t> heads = per_layer(f, key("attention.head_count"), c.num_layers);
  std::vector<int64_t> kvs = f.has(key("attention.head_count_kv")) ? per_layer(f, key("attention.head_count_kv"), c.num_layers)
                                                                   : heads;
  const auto filler_attn = filler_layers(f, "llmcompress.filler_attention", c.num_layers);
  const auto filler_ffn = filler_layers(f, "llmcompress.filler_ffn", c.num_layers);
  int64_t group = 0, max_kv = 0, max_ff = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (int64_t v : {ff[l], heads[l], kvs[l]})
      if (v > kMaxDim) fail("{}: {}* size {} is implausibly large (corrupt file?)", path, P, v);
    if (kvs[l] == 0 && heads[l] > 0)
      fail("{}: layer {} has {} query heads and no KV head (deci 'linear attention'), which is not supported", path,
           l, heads[l]);
    if (kvs[l] > 0) {
      if (heads[l] % kvs[l] != 0)
        fail("{}: layer {}: head_count {} is not a multiple of head_count_kv {}", path, l, heads[l], kvs[l]);
      const int64_t g = heads[l] / kvs[l];
      if (group && g != group)
        fail("{}: layer {} has {} query heads per KV head, an earlier layer {}: not supported", path, l, g, group);
      group = g;
    }
    if (filler_attn[l]) heads[l] = kvs[l] = 0;
    if (filler_ffn[l]) ff[l] = 0;
    max_kv = std::max(max_kv, kvs[l]);
    max_ff = std::max(max_ff, ff[l]);
  }
  if (max_kv == 0) fail("{}: no layer has attention heads", path);
  if (max_ff == 0) fail("{}: no layer has an MLP (feed_forward_length is 0 everywhere)", path);
  c.num_kv_heads = max_kv;
  c.num_heads = max_kv * group;
  c.intermediate_size = max_ff;
  for (int64_t l = 0; l < c.num_layers; ++l)
    if (kvs[l] != max_kv || ff[l] != max_ff) {
      c.layer_kv_heads = kvs;
      c.layer_intermediate = ff;
      break;
    }
  for (int64_t v : {c.hidden_size, c.num_heads})
    if (v > kMaxDim) fail("{}: {}* size {} is implausibly large (corrupt file?)", path, P, v);
  c.rms_norm_eps = f.get_f32(key("attention.layer_norm_rms_epsilon"));
  c.rope_theta = f.get_f32_or(key("rope.freq_base"), 10000.0f);
  c.max_position_embeddings = f.has(key("context_length")) ? positive(f, key("context_length").c_str()) : 2048;

  if (f.has("tokenizer.ggml.tokens")) {
    const GGUFValue& toks = f.get("tokenizer.ggml.tokens");
    if (toks.type != GGUFType::ARRAY || toks.elem_type != GGUFType::STRING)
      fail("{}: metadata 'tokenizer.ggml.tokens' is not an array of strings", path);
    c.vocab_size = static_cast<int64_t>(toks.array.size());
  } else if (f.has(key("vocab_size"))) {
    c.vocab_size = f.get_u32(key("vocab_size"));
  } else {
    fail("{}: neither 'tokenizer.ggml.tokens' nor '{}vocab_size' gives the vocabulary size", path, P);
  }

  if (f.has(key("attention.key_length"))) {
    c.head_dim = positive(f, key("attention.key_length").c_str());
  } else {
    if (heads[0] == 0 || c.hidden_size % heads[0] != 0)
      fail("{}: embedding_length {} is not a multiple of head_count {} (and no attention.key_length)", path,
           c.hidden_size, heads[0]);
    c.head_dim = c.hidden_size / heads[0];
  }
  if (c.head_dim > kMaxDim) fail("{}: llama.attention.key_length {} is implausibly large", path, c.head_dim);
  if (f.has(key("attention.value_length")) && f.get_u32(key("attention.value_length")) != c.head_dim)
    fail("{}: attention.value_length {} differs from the key length {} (not a Llama layout)", path,
         f.get_u32(key("attention.value_length")), c.head_dim);
  if (f.has(key("rope.dimension_count")) && f.get_u32(key("rope.dimension_count")) != c.head_dim)
    fail("{}: rope.dimension_count {} differs from head_dim {}: partial rotary embeddings are not supported", path,
         f.get_u32(key("rope.dimension_count")), c.head_dim);
  if (f.has(key("rope.scaling.type"))) {
    const std::string t = f.get_string(key("rope.scaling.type"));
    if (t != "none" && !t.empty()) fail("{}: rope scaling '{}' is not supported", path, t);
  }
  if (f.has(key("expert_count")) && f.get_u32(key("expert_count")) > 0)
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
  const std::string arch = f.get_string("general.architecture");
  // Whether layer l has its attention / MLP block (0 heads or 0 channels: absent).
  auto has_block = [&](int64_t l, bool attention) { return attention ? c.kv_heads(l) > 0 : c.mlp_width(l) > 0; };
  const auto filler_attn = filler_layers(f, "llmcompress.filler_attention", c.num_layers);
  const auto filler_ffn = filler_layers(f, "llmcompress.filler_ffn", c.num_layers);

  // Validate names and shapes of everything first, so a bad file fails before minutes of work.
  std::vector<std::pair<const GGUFTensorInfo*, std::string>> plan;
  std::map<std::string, bool> seen;
  for (const auto& t : f.tensors()) {
    const std::string hf = gguf_llama_hf_name(t.name);
    if (hf.empty()) fail("{}: tensor '{}' is not part of a Llama model (unsupported variant)", path, t.name);
    const int64_t layer = hf_layer(hf);
    if (layer >= c.num_layers)
      fail("{}: tensor '{}' belongs to layer {}, but block_count is {}", path, t.name, layer, c.num_layers);
    if (layer >= 0 && !has_block(layer, attention_part(hf))) {
      // A block our export filled in for llama.cpp (exact zeros) is skipped; any other tensor of an
      // absent block contradicts the metadata.
      if ((attention_part(hf) ? filler_attn : filler_ffn)[static_cast<size_t>(layer)]) continue;
      fail("{}: tensor '{}' belongs to a block that {}.* metadata gives 0 {} in layer {}", path, t.name, arch,
           attention_part(hf) ? "heads" : "channels", layer);
    }
    const auto want = expected_shape(hf, c);
    if (t.shape() != want)
      fail("{}: tensor '{}' has shape {} (row-major), expected {} from the {}.* metadata", path, t.name,
           shape_str(t.shape()), shape_str(want), arch);
    seen[hf] = true;
    plan.emplace_back(&t, hf);
  }
  // 5 attention + 4 MLP tensors per present block, plus embedding and final norm: checked before
  // listing the required names, so a corrupt block_count cannot make that list huge.
  int64_t need = 2;
  for (int64_t l = 0; l < c.num_layers; ++l) need += (has_block(l, true) ? 5 : 0) + (has_block(l, false) ? 4 : 0);
  if (static_cast<int64_t>(plan.size()) < need)
    fail("{}: block_count {} needs at least {} tensors, the file has {}", path, c.num_layers, need, plan.size());
  std::vector<std::string> required = {"model.embed_tokens.weight", "model.norm.weight"};
  if (!c.tie_word_embeddings) required.push_back("lm_head.weight");
  for (int64_t l = 0; l < c.num_layers; ++l)
    for (const auto& ln : kLayerNames) {
      const std::string hf = fmt::format("model.layers.{}.{}", l, ln.hf);
      if (has_block(l, attention_part(hf))) required.push_back(hf);
    }
  for (const auto& r : required)
    if (!seen.count(r)) fail("{}: the Llama weight {} is missing", path, r);

  out.tensors.reserve(plan.size());
  for (const auto& [t, hf] : plan) {
    FloatTensor ft;
    ft.shape = t->shape();
    ft.data = f.dequantize(*t);
    const std::string where = fmt::format("{}: tensor '{}'", path, t->name);
    const int64_t l = hf_layer(hf);
    if (ends_with(hf, "q_proj.weight"))
      unpermute_rope_rows(ft, c.q_heads(l), where);
    else if (ends_with(hf, "k_proj.weight"))
      unpermute_rope_rows(ft, c.kv_heads(l), where);
    out.source_types[hf] = ggml_type_info(static_cast<uint32_t>(t->type))->name;
    out.tensors.emplace_back(hf, std::move(ft));
  }
  // Absent blocks: empty linears (0 rows or 0 inputs; the forward skips the block) and unit norms.
  for (int64_t l = 0; l < c.num_layers; ++l)
    for (const auto& ln : kLayerNames) {
      const std::string hf = fmt::format("model.layers.{}.{}", l, ln.hf);
      if (has_block(l, attention_part(hf))) continue;
      FloatTensor ft;
      ft.shape = expected_shape(hf, c);
      ft.data.assign(static_cast<size_t>(ft.numel()), 1.0f);  // only the norms have elements
      out.tensors.emplace_back(hf, std::move(ft));
    }
  spdlog::debug("{}: {} Llama tensors dequantized to fp32", path, out.tensors.size());
  return out;
}

}  // namespace llmc
