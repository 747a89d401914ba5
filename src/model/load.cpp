#include "llmc/model/load.h"

#include <ATen/ATen.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/json_file.h"
#include "llmc/model/gguf_llama.h"
#include "llmc/io/safetensors.h"
#include "llmc/tokenizer/bpe.h"
#include "llmc/tokenizer/sentencepiece.h"

namespace llmc {

using json = nlohmann::json;

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  fail("--dtype: unsupported compute dtype '{}' (float32 or bfloat16)", name);
}

const char* dtype_option_name(at::ScalarType t) { return t == at::kBFloat16 ? "bfloat16" : "float32"; }

namespace {

std::string layer_name(int64_t l, const char* rest) { return fmt::format("model.layers.{}.{}", l, rest); }

// The safetensors files of an HF folder, indexed by tensor name.
class SafetensorsFolder {
 public:
  explicit SafetensorsFolder(const std::string& dir) {
    const std::string single = path_join(dir, "model.safetensors");
    const std::string index = path_join(dir, "model.safetensors.index.json");
    if (file_exists(single)) {
      add(single);
    } else if (file_exists(index)) {
      json j;
      try {
        j = json::parse(read_text_file(index));
      } catch (const json::exception& e) {
        fail("{}: not valid JSON ({})", index, e.what());
      }
      if (!j.contains("weight_map") || !j["weight_map"].is_object()) fail("{}: missing 'weight_map' object", index);
      std::map<std::string, size_t> opened;
      for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
        if (!it.value().is_string()) fail("{}: weight_map['{}'] is not a file name", index, it.key());
        std::string shard = it.value().get<std::string>();
        if (shard.find('/') != std::string::npos) fail("{}: shard name '{}' must be a plain file name", index, shard);
        if (!opened.count(shard)) {
          std::string p = path_join(dir, shard);
          if (!file_exists(p)) fail("{}: shard '{}' listed in the index does not exist", index, shard);
          opened[shard] = add(p);
        }
        const auto* f = files_[opened[shard]].get();
        if (!f->find(it.key())) fail("{}: tensor '{}' is not in shard {}", index, it.key(), shard);
      }
    } else {
      fail("{}: no model.safetensors or model.safetensors.index.json", dir);
    }
  }

  // float32 copy of tensor `name` (undefined when absent).
  at::Tensor get(const std::string& name) const {
    auto it = where_.find(name);
    if (it == where_.end()) return {};
    const SafetensorsFile& f = *files_[it->second];
    const TensorInfo& t = *f.find(name);
    at::ScalarType st;
    switch (t.dtype) {
      case DType::F32: st = at::kFloat; break;
      case DType::F16: st = at::kHalf; break;
      case DType::BF16: st = at::kBFloat16; break;
      default: fail("{}: tensor '{}' has dtype {}, expected F32, F16 or BF16", f.path(), name, dtype_name(t.dtype));
    }
    auto view = at::from_blob(const_cast<uint8_t*>(f.data(t)), t.shape, at::TensorOptions().dtype(st));
    return view.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  }
  // The layers the tensors hold: 1 + the largest N of a "model.layers.N." name (0 when none).
  int64_t layers_present() const {
    const std::string prefix = "model.layers.";
    int64_t n = 0;
    for (const auto& [name, file] : where_) {
      if (name.compare(0, prefix.size(), prefix) != 0) continue;
      size_t i = prefix.size();
      int64_t l = 0;
      while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && l < (int64_t(1) << 40))
        l = l * 10 + (name[i++] - '0');
      if (i > prefix.size()) n = std::max(n, l + 1);
    }
    return n;
  }
  std::string file_of(const std::string& name) const {
    auto it = where_.find(name);
    return it == where_.end() ? "" : files_[it->second]->path();
  }

 private:
  size_t add(const std::string& path) {
    files_.push_back(std::make_unique<SafetensorsFile>(path));
    for (const auto& t : files_.back()->tensors()) where_[t.name] = files_.size() - 1;
    return files_.size() - 1;
  }
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;
};

}  // namespace

