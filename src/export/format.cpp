#include "llmc/export/format.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/log.h"
#include "llmc/export/discretize.h"
#include "llmc/io/gguf.h"
#include "llmc/io/safetensors.h"
#include "llmc/nas/arch.h"
#include "llmc/quant/quant.h"
#include "llmc/runtime/engine.h"
#include "llmc/tokenizer/bpe.h"

namespace llmc {

using json = nlohmann::ordered_json;
namespace fs = std::filesystem;
namespace kq = llmc::kernels;

namespace {

constexpr int kFormatVersion = 1;
constexpr std::array<const char*, kNumLinears> kLinearHF = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                            "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                            "mlp.down_proj"};
const char* const kTokenizerFiles[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                                       "special_tokens_map.json", "generation_config.json"};

std::string linear_name(int64_t l, int k) { return fmt::format("model.layers.{}.{}", l, kLinearHF[k]); }

int dense_elt(const std::string& dense_dtype) {
  if (dense_dtype == "float32") return 4;
  if (dense_dtype == "bfloat16") return 2;
  fail("--dense-dtype: '{}' is not supported (float32 or bfloat16)", dense_dtype);
}

int linear_bits(const Linear& L) {
  if (auto* q = dynamic_cast<const QuantizedLinear*>(&L)) return q->bits();
  return 16;
}

int64_t linear_bytes(const Linear& L, int elt) {
  if (auto* q = dynamic_cast<const QuantizedLinear*>(&L)) return static_cast<int64_t>(q->packed().layout.total_bytes());
  return L.out_features() * L.in_features() * elt;
}

}  // namespace

std::string SizeReport::to_json() const {
  json j;
  j["bytes"] = {{"embedding", embedding}, {"lm_head", lm_head}, {"norms", norms},
                {"attention", attention}, {"mlp", mlp},         {"total", total()}};
  j["linear_params"] = linear_params;
  j["linear_bytes"] = linear_bytes;
  j["avg_bits_per_weight"] = avg_bits_per_weight();
  j["avg_code_bits"] = avg_code_bits();
  return j.dump();
}

SizeReport size_report(const Llama& model, const std::string& dense_dtype) {
  const int elt = dense_elt(dense_dtype);
  const auto& c = model.config();
  const auto& w = model.weights();
  SizeReport r;
  const bool packed_head = dynamic_cast<const QuantizedLinear*>(w.lm_head.get()) != nullptr;
  // A tied embedding with a packed lm_head is stored once, as the lm_head (see the writer).
  r.embedding = packed_head && c.tie_word_embeddings ? 0 : c.vocab_size * c.hidden_size * elt;
  r.lm_head = packed_head || !c.tie_word_embeddings ? linear_bytes(*w.lm_head, elt) : 0;
  r.norms = (2 * c.num_layers + 1) * c.hidden_size * 4;
  for (const auto& L : w.layers)
    for (int k = 0; k < kNumLinears; ++k) {
      const auto& lin = layer_linear(L, k);
      if (linear_dropped(*lin)) continue;
      const int64_t b = linear_bytes(*lin, elt), n = lin->out_features() * lin->in_features();
      (k <= kO ? r.attention : r.mlp) += b;
      r.linear_bytes += b;
      r.linear_params += n;
      r.linear_code_bits += static_cast<double>(n) * linear_bits(*lin);
    }
  return r;
}

// ---- writing -----------------------------------------------------------------------------------

namespace {

// Tensors to write, with the storage they point into kept alive.
struct TensorList {
  std::vector<TensorToWrite> list;
  std::vector<at::Tensor> keep;
  std::vector<std::vector<uint16_t>> keep16;

