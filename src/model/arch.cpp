#include "llmc/model/arch.h"

#include "llmc_kernels/qformat.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"

namespace llmc {

int effective_group(int K, int requested) {
  LLMC_CHECK(kernels::valid_group(requested), "group size {} is not supported (32, 64 or 128)", requested);
  int g = requested;
  while (g > 32 && g / 2 >= K) g /= 2;  // K <= g/2: a smaller group pads less
  return g;
}

using json = nlohmann::ordered_json;

ModelConfig Arch::compressed_config() const {
  ModelConfig c = base;
  c.layer_kv_heads.clear();
  c.layer_intermediate.clear();
  for (const auto& l : layers) {
    c.layer_kv_heads.push_back(l.kv_heads);
    c.layer_intermediate.push_back(l.mlp_channels);
  }
  return c;
}

namespace {
void check_order(const std::vector<int64_t>& order, int64_t n, const std::string& where, size_t layer,
                 const char* what) {
  if (order.empty()) return;
  if (static_cast<int64_t>(order.size()) != n)
    fail("{}: layer {} {} has {} entries, expected {}", where, layer, what, order.size(), n);
  std::vector<bool> seen(n, false);
  for (auto i : order) {
    if (i < 0 || i >= n || seen[i]) fail("{}: layer {} {} is not a permutation of 0..{}", where, layer, what, n - 1);
    seen[i] = true;
  }
}
}  // namespace

void Arch::validate(const std::string& where) const {
  if (static_cast<int64_t>(layers.size()) != base.num_layers)
    fail("{}: {} layers, the model has {}", where, layers.size(), base.num_layers);
  if (group_size != 32 && group_size != 64 && group_size != 128)
    fail("{}: group_size {} not supported (32, 64, 128)", where, group_size);
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& l = layers[i];
    if (l.kv_heads < 0 || l.kv_heads > base.num_kv_heads)
      fail("{}: layer {} kv_heads {} out of range [0, {}]", where, i, l.kv_heads, base.num_kv_heads);
    if (l.mlp_channels < 0 || l.mlp_channels > base.intermediate_size)
      fail("{}: layer {} mlp_channels {} out of range [0, {}]", where, i, l.mlp_channels, base.intermediate_size);
    for (int b : l.bits)
      if (!valid_weight_bits(b)) fail("{}: layer {} has bits {} (2, 3, 4, 8, 16)", where, i, b);
    check_order(l.kv_order, base.num_kv_heads, where, i, "kv_order");
    check_order(l.mlp_order, base.intermediate_size, where, i, "mlp_order");
  }
  if (lm_head_bits != 0 && !valid_lm_head_bits(lm_head_bits))
    fail("{}: lm_head_bits {} (16, 8 or 4)", where, lm_head_bits);
}

Arch uniform_arch(const ModelConfig& base, int bits, int group_size) {
  Arch a;
  a.base = base;
  a.group_size = group_size;
  for (int64_t l = 0; l < base.num_layers; ++l) {
    LayerArch la;
    la.kv_heads = base.num_kv_heads;
    la.mlp_channels = base.intermediate_size;
    la.bits.fill(bits);
    a.layers.push_back(la);
  }
  a.validate("uniform:" + std::to_string(bits));
  return a;
}

std::string arch_to_json(const Arch& a) {
  json j;
  j["format"] = "llmcompress-arch";
  j["version"] = 1;
  const auto& c = a.base;
  j["model"] = {{"hidden_size", c.hidden_size},   {"intermediate_size", c.intermediate_size},
                {"num_layers", c.num_layers},     {"num_heads", c.num_heads},
                {"num_kv_heads", c.num_kv_heads}, {"head_dim", c.head_dim},
                {"vocab_size", c.vocab_size}};
  j["group_size"] = a.group_size;
  if (a.lm_head_bits) j["lm_head_bits"] = a.lm_head_bits;
  j["layers"] = json::array();
  for (const auto& l : a.layers) {
    json b = json::object();
    for (int k = 0; k < kNumLinears; ++k) b[kLinearNames[k]] = l.bits[k];
    j["layers"].push_back({{"kv_heads", l.kv_heads}, {"mlp_channels", l.mlp_channels}, {"bits", b},
                           {"kv_order", l.kv_order}, {"mlp_order", l.mlp_order}});
  }
  if (a.predicted_latency_ms >= 0)
    j["predicted"] = {{"latency_ms", a.predicted_latency_ms}, {"tokens", a.predicted_tokens},
                      {"size_bytes", a.predicted_size_bytes}};
  if (!a.alphas_json.empty()) j["alphas"] = json::parse(a.alphas_json);
  return j.dump(1);
}

Arch arch_from_json(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", where, e.what());
  }
  try {
    if (j.value("format", "") != "llmcompress-arch") fail("{}: not an llmcompress arch file (format key)", where);
    if (j.value("version", 0) != 1) fail("{}: unsupported arch version {}", where, j.value("version", 0));
    Arch a;
    const auto& m = j.at("model");
    a.base.hidden_size = m.at("hidden_size");
    a.base.intermediate_size = m.at("intermediate_size");
    a.base.num_layers = m.at("num_layers");
    a.base.num_heads = m.at("num_heads");
    a.base.num_kv_heads = m.at("num_kv_heads");
    a.base.head_dim = m.at("head_dim");
    a.base.vocab_size = m.at("vocab_size");
    a.group_size = j.at("group_size");
    if (j.contains("lm_head_bits")) a.lm_head_bits = j.at("lm_head_bits").get<int>();
    for (const auto& l : j.at("layers")) {
      LayerArch la;
      la.kv_heads = l.at("kv_heads");
      la.mlp_channels = l.at("mlp_channels");
      for (int k = 0; k < kNumLinears; ++k) la.bits[k] = l.at("bits").at(kLinearNames[k]);
      if (l.contains("kv_order")) la.kv_order = l.at("kv_order").get<std::vector<int64_t>>();
      if (l.contains("mlp_order")) la.mlp_order = l.at("mlp_order").get<std::vector<int64_t>>();
      a.layers.push_back(std::move(la));
    }
    if (j.contains("predicted")) {
      a.predicted_latency_ms = j["predicted"].value("latency_ms", -1.0);
      a.predicted_tokens = j["predicted"].value("tokens", int64_t{1});
      a.predicted_size_bytes = j["predicted"].value("size_bytes", int64_t{-1});
    }
    if (j.contains("alphas")) a.alphas_json = j["alphas"].dump();
    a.validate(where);
    return a;
  } catch (const json::exception& e) {
    fail("{}: missing or mistyped field ({})", where, e.what());
  }
}

Arch read_arch(const std::string& path) {
  if (!file_exists(path)) fail("{}: arch file not found", path);
  return arch_from_json(read_text_file(path), path);
}

void write_arch(const Arch& a, const std::string& path) { write_file_atomic(path, arch_to_json(a) + "\n"); }

void check_arch_matches(const Arch& a, const ModelConfig& m, const std::string& where) {
  const auto& b = a.base;
  if (b.hidden_size != m.hidden_size || b.intermediate_size != m.intermediate_size || b.num_layers != m.num_layers ||
      b.num_heads != m.num_heads || b.num_kv_heads != m.num_kv_heads || b.head_dim != m.head_dim)
    fail("{}: arch was made for another model (hidden {} x {} layers, this model: hidden {} x {} layers)", where,
         b.hidden_size, b.num_layers, m.hidden_size, m.num_layers);
}

}  // namespace llmc
