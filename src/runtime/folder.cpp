// Reading an exported folder (runtime/folder.h): packed linears become QuantizedLinear, 16-bit ones
// DenseLinear; every tensor is checked against config.json's llmc_format.
#include "llmc/runtime/folder.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/log.h"
#include "llmc/io/gguf.h"
#include "llmc/io/safetensors.h"
#include "llmc/model/arch.h"
#include "llmc/quant/quant.h"
#include "llmc/runtime/engine.h"
#include "llmc/tokenizer/bpe.h"

namespace llmc {

using json = nlohmann::ordered_json;
namespace kq = llmc::kernels;

std::string export_linear_name(int64_t layer, int kind) {
  static constexpr std::array<const char*, kNumLinears> kLinearHF = {
      "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
      "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  return fmt::format("model.layers.{}.{}", layer, kLinearHF.at(kind));
}

// ---- reading -----------------------------------------------------------------------------------

bool is_exported_folder(const std::string& dir) {
  const std::string cfg = path_join(dir, "config.json");
  if (!dir_exists(dir) || !file_exists(cfg)) return false;
  try {
    auto j = json::parse(read_text_file(cfg));
    return j.is_object() && j.contains("llmc_format");
  } catch (const std::exception&) {
    return false;
  }
}

namespace {

class FolderReader {
 public:
  FolderReader(const std::string& path) : f_(path) {}
  const SafetensorsFile& file() const { return f_; }

  const TensorInfo& need(const std::string& name, std::initializer_list<DType> dtypes, std::vector<int64_t> shape,
                         const std::string& what) {
    const TensorInfo* t = f_.find(name);
    if (!t) fail("{}: missing tensor '{}' ({})", f_.path(), name, what);
    bool ok = false;
    std::string names;
    for (DType d : dtypes) {
      ok = ok || t->dtype == d;
      names += (names.empty() ? "" : " or ") + std::string(dtype_name(d));
    }
    if (!ok) fail("{}: tensor '{}' has dtype {}, expected {} ({})", f_.path(), name, dtype_name(t->dtype), names, what);
    if (t->shape != shape)
      fail("{}: tensor '{}' has shape [{}], expected [{}] ({})", f_.path(), name, fmt::join(t->shape, ", "),
           fmt::join(shape, ", "), what);
    used_.insert(name);
    return *t;
  }

  at::Tensor dense(const std::string& name, std::vector<int64_t> shape, const std::string& what) {
    const TensorInfo& t = need(name, {DType::F32, DType::BF16, DType::F16}, shape, what);
    const at::ScalarType st = t.dtype == DType::F32 ? at::kFloat : t.dtype == DType::BF16 ? at::kBFloat16 : at::kHalf;
    auto view = at::from_blob(const_cast<uint8_t*>(f_.data(t)), t.shape, at::TensorOptions().dtype(st));
    auto out = view.to(at::kFloat, false, /*copy=*/true);
    if (!at::isfinite(out).all().item<bool>()) fail("{}: tensor '{}' holds non-finite values", f_.path(), name);
    return out;
  }

  kq::QMatrix packed(const std::string& prefix, int bits, int group, int64_t N, int64_t K, const std::string& what) {
    const kq::QLayout lay = kq::make_layout(bits, group, static_cast<int>(N), static_cast<int>(K));
    const std::string shape_note = fmt::format("{}: {}-bit codes of {} x {} (group {}, {} bytes per row)", what, bits,
                                               N, K, group, lay.row_bytes);
    const TensorInfo* qt = f_.find(prefix + ".qweight");
    if (qt && qt->dtype == DType::U8 && qt->shape.size() == 2 && qt->shape[0] == N &&
        qt->shape[1] != static_cast<int64_t>(lay.row_bytes))
      fail("{}: tensor '{}.qweight' has {} bytes per row, expected {} for {}", f_.path(), prefix, qt->shape[1],
           lay.row_bytes, shape_note);
    const auto& c = need(prefix + ".qweight", {DType::U8}, {N, static_cast<int64_t>(lay.row_bytes)}, shape_note);
    const auto& s = need(prefix + ".scales", {DType::F16}, {N, lay.groups_per_row}, shape_note);
    const auto& z = need(prefix + ".zeros", {DType::F16}, {N, lay.groups_per_row}, shape_note);
    kq::QMatrix m;
    m.layout = lay;
    m.codes.assign(f_.data(c), f_.data(c) + lay.code_bytes);
    m.scales.resize(lay.scale_count);
    m.zeros.resize(lay.scale_count);
    std::memcpy(m.scales.data(), f_.data(s), lay.scale_bytes);
    std::memcpy(m.zeros.data(), f_.data(z), lay.scale_bytes);
    for (size_t i = 0; i < lay.scale_count; ++i) {
      if ((m.scales[i] & 0x7c00u) == 0x7c00u) fail("{}: tensor '{}.scales' holds a non-finite value", f_.path(), prefix);
      if ((m.zeros[i] & 0x7c00u) == 0x7c00u) fail("{}: tensor '{}.zeros' holds a non-finite value", f_.path(), prefix);
    }
    return m;
  }

  void check_all_used() const {
    for (const auto& t : f_.tensors())
      if (!used_.count(t.name))
        fail("{}: unexpected tensor '{}' (config.json's llmc_format does not use it)", f_.path(), t.name);
  }

 private:
  SafetensorsFile f_;
  std::set<std::string> used_;
};

template <typename T>
T jget(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) fail("{}: llmc_format is missing '{}'", where, key);
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    fail("{}: llmc_format '{}' has the wrong type ({})", where, key, j.at(key).dump());
  }
}

}  // namespace

