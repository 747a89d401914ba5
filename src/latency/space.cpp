#include "llmc/latency/space.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "llmc/core/error.h"
#include "llmc/model/arch.h"
#include "llmc/core/files.h"

namespace llmc {

using json = nlohmann::ordered_json;

const LayerSpace& SearchSpace::layer(int64_t l) const {
  for (const auto& [idx, s] : overrides)
    if (idx == l) return s;
  return defaults;
}

std::vector<int64_t> SearchSpace::kv_choices(const ModelConfig& m, int64_t l) const {
  std::set<int64_t, std::greater<>> out;
  for (double f : layer(l).kv_group_fractions)
    out.insert(std::clamp<int64_t>(std::llround(f * m.num_kv_heads), f > 0 ? 1 : 0, m.num_kv_heads));
  return {out.begin(), out.end()};
}

std::vector<int64_t> SearchSpace::mlp_choices(const ModelConfig& m, int64_t l) const {
  std::set<int64_t, std::greater<>> out;
  const int64_t I = m.intermediate_size;
  for (double f : layer(l).mlp_width_fractions) {
    if (f >= 1.0) {
      out.insert(I);
      continue;
    }
    if (f <= 0) {
      out.insert(0);
      continue;
    }
    int64_t w = std::llround(f * I / width_multiple) * width_multiple;  // never below one multiple
    out.insert(std::clamp<int64_t>(w, std::min<int64_t>(width_multiple, I), I));
  }
  return {out.begin(), out.end()};
}

bool SearchSpace::allows_lut_lm_head(int bits) const {
  return lm_head_bits.empty() || std::find(lm_head_bits.begin(), lm_head_bits.end(), bits) != lm_head_bits.end();
}

std::vector<int> SearchSpace::bit_choices(int64_t l) const {
  std::vector<int> b = layer(l).bits;
  std::sort(b.begin(), b.end());
  b.erase(std::unique(b.begin(), b.end()), b.end());
  return b;
}

namespace {

json layer_json(const LayerSpace& s) {
  return {{"kv_group_fractions", s.kv_group_fractions},
          {"mlp_width_fractions", s.mlp_width_fractions},
          {"bits", s.bits}};
}

void parse_layer(const json& j, LayerSpace* s, const std::string& where, bool allow_global) {
  if (!j.is_object()) fail("{}: expected an object", where);
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    auto fractions = [&](std::vector<double>* out) {
      if (!v.is_array() || v.empty()) fail("{}.{}: expected a non-empty array of numbers", where, k);
      out->clear();
      for (const auto& x : v) {
        if (!x.is_number() || x.get<double>() < 0 || x.get<double>() > 1)
          fail("{}.{}: {} is not a fraction in [0, 1]", where, k, x.dump());
        out->push_back(x.get<double>());
      }
    };
    if (k == "kv_group_fractions") {
      fractions(&s->kv_group_fractions);
    } else if (k == "mlp_width_fractions") {
      fractions(&s->mlp_width_fractions);
    } else if (k == "bits") {
      if (!v.is_array() || v.empty()) fail("{}.bits: expected a non-empty array", where);
      s->bits.clear();
      for (const auto& x : v) {
        if (!x.is_number_integer()) fail("{}.bits: {} is not an integer", where, x.dump());
        int b = x.get<int>();
        if (!valid_weight_bits(b)) fail("{}.bits: {} is not one of 2, 3, 4, 8, 16", where, b);
        s->bits.push_back(b);
      }
    } else if (!(allow_global && (k == "group_size" || k == "width_multiple" || k == "layers" || k == "lm_head_bits"))) {
      fail("{}: unknown key '{}'", where, k);
    }
  }
}

}  // namespace

SearchSpace parse_search_space(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", where, e.what());
  }
  SearchSpace s;
  parse_layer(j, &s.defaults, where, true);
  if (j.contains("group_size")) {
    if (!j["group_size"].is_number_integer()) fail("{}.group_size: expected an integer", where);
    s.group_size = j["group_size"];
    if (s.group_size != 32 && s.group_size != 64 && s.group_size != 128)
      fail("{}.group_size: {} is not 32, 64 or 128", where, s.group_size);
  }
  if (j.contains("width_multiple")) {
    if (!j["width_multiple"].is_number_integer() || j["width_multiple"].get<int>() < 1)
      fail("{}.width_multiple: expected a positive integer", where);
    s.width_multiple = j["width_multiple"];
  }
  if (j.contains("lm_head_bits")) {
    const json& v = j["lm_head_bits"];
    if (!v.is_array() || v.empty()) fail("{}.lm_head_bits: expected a non-empty array", where);
    for (const auto& x : v) {
      if (!x.is_number_integer() || !valid_lm_head_bits(x.get<int>()))
        fail("{}.lm_head_bits: {} is not one of 4, 8, 16", where, x.dump());
      s.lm_head_bits.push_back(x.get<int>());
    }
    std::sort(s.lm_head_bits.begin(), s.lm_head_bits.end());
    s.lm_head_bits.erase(std::unique(s.lm_head_bits.begin(), s.lm_head_bits.end()), s.lm_head_bits.end());
  }
  if (j.contains("layers")) {
    if (!j["layers"].is_object()) fail("{}.layers: expected an object keyed by layer index", where);
    for (auto it = j["layers"].begin(); it != j["layers"].end(); ++it) {
      int64_t idx = -1;
      try {
        size_t used = 0;
        idx = std::stoll(it.key(), &used);
        if (used != it.key().size()) idx = -1;
      } catch (...) {
      }
      if (idx < 0) fail("{}.layers: key '{}' is not a layer index", where, it.key());
      LayerSpace ls = s.defaults;
      parse_layer(it.value(), &ls, where + ".layers." + it.key(), false);
      s.overrides.emplace_back(idx, ls);
    }
  }
  return s;
}

SearchSpace load_search_space(const std::string& path) {
  if (!file_exists(path)) fail("{}: search space file not found", path);
  return parse_search_space(read_text_file(path), path);
}

std::string SearchSpace::canonical_json() const {
  json j = layer_json(defaults);
  j["group_size"] = group_size;
  j["width_multiple"] = width_multiple;
  json layers = json::object();
  auto sorted = overrides;
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.first < b.first; });
  for (const auto& [idx, ls] : sorted) layers[std::to_string(idx)] = layer_json(ls);
  j["layers"] = layers;
  // Only when searched: the spaces (and LUT hashes) from before the key existed stay the same.
  if (!lm_head_bits.empty()) j["lm_head_bits"] = lm_head_bits;
  return j.dump();
}

std::string shapes_hash(const ModelConfig& m, const SearchSpace& s) {
  std::string key = fmt::format("H{} I{} L{} h{} kv{} hd{} V{} tie{}|{}", m.hidden_size, m.intermediate_size,
                                m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim, m.vocab_size,
                                m.tie_word_embeddings ? 1 : 0, s.canonical_json());
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return fmt::format("{:016x}", h);
}

}  // namespace llmc
