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
#include "llmc/io/gguf_writer.h"
#include "llmc/io/safetensors.h"
#include "llmc/model/arch.h"
#include "llmc/model/plan.h"
#include "llmc/quant/quant.h"
#include "llmc/runtime/folder.h"
#include "llmc/tokenizer/bpe.h"

namespace llmc {

using json = nlohmann::ordered_json;
namespace fs = std::filesystem;
namespace kq = llmc::kernels;

namespace {

const char* const kTokenizerFiles[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                                       "special_tokens_map.json", "generation_config.json"};

int dense_elt(const std::string& dense_dtype) {
  if (dense_dtype == "float32") return 4;
  if (dense_dtype == "bfloat16") return 2;
  fail("--dense-dtype: '{}' is not supported (float32 or bfloat16)", dense_dtype);
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
  PlanOptions po;
  po.dense_bytes = dense_elt(dense_dtype);
  po.lm_head_bits = model.weights().lm_head->bits();
  // The bytes the forward plan of the model's own architecture stores (the writer below writes
  // exactly these tensors; tests/model/test_export.cpp checks the file against this report).
  const ForwardPlan plan = forward_plan(model_arch(model, packed_group_size(model)), po);
  SizeReport r;
  r.embedding = plan.embedding_bytes;
  r.lm_head = plan.lm_head_bytes;
  r.norms = plan.norm_bytes;
  r.attention = plan.attention_bytes();
  r.mlp = plan.mlp_bytes();
  r.linear_bytes = plan.linear_bytes();
  for (const auto& L : plan.layers)
    for (const auto* calls : {&L.attention, &L.mlp})
      for (const PlanLinear& p : *calls) {
        r.linear_params += p.N * p.K;
        r.linear_code_bits += static_cast<double>(p.N * p.K) * p.bits;
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
    if (const kq::QMatrix* q = L.packed_matrix())
      packed(prefix, *q);
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
  fmtj["version"] = kExportFormatVersion;
  fmtj["group_size"] = o.group_size;
  fmtj["dense_dtype"] = o.dense_dtype;
  fmtj["lm_head_bits"] = w.lm_head->bits();
  // Tied and packed: the embedding is the dequantized lm_head table (quantize_model made it so),
  // stored once.
  const bool shared_table = c.tie_word_embeddings && w.lm_head->is_packed();
  fmtj["embedding"] = shared_table ? "lm_head" : "model.embed_tokens.weight";
  fmtj["layers"] = json::array();
  TensorList t;
  if (!shared_table) t.dense("model.embed_tokens.weight", w.embed, o.dense_dtype);
  t.dense("model.norm.weight", w.final_norm, "float32");
  if (w.lm_head->is_packed() || !c.tie_word_embeddings)
    t.linear("lm_head", *w.lm_head, o.dense_dtype);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const auto& L = w.layers[l];
    json bits = json::object();
    t.dense(fmt::format("model.layers.{}.input_layernorm.weight", l), L.input_norm, "float32");
    t.dense(fmt::format("model.layers.{}.post_attention_layernorm.weight", l), L.post_attn_norm, "float32");
    for (int k = 0; k < kNumLinears; ++k) {
      const auto& lin = layer_linear(L, k);
      const bool present = (k <= kO ? c.kv_heads(l) : c.mlp_width(l)) > 0;
      bits[kLinearNames[k]] = present ? lin->bits() : 16;
      if (!present) continue;
      if (const kq::QMatrix* q = lin->packed_matrix()) {
        const int want = effective_group(static_cast<int>(lin->in_features()), o.group_size);
        LLMC_CHECK(q->layout.group == want, "export: layer {} {} is packed with group {}, expected {}", l,
                   kLinearNames[k], q->layout.group, want);
      }
      t.linear(export_linear_name(l, k), *lin, o.dense_dtype);
    }
    fmtj["layers"].push_back({{"kv_heads", c.kv_heads(l)}, {"mlp_channels", c.mlp_width(l)}, {"bits", bits}});
  }
  cfg["llmc_format"] = fmtj;

  const fs::path target(dir);
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(parent, ec);
  // A kill during an earlier export to `dir` left our .NAME.tmp-PID / NAME.old-PID folders: cleaned.
  for (const auto& p : clean_interrupted_writes(dir)) spdlog::info("export: cleaned up {} (an interrupted export)", p);
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
    if (o.extra_files) o.extra_files(tmp);
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

void write_tokenizer_gguf(const std::string& gguf_path, const std::string& out_path) {
  GGUFFile f(gguf_path);
  std::vector<const std::pair<std::string, GGUFValue>*> keep;
  for (const auto& kv : f.metadata())
    if (kv.first.rfind("tokenizer.", 0) == 0 || kv.first == "general.architecture") keep.push_back(&kv);
  LLMC_CHECK(f.has("tokenizer.ggml.model"), "{}: the file carries no tokenizer (tokenizer.ggml.model)", gguf_path);
  GGUFWriter w;
  for (const auto* kv : keep) w.set(kv->first, kv->second);
  w.write(out_path);
}

}  // namespace llmc