std::unique_ptr<Llama> build_llama(const ModelConfig& c, const TensorSource& source,
                                   std::shared_ptr<const Tokenizer> tokenizer, at::ScalarType dtype,
                                   const std::string& where) {
  auto need = [&](const std::string& name, std::vector<int64_t> shape) {
    at::Tensor t = source(name);
    if (!t.defined()) fail("{}: missing tensor '{}'", where, name);
    if (t.sizes().vec() != shape)
      fail("{}: tensor '{}' has shape {} but config.json implies {}", where, name, fmt::join(t.sizes(), "x"),
           fmt::join(shape, "x"));
    return t.to(dtype).contiguous();
  };
  const int64_t H = c.hidden_size, hd = c.head_dim;
  LlamaWeights w;
  w.embed = need("model.embed_tokens.weight", {c.vocab_size, H});
  w.final_norm = need("model.norm.weight", {H});
  if (c.tie_word_embeddings) {
    w.lm_head = std::make_shared<DenseLinear>(w.embed);
  } else {
    w.lm_head = std::make_shared<DenseLinear>(need("lm_head.weight", {c.vocab_size, H}));
  }
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const int64_t nq = c.q_heads(l), nkv = c.kv_heads(l), I = c.mlp_width(l);
    LayerWeights L;
    L.input_norm = need(layer_name(l, "input_layernorm.weight"), {H});
    L.post_attn_norm = need(layer_name(l, "post_attention_layernorm.weight"), {H});
    auto lin = [&](const char* n, int64_t out, int64_t in) {
      return std::make_shared<DenseLinear>(need(layer_name(l, n), {out, in}));
    };
    L.q = lin("self_attn.q_proj.weight", nq * hd, H);
    L.k = lin("self_attn.k_proj.weight", nkv * hd, H);
    L.v = lin("self_attn.v_proj.weight", nkv * hd, H);
    L.o = lin("self_attn.o_proj.weight", H, nq * hd);
    L.gate = lin("mlp.gate_proj.weight", I, H);
    L.up = lin("mlp.up_proj.weight", I, H);
    L.down = lin("mlp.down_proj.weight", H, I);
    w.layers.push_back(std::move(L));
  }
  return std::make_unique<Llama>(c, std::move(w), std::move(tokenizer));
}

std::shared_ptr<const Tokenizer> load_folder_tokenizer(const std::string& dir, const ModelConfig& config) {
  SpecialIds special;
  special.bos = config.bos_token_id;
  special.eos = config.eos_token_id;
  const std::string tc_path = path_join(dir, "tokenizer_config.json");
  if (file_exists(tc_path)) {
    const json tc = read_json_file(tc_path);
    if (tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean()) special.add_bos = tc["add_bos_token"];
  }
  const std::string spm = path_join(dir, "tokenizer.model");
  if (file_exists(spm)) return load_sentencepiece(spm, special);
  const std::string tj = path_join(dir, "tokenizer.json");
  if (file_exists(tj)) return load_bpe_tokenizer_json(tj, file_exists(tc_path) ? tc_path : "");
  return nullptr;
}

bool looks_like_gguf(const std::string& path) {
  if (!file_exists(path)) return false;
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {0};
  f.read(magic, 4);
  return f.gcount() == 4 && std::string(magic, 4) == "GGUF";
}