  void dense(const std::string& name, const at::Tensor& t, const std::string& dtype) {
    auto f = t.to(at::kFloat).contiguous();
    if (dtype == "bfloat16") {
      std::vector<uint16_t> b(static_cast<size_t>(f.numel()));
      const float* p = f.data_ptr<float>();
      for (size_t i = 0; i < b.size(); ++i) b[i] = f32_to_bf16(p[i]);
      keep16.push_back(std::move(b));
      list.push_back({name, DType::BF16, f.sizes().vec(), keep16.back().data()});
    } else {
      keep.push_back(f);
      list.push_back({name, DType::F32, f.sizes().vec(), f.data_ptr()});
    }
  }
  void packed(const std::string& prefix, const kq::QMatrix& q) {
    const auto& l = q.layout;
    list.push_back({prefix + ".qweight", DType::U8, {l.N, static_cast<int64_t>(l.row_bytes)}, q.codes.data()});
    list.push_back({prefix + ".scales", DType::F16, {l.N, l.groups_per_row}, q.scales.data()});
    list.push_back({prefix + ".zeros", DType::F16, {l.N, l.groups_per_row}, q.zeros.data()});
  }
  void linear(const std::string& prefix, const Linear& L, const std::string& dtype) {
    if (auto* q = dynamic_cast<const QuantizedLinear*>(&L))
      packed(prefix, q->packed());
    else
      dense(prefix + ".weight", L.dense_weight(), dtype);
  }
};

void copy_file(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) fail("{}: cannot copy to {} ({})", from, to, ec.message());
}

// Moves the finished temporary folder to `dir`, replacing an earlier export there.
void publish(const std::string& tmp, const std::string& dir) {
  std::error_code ec;
  std::string old;
  if (fs::exists(dir)) {
    if (!fs::is_directory(dir)) fail("{}: exists and is not a folder; not overwriting it", dir);
    if (!is_exported_folder(dir) && !fs::is_empty(dir))
      fail("{}: exists and is not an exported model folder; not overwriting it", dir);
    old = fmt::format("{}.old-{}", dir, ::getpid());
    fs::rename(dir, old, ec);
    if (ec) fail("{}: cannot move the previous export aside ({})", dir, ec.message());
  }
  fs::rename(tmp, dir, ec);
  if (ec) {
    if (!old.empty()) fs::rename(old, dir);
    fail("{}: cannot move the export into place ({})", dir, ec.message());
  }
  if (!old.empty()) fs::remove_all(old, ec);
}

}  // namespace