std::unique_ptr<Llama> load_exported(const std::string& dir, const LoadOptions& opts, bool runtime) {
  const std::string cfg_path = path_join(dir, "config.json");
  if (!file_exists(cfg_path)) fail("{}: not a model folder (no config.json)", dir);
  const std::string text = read_text_file(cfg_path);
  ModelConfig c = parse_hf_config(text, cfg_path);
  json j = json::parse(text);
  const json& f = j.at("llmc_format");
  if (!f.is_object()) fail("{}: llmc_format must be an object", cfg_path);
  const int version = jget<int>(f, "version", cfg_path);
  if (version != kExportFormatVersion)
    fail("{}: llmc_format version {} is not supported (this build reads version {})", cfg_path, version, kExportFormatVersion);
  const int group = jget<int>(f, "group_size", cfg_path);
  if (!kq::valid_group(group)) fail("{}: llmc_format group_size {} is not supported (32, 64, 128)", cfg_path, group);
  const std::string dense_dtype = f.contains("dense_dtype") ? jget<std::string>(f, "dense_dtype", cfg_path) : "float32";
  if (dense_dtype != "float32" && dense_dtype != "bfloat16")
    fail("{}: llmc_format dense_dtype '{}' is not supported", cfg_path, dense_dtype);
  const int head_bits = f.contains("lm_head_bits") ? jget<int>(f, "lm_head_bits", cfg_path) : 16;
  if (head_bits != 16 && !kq::valid_bits(head_bits))
    fail("{}: llmc_format lm_head_bits {} is not supported (2, 3, 4, 8, 16)", cfg_path, head_bits);
  const json& layers = f.contains("layers") ? f.at("layers") : json();
  if (!layers.is_array()) fail("{}: llmc_format 'layers' must be an array", cfg_path);
  if (static_cast<int64_t>(layers.size()) != c.num_layers)
    fail("{}: llmc_format has {} layers, num_hidden_layers is {}", cfg_path, layers.size(), c.num_layers);
  if (opts.dtype != "float32" && opts.dtype != "fp32")
    spdlog::warn("{}: exported models compute in float32 (--dtype {} ignored)", dir, opts.dtype);

  const std::string st_path = path_join(dir, "model.safetensors");
  if (!file_exists(st_path)) fail("{}: missing model.safetensors", dir);
  // The mapping is released once every tensor is copied out (below), before the engine is built:
  // the file's pages would otherwise count in the process's memory next to the copies.
  auto reader = std::make_unique<FolderReader>(st_path);
  FolderReader& r = *reader;
  const int64_t H = c.hidden_size, hd = c.head_dim;
  LlamaWeights w;
  const std::string embedding = f.contains("embedding") ? jget<std::string>(f, "embedding", cfg_path)
                                                        : std::string("model.embed_tokens.weight");
  if (embedding != "model.embed_tokens.weight" && embedding != "lm_head")
    fail("{}: llmc_format embedding '{}' is not supported (model.embed_tokens.weight or lm_head)", cfg_path, embedding);
  if (embedding == "lm_head" && (head_bits == 16 || !c.tie_word_embeddings))
    fail("{}: llmc_format embedding 'lm_head' needs tie_word_embeddings and a packed lm_head (lm_head_bits < 16)",
         cfg_path);
  if (embedding == "model.embed_tokens.weight")
    w.embed = r.dense("model.embed_tokens.weight", {c.vocab_size, H}, "embedding");
  w.final_norm = r.dense("model.norm.weight", {H}, "final norm");
  if (head_bits < 16) {
    w.lm_head = std::make_shared<QuantizedLinear>(
        r.packed("lm_head", head_bits, effective_group(static_cast<int>(H), group), c.vocab_size, H, "lm_head"));
    if (embedding == "lm_head") w.embed = w.lm_head->dense_weight().contiguous();  // the one stored table
  } else if (c.tie_word_embeddings)
    w.lm_head = std::make_shared<DenseLinear>(w.embed);
  else
    w.lm_head = std::make_shared<DenseLinear>(r.dense("lm_head.weight", {c.vocab_size, H}, "lm_head"));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const json& lj = layers[l];
    const std::string where = fmt::format("{}: llmc_format layer {}", cfg_path, l);
    const int64_t kv = jget<int64_t>(lj, "kv_heads", where), ch = jget<int64_t>(lj, "mlp_channels", where);
    if (kv != c.kv_heads(l)) fail("{}: kv_heads {} disagrees with the config's {}", where, kv, c.kv_heads(l));
    if (ch != c.mlp_width(l)) fail("{}: mlp_channels {} disagrees with the config's {}", where, ch, c.mlp_width(l));
    const json& bj = lj.contains("bits") ? lj.at("bits") : json();
    if (!bj.is_object()) fail("{}: 'bits' must be an object", where);
    LayerWeights L;
    L.input_norm = r.dense(fmt::format("model.layers.{}.input_layernorm.weight", l), {H}, "norm");
    L.post_attn_norm = r.dense(fmt::format("model.layers.{}.post_attention_layernorm.weight", l), {H}, "norm");
    const int64_t nq = c.q_heads(l), nkv = c.kv_heads(l), I = c.mlp_width(l);
    const int64_t shapes[kNumLinears][2] = {{nq * hd, H}, {nkv * hd, H}, {nkv * hd, H}, {H, nq * hd},
                                            {I, H},       {I, H},        {H, I}};
    for (int k = 0; k < kNumLinears; ++k) {
      const int bits = jget<int>(bj, kLinearNames[k], where);
      if (bits != 16 && !kq::valid_bits(bits))
        fail("{}: linear {} has bits {} (supported: 2, 3, 4, 8, 16)", where, kLinearNames[k], bits);
      const int64_t N = shapes[k][0], K = shapes[k][1];
      auto& slot = layer_linear(L, k);
      if (N == 0 || K == 0) {  // dropped sub-block
        slot = std::make_shared<DenseLinear>(at::zeros({N, K}, at::kFloat));
        continue;
      }
      const std::string name = export_linear_name(l, k);
      const std::string what = fmt::format("layer {} {}, {}-bit in config.json", l, kLinearNames[k], bits);
      if (bits == 16)
        slot = std::make_shared<DenseLinear>(r.dense(name + ".weight", {N, K}, what));
      else
        slot = std::make_shared<QuantizedLinear>(
            r.packed(name, bits, effective_group(static_cast<int>(K), group), N, K, what));
    }
    w.layers.push_back(std::move(L));
  }
  r.check_all_used();
  reader.reset();

  std::shared_ptr<const Tokenizer> tok;
  const std::string tok_gguf = path_join(dir, "tokenizer.gguf");
  if (file_exists(tok_gguf)) {
    GGUFFile gf(tok_gguf);
    tok = tokenizer_from_gguf(gf);
  } else {
    tok = load_folder_tokenizer(dir, c);
  }
  if (!tok && opts.need_tokenizer) fail("{}: no tokenizer (tokenizer.model, tokenizer.json or tokenizer.gguf)", dir);
  if (tok && tok->vocab_size() > c.vocab_size)
    fail("{}: tokenizer has {} tokens but config vocab_size is {}", dir, tok->vocab_size(), c.vocab_size);
  if (runtime) return std::make_unique<RuntimeLlama>(c, std::move(w), tok);
  return std::make_unique<Llama>(c, std::move(w), tok);
}

}  // namespace llmc