std::unique_ptr<Llama> load_llama(const std::string& path, const LoadOptions& opts) {
  const at::ScalarType dtype = parse_dtype(opts.dtype);
  if (dir_exists(path)) {
    const std::string cfg_path = path_join(path, "config.json");
    if (!file_exists(cfg_path)) fail("{}: not a model folder (no config.json)", path);
    if (read_text_file(cfg_path).find("\"llmc_format\"") != std::string::npos)
      fail("{}: an llmcompress export, not an original checkpoint (load it with open_model(), runtime/open.h)", path);
    ModelConfig config = load_hf_config(cfg_path);
    SafetensorsFolder st(path);
    // More layers than the config says would be dropped without a word (fewer: a missing tensor).
    if (st.layers_present() > config.num_layers)
      fail("{}: num_hidden_layers is {} but the model's tensors hold {} layers", cfg_path, config.num_layers,
           st.layers_present());
    auto tok = load_folder_tokenizer(path, config);
    if (!tok && opts.need_tokenizer) fail("{}: no tokenizer (tokenizer.model or tokenizer.json) in the folder", path);
    if (tok && tok->vocab_size() > config.vocab_size)
      fail("{}: tokenizer has {} tokens but config vocab_size is {}", path, tok->vocab_size(), config.vocab_size);
    return build_llama(config, [&](const std::string& n) { return st.get(n); }, tok, dtype, path);
  }
  if (!file_exists(path)) fail("{}: no such model file or folder", path);
  if (looks_like_gguf(path)) {
    GGUFFile file(path);
    GGUFLlama g = read_gguf_llama(file);
    // A file without tokenizer metadata (our export's tests) loads when no tokenizer is needed.
    std::shared_ptr<const Tokenizer> tok;
    if (opts.need_tokenizer || file.has("tokenizer.ggml.model")) tok = tokenizer_from_gguf(file);
    std::map<std::string, const FloatTensor*> by_name;
    for (const auto& [name, t] : g.tensors) by_name[name] = &t;
    auto src = [&](const std::string& name) -> at::Tensor {
      auto it = by_name.find(name);
      if (it == by_name.end()) return {};
      if (it->second->data.empty()) return at::zeros(it->second->shape, at::kFloat);  // an absent block's linear
      return at::from_blob(const_cast<float*>(it->second->data.data()), it->second->shape, at::kFloat).clone();
    };
    return build_llama(g.config, src, tok, dtype, path);
  }
  fail("{}: unrecognized model format (expected a Hugging Face folder, a GGUF file or an exported folder)", path);
}

void save_hf_folder(const Llama& model, const std::string& dir) {
  ::mkdir(dir.c_str(), 0755);
  if (!dir_exists(dir)) fail("{}: cannot create folder", dir);
  const auto& c = model.config();
  const auto& w = model.weights();
  std::vector<std::pair<std::string, at::Tensor>> named;
  named.emplace_back("model.embed_tokens.weight", w.embed);
  named.emplace_back("model.norm.weight", w.final_norm);
  if (!c.tie_word_embeddings) named.emplace_back("lm_head.weight", w.lm_head->dense_weight());
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const auto& L = w.layers[l];
    named.emplace_back(layer_name(l, "input_layernorm.weight"), L.input_norm);
    named.emplace_back(layer_name(l, "post_attention_layernorm.weight"), L.post_attn_norm);
    named.emplace_back(layer_name(l, "self_attn.q_proj.weight"), L.q->dense_weight());
    named.emplace_back(layer_name(l, "self_attn.k_proj.weight"), L.k->dense_weight());
    named.emplace_back(layer_name(l, "self_attn.v_proj.weight"), L.v->dense_weight());
    named.emplace_back(layer_name(l, "self_attn.o_proj.weight"), L.o->dense_weight());
    named.emplace_back(layer_name(l, "mlp.gate_proj.weight"), L.gate->dense_weight());
    named.emplace_back(layer_name(l, "mlp.up_proj.weight"), L.up->dense_weight());
    named.emplace_back(layer_name(l, "mlp.down_proj.weight"), L.down->dense_weight());
  }
  std::vector<at::Tensor> keep;
  std::vector<TensorToWrite> out;
  for (auto& [name, t] : named) {
    keep.push_back(t.to(at::kFloat).contiguous());
    out.push_back({name, DType::F32, keep.back().sizes().vec(), keep.back().data_ptr()});
  }
  ModelConfig saved = c;
  saved.torch_dtype = "float32";
  write_file_atomic(path_join(dir, "config.json"), hf_config_to_json(saved));
  write_safetensors(path_join(dir, "model.safetensors"), out, {{"format", "pt"}});
}

}  // namespace llmc