void write_export_folder(const Llama& model, const std::string& dir_in, const ExportWriteOptions& o) {
  LLMC_CHECK(!dir_in.empty(), "--out: empty path");
  LLMC_CHECK(model.dtype() == at::kFloat, "export: the model must be float32");
  LLMC_CHECK(kq::valid_group(o.group_size), "--group-size {} is not supported (32, 64 or 128)", o.group_size);
  dense_elt(o.dense_dtype);
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const auto& c = model.config();
  const auto& w = model.weights();

  // config.json
  ModelConfig saved = c;
  saved.torch_dtype = o.dense_dtype;
  json cfg = json::parse(hf_config_to_json(saved));
  json fmtj;
  fmtj["version"] = kFormatVersion;
  fmtj["group_size"] = o.group_size;
  fmtj["dense_dtype"] = o.dense_dtype;
  fmtj["lm_head_bits"] = linear_bits(*w.lm_head);
  // Tied and packed: the embedding is the dequantized lm_head table (quantize_model made it so),
  // stored once.
  const bool shared_table = c.tie_word_embeddings && dynamic_cast<const QuantizedLinear*>(w.lm_head.get());
  fmtj["embedding"] = shared_table ? "lm_head" : "model.embed_tokens.weight";
  fmtj["layers"] = json::array();
  TensorList t;
  if (!shared_table) t.dense("model.embed_tokens.weight", w.embed, o.dense_dtype);
  t.dense("model.norm.weight", w.final_norm, "float32");
  if (dynamic_cast<const QuantizedLinear*>(w.lm_head.get()) || !c.tie_word_embeddings)
    t.linear("lm_head", *w.lm_head, o.dense_dtype);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const auto& L = w.layers[l];
    json bits = json::object();
    t.dense(fmt::format("model.layers.{}.input_layernorm.weight", l), L.input_norm, "float32");
    t.dense(fmt::format("model.layers.{}.post_attention_layernorm.weight", l), L.post_attn_norm, "float32");
    for (int k = 0; k < kNumLinears; ++k) {
      const auto& lin = layer_linear(L, k);
      const bool present = (k <= kO ? c.kv_heads(l) : c.mlp_width(l)) > 0;
      bits[kLinearNames[k]] = present ? linear_bits(*lin) : 16;
      if (!present) continue;
      if (auto* q = dynamic_cast<const QuantizedLinear*>(lin.get())) {
        const int want = effective_group(static_cast<int>(lin->in_features()), o.group_size);
        LLMC_CHECK(q->packed().layout.group == want, "export: layer {} {} is packed with group {}, expected {}", l,
                   kLinearNames[k], q->packed().layout.group, want);
      }
      t.linear(linear_name(l, k), *lin, o.dense_dtype);
    }
    fmtj["layers"].push_back({{"kv_heads", c.kv_heads(l)}, {"mlp_channels", c.mlp_width(l)}, {"bits", bits}});
  }
  cfg["llmc_format"] = fmtj;

  const fs::path target(dir);
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(parent, ec);
  const std::string tmp = (parent / fmt::format(".{}.tmp-{}", target.filename().string(), ::getpid())).string();
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec) || ec) fail("{}: cannot create folder ({})", tmp, ec.message());
  try {
    write_file_atomic(path_join(tmp, "config.json"), cfg.dump(2) + "\n");
    write_safetensors(path_join(tmp, "model.safetensors"), t.list, {{"format", "llmc"}});
    if (!o.tokenizer_source.empty()) {
      if (dir_exists(o.tokenizer_source)) {
        for (const char* f : kTokenizerFiles) {
          const std::string src = path_join(o.tokenizer_source, f);
          if (file_exists(src)) copy_file(src, path_join(tmp, f));
        }
      } else if (looks_like_gguf(o.tokenizer_source)) {
        write_tokenizer_gguf(o.tokenizer_source, path_join(tmp, "tokenizer.gguf"));
      }
    }
    if (!o.arch_json.empty()) write_file_atomic(path_join(tmp, "arch.json"), o.arch_json + "\n");
    if (!o.report_json.empty()) {  // the report also lists the bytes of every file written
      json rep = json::parse(o.report_json);
      json files = json::object();
      for (const auto& e : fs::directory_iterator(tmp))
        if (e.is_regular_file()) files[e.path().filename().string()] = static_cast<int64_t>(e.file_size());
      rep["files"] = files;
      write_file_atomic(path_join(tmp, "export_report.json"), rep.dump(2) + "\n");
    }
    publish(tmp, dir);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

// ---- GGUF tokenizer metadata -------------------------------------------------------------------

namespace {

void put_u32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void put_u64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
void put_str(std::string& s, const std::string& v) {
  put_u64(s, v.size());
  s += v;
}

void put_value(std::string& s, const GGUFValue& v) {
  auto raw = [&](const void* p, size_t n) { s.append(static_cast<const char*>(p), n); };
  switch (v.type) {
    case GGUFType::UINT8:
    case GGUFType::BOOL: {
      uint8_t x = static_cast<uint8_t>(v.u);
      raw(&x, 1);
      break;
    }
    case GGUFType::INT8: {
      int8_t x = static_cast<int8_t>(v.i);
      raw(&x, 1);
      break;
    }
    case GGUFType::UINT16: {
      uint16_t x = static_cast<uint16_t>(v.u);
      raw(&x, 2);
      break;
    }
    case GGUFType::INT16: {
      int16_t x = static_cast<int16_t>(v.i);
      raw(&x, 2);
      break;
    }
    case GGUFType::UINT32: put_u32(s, static_cast<uint32_t>(v.u)); break;
    case GGUFType::INT32: {
      int32_t x = static_cast<int32_t>(v.i);
      raw(&x, 4);
      break;
    }
    case GGUFType::FLOAT32: {
      float x = static_cast<float>(v.f);
      raw(&x, 4);
      break;
    }
    case GGUFType::UINT64: put_u64(s, v.u); break;
    case GGUFType::INT64: raw(&v.i, 8); break;
    case GGUFType::FLOAT64: raw(&v.f, 8); break;
    case GGUFType::STRING: put_str(s, v.str); break;
    case GGUFType::ARRAY:
      put_u32(s, static_cast<uint32_t>(v.elem_type));
      put_u64(s, v.array.size());
      for (const auto& e : v.array) put_value(s, e);
      break;
  }
}

}  // namespace

void write_tokenizer_gguf(const std::string& gguf_path, const std::string& out_path) {
  GGUFFile f(gguf_path);
  std::vector<const std::pair<std::string, GGUFValue>*> keep;
  for (const auto& kv : f.metadata())
    if (kv.first.rfind("tokenizer.", 0) == 0 || kv.first == "general.architecture") keep.push_back(&kv);
  LLMC_CHECK(f.has("tokenizer.ggml.model"), "{}: the file carries no tokenizer (tokenizer.ggml.model)", gguf_path);
  std::string s = "GGUF";
  put_u32(s, 3);
  put_u64(s, 0);  // tensors
  put_u64(s, keep.size());
  for (const auto* kv : keep) {
    put_str(s, kv->first);
    put_u32(s, static_cast<uint32_t>(kv->second.type));
    put_value(s, kv->second);
  }
  s.resize((s.size() + 31) / 32 * 32, '\0');
  write_file_atomic(out_path, s);
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
  if (version != kFormatVersion)
    fail("{}: llmc_format version {} is not supported (this build reads version {})", cfg_path, version, kFormatVersion);
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
  FolderReader r(st_path);
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
      const std::string name = linear_name(l, k);
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
