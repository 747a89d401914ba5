// LatencyTable (reading, checking, lookups, prediction), shape enumeration, model resolution.
// The measuring side is lut_build.cpp.
#include "llmc/latency/lut.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/model/load.h"
#include "llmc/model/plan.h"
#include "llmc/quant/quant.h"
#include "llmc_kernels/qformat.h"

namespace llmc {

using json = nlohmann::ordered_json;

bool LutLinearShape::operator<(const LutLinearShape& o) const {
  return std::tie(M, bits, N, K, group) < std::tie(o.M, o.bits, o.N, o.K, o.group);
}

std::vector<LutLinearShape> lut_linear_shapes(const ModelConfig& m, const SearchSpace& space,
                                              const std::vector<int64_t>& tokens) {
  LLMC_CHECK(m.num_kv_heads > 0 && m.num_heads % m.num_kv_heads == 0,
             "lut: num_heads {} is not a multiple of num_kv_heads {}", m.num_heads, m.num_kv_heads);
  std::set<LutLinearShape> out;
  // Every call a forward plan can make: each linear alone and each stack (model/plan.h) at every
  // width choice of the layer.
  for (int64_t l = 0; l < m.num_layers; ++l) {
    std::vector<LinearShape> nk;  // (N, K) of this layer's choices
    for (int64_t h : space.kv_choices(m, l)) {
      if (h <= 0) continue;
      for (int k : {kQ, kK, kV, kO}) nk.push_back(linear_shape(m, k, h, 0));
      nk.push_back(stacked_shape(m, kQkvStack, h, 0));
    }
    for (int64_t w : space.mlp_choices(m, l)) {
      if (w <= 0) continue;
      for (int k : {kGate, kUp, kDown}) nk.push_back(linear_shape(m, k, 0, w));
      nk.push_back(stacked_shape(m, kGateUpStack, 0, w));
    }
    for (int bits : space.bit_choices(l))
      for (const LinearShape& s : nk)
        for (int64_t M : tokens) {
          const int group = bits == 16 ? 0 : effective_group(static_cast<int>(s.K), space.group_size);
          out.insert(LutLinearShape{s.N, s.K, bits, group, M});
        }
  }
  // The lm_head at each bit width the search may choose for it: one position (the last) whatever M.
  for (int bits : space.lm_head_bits) {
    const int group = bits == 16 ? 0 : effective_group(static_cast<int>(m.hidden_size), space.group_size);
    out.insert(LutLinearShape{m.vocab_size, m.hidden_size, bits, group, 1});
  }
  return {out.begin(), out.end()};
}

ModelConfig lut_model_config(const std::string& spec) {
  ModelConfig c;
  if (spec == "synthetic:1b") {
    c.hidden_size = 2048;
    c.intermediate_size = 8192;
    c.num_layers = 16;
    c.num_heads = 32;
    c.num_kv_heads = 8;
    c.head_dim = 64;
    c.vocab_size = 128256;
    c.tie_word_embeddings = true;
    c.rope_theta = 500000.0;
    c.max_position_embeddings = 131072;
  } else if (spec == "synthetic:tiny") {
    c.hidden_size = 32;
    c.intermediate_size = 40;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 8;
    c.vocab_size = 50;
    c.max_position_embeddings = 64;
  } else if (spec.rfind("synthetic:", 0) == 0) {
    fail("--model {}: unknown synthetic model (synthetic:1b, synthetic:tiny)", spec);
  } else if (dir_exists(spec) && file_exists(path_join(spec, "config.json"))) {
    c = load_hf_config(path_join(spec, "config.json"));
  } else {
    c = load_llama(spec, LoadOptions{"float32", false})->config();
  }
  c.validate(spec);
  return c;
}

// The forward plan's bytes with fp32 dense weights and a dense lm_head (model/plan.h).
int64_t arch_linear_bytes(const Arch& a) { return forward_plan(a).linear_bytes(); }
int64_t arch_weight_bytes(const Arch& a) { return forward_plan(a).weight_bytes(); }

// ---- LatencyTable ------------------------------------------------------------------------------

size_t LatencyTable::KeyHash::operator()(const Key& k) const {
  uint64_t h = 1469598103934665603ull;
  for (int64_t v : {k.a, k.b, k.c, k.d}) {
    h ^= static_cast<uint64_t>(v) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 1099511628211ull;
  }
  return static_cast<size_t>(h);
}

namespace {

const json& field(const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) fail("{}: missing field '{}'", where, key);
  return *it;
}

int64_t int_field(const json& obj, const char* key, const std::string& where, int64_t min_value) {
  const json& v = field(obj, key, where);
  if (!v.is_number_integer()) fail("{}.{}: expected an integer, got {}", where, key, v.dump());
  int64_t x = v.get<int64_t>();
  if (x < min_value) fail("{}.{}: {} is below {}", where, key, x, min_value);
  return x;
}

double us_field(const json& obj, const char* key, const std::string& where) {
  const json& v = field(obj, key, where);
  if (!v.is_number()) fail("{}.{}: expected a number, got {}", where, key, v.dump());
  double x = v.get<double>();
  if (!std::isfinite(x) || x <= 0) fail("{}.{}: {} is not a positive time", where, key, v.dump());
  return x;
}

const json& array_field(const json& obj, const char* key, const std::string& where) {
  const json& v = field(obj, key, where);
  if (!v.is_array()) fail("{}.{}: expected an array", where, key);
  return v;
}

std::string string_field(const json& obj, const char* key, const std::string& where) {
  const json& v = field(obj, key, where);
  if (!v.is_string()) fail("{}.{}: expected a string", where, key);
  return v.get<std::string>();
}

std::string shapes_summary(const ModelConfig& m) {
  return fmt::format("hidden {}, mlp {}, {} layers, {}/{} heads, head_dim {}, vocab {}", m.hidden_size,
                     m.intermediate_size, m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim, m.vocab_size);
}

}  // namespace

LatencyTable LatencyTable::load(const std::string& path) {
  if (!file_exists(path)) fail("{}: LUT file not found (build one with `llmcompress lut`)", path);
  return parse(read_text_file(path), path);
}

LatencyTable LatencyTable::parse(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not a LUT: not valid JSON ({})", where, e.what());
  }
  if (!j.is_object() || !j.contains("format") || j["format"] != kLutFormat)
    fail("{}: not a LUT (expected \"format\": \"{}\")", where, kLutFormat);
  const int64_t version = int_field(j, "version", where, 0);
  if (version != kLutVersion)
    fail("{}: LUT version {} is not supported (this build reads version {}); rebuild it with `llmcompress lut`",
         where, version, kLutVersion);

  LatencyTable t;
  t.where_ = where;
  t.device_ = string_field(j, "device", where);
  t.kernel_version_ = string_field(j, "kernel_version", where);
  t.hash_ = string_field(j, "shapes_hash", where);
  t.threads_ = static_cast<int>(int_field(j, "threads", where, 1));
  t.context_ = int_field(j, "context", where, 1);
  t.lm_head_bits_ = static_cast<int>(int_field(j, "lm_head_bits", where, 2));
  if (!valid_lm_head_bits(t.lm_head_bits_)) fail("{}.lm_head_bits: {} (16, 8, 4)", where, t.lm_head_bits_);

  const json& mj = field(j, "model", where);
  if (!mj.is_object()) fail("{}.model: expected an object", where);
  const std::string mw = where + ".model";
  t.model_.hidden_size = int_field(mj, "hidden_size", mw, 1);
  t.model_.intermediate_size = int_field(mj, "intermediate_size", mw, 1);
  t.model_.num_layers = int_field(mj, "num_layers", mw, 1);
  t.model_.num_heads = int_field(mj, "num_heads", mw, 1);
  t.model_.num_kv_heads = int_field(mj, "num_kv_heads", mw, 1);
  t.model_.head_dim = int_field(mj, "head_dim", mw, 1);
  t.model_.vocab_size = int_field(mj, "vocab_size", mw, 1);
  const json& tie = field(mj, "tie_word_embeddings", mw);
  if (!tie.is_boolean()) fail("{}.tie_word_embeddings: expected true or false", mw);
  t.model_.tie_word_embeddings = tie.get<bool>();

  const json& sj = field(j, "space", where);
  if (!sj.is_object()) fail("{}.space: expected an object", where);
  t.space_ = parse_search_space(sj.dump(), where + ".space");
  const std::string own = shapes_hash(t.model_, t.space_);
  if (own != t.hash_)
    fail("{}: shapes_hash {} does not match the file's own model and space (hash {}): the file was edited or is "
         "corrupt; rebuild it",
         where, t.hash_, own);

  for (const auto& v : array_field(j, "tokens", where)) {
    if (!v.is_number_integer() || v.get<int64_t>() < 1) fail("{}.tokens: {} is not a token count >= 1", where, v.dump());
    t.tokens_.push_back(v.get<int64_t>());
  }
  if (t.tokens_.empty()) fail("{}.tokens: empty", where);

  const json& lin = array_field(j, "linears", where);
  for (size_t i = 0; i < lin.size(); ++i) {
    const std::string w = fmt::format("{}.linears[{}]", where, i);
    const json& e = lin[i];
    if (!e.is_object()) fail("{}: expected an object", w);
    const int64_t N = int_field(e, "N", w, 1), K = int_field(e, "K", w, 1), M = int_field(e, "M", w, 1);
    const int64_t bits = int_field(e, "bits", w, 2);
    if (!valid_weight_bits(static_cast<int>(bits))) fail("{}.bits: {} (2, 3, 4, 8, 16)", w, bits);
    int_field(e, "group", w, 0);
    t.linears_[Key{N, K, bits, M}] = us_field(e, "us", w);
  }
  const json& att = array_field(j, "attention", where);
  for (size_t i = 0; i < att.size(); ++i) {
    const std::string w = fmt::format("{}.attention[{}]", where, i);
    if (!att[i].is_object()) fail("{}: expected an object", w);
    t.attention_[Key{int_field(att[i], "kv_heads", w, 1), int_field(att[i], "M", w, 1), 0, 0}] =
        us_field(att[i], "us", w);
  }
  const json& lf = array_field(j, "layer_fixed", where);
  for (size_t i = 0; i < lf.size(); ++i) {
    const std::string w = fmt::format("{}.layer_fixed[{}]", where, i);
    if (!lf[i].is_object()) fail("{}: expected an object", w);
    const int64_t M = int_field(lf[i], "M", w, 1);
    t.fixed_attn_[M] = us_field(lf[i], "attn_us", w);
    t.fixed_mlp_[M] = us_field(lf[i], "mlp_us", w);
  }
  const json& mf = array_field(j, "model_fixed", where);
  for (size_t i = 0; i < mf.size(); ++i) {
    const std::string w = fmt::format("{}.model_fixed[{}]", where, i);
    if (!mf[i].is_object()) fail("{}: expected an object", w);
    t.model_fixed_[int_field(mf[i], "M", w, 1)] = us_field(mf[i], "us", w);
  }
  for (int64_t M : t.tokens_) {
    if (!t.fixed_attn_.count(M)) fail("{}.layer_fixed: no entry for M = {}", where, M);
    if (!t.model_fixed_.count(M)) fail("{}.model_fixed: no entry for M = {}", where, M);
  }
  // model_fixed holds the lm_head at lm_head_bits; the other choices are priced by the difference
  // of their linear entries, so the table's own width must be one of them.
  const auto& hb = t.space_.lm_head_bits;
  if (!t.space_.allows_lut_lm_head(t.lm_head_bits_))
    fail("{}: lm_head_bits {} is not one of space.lm_head_bits [{}]", where, t.lm_head_bits_, fmt::join(hb, ", "));
  for (int b : hb)
    if (!t.find_linear_us(t.model_.vocab_size, t.model_.hidden_size, b, 1))
      fail("{}.linears: no entry for the {}-bit lm_head (N {}, K {}, M 1)", where, b, t.model_.vocab_size,
           t.model_.hidden_size);
  return t;
}

void LatencyTable::check(const ModelConfig& model, const SearchSpace& space, const std::string& where) const {
  const std::string h = shapes_hash(model, space);
  if (h == hash_) return;
  const bool same_model = shapes_hash(model, space_) == hash_;
  fail("{}: LUT {} was built for shapes hash {} ({}), but this model + space hash to {} ({}{}); rebuild it with "
       "`llmcompress lut`",
       where, where_, hash_, shapes_summary(model_), h, shapes_summary(model),
       same_model ? ", another search space" : "");
}

double LatencyTable::need(const std::unordered_map<Key, double, KeyHash>& m, const Key& k, const char* what,
                          const std::string& shape) const {
  auto it = m.find(k);
  if (it == m.end()) fail("{}: no {} entry for {} (not in this LUT's space or tokens)", where_, what, shape);
  return it->second;
}

const double* LatencyTable::find_linear_us(int64_t N, int64_t K, int bits, int64_t M) const {
  auto it = linears_.find(Key{N, K, bits, M});
  return it == linears_.end() ? nullptr : &it->second;
}

double LatencyTable::linear_us(int64_t N, int64_t K, int bits, int64_t M) const {
  if (const double* us = find_linear_us(N, K, bits, M)) return *us;
  fail("{}: no linear entry for N={} K={} bits={} M={} (not in this LUT's space or tokens)", where_, N, K, bits, M);
}

double LatencyTable::attention_us(int64_t kv_heads, int64_t M) const {
  return need(attention_, Key{kv_heads, M, 0, 0}, "attention", fmt::format("kv_heads={} M={}", kv_heads, M));
}

namespace {
double need_m(const std::unordered_map<int64_t, double>& m, int64_t M, const std::string& where, const char* what) {
  auto it = m.find(M);
  if (it == m.end()) fail("{}: no {} entry for M={} (not in this LUT's tokens)", where, what, M);
  return it->second;
}
}  // namespace

double LatencyTable::layer_fixed_attn_us(int64_t M) const { return need_m(fixed_attn_, M, where_, "layer_fixed"); }
double LatencyTable::layer_fixed_mlp_us(int64_t M) const { return need_m(fixed_mlp_, M, where_, "layer_fixed"); }
double LatencyTable::layer_fixed_us(int64_t M) const { return layer_fixed_attn_us(M) + layer_fixed_mlp_us(M); }
double LatencyTable::model_fixed_us(int64_t M) const { return need_m(model_fixed_, M, where_, "model_fixed"); }

double LatencyParts::total_us() const {
  double us = model_fixed_us + attention_us + layer_fixed_us;
  for (const auto& [bits, t] : linears_us) us += t;
  return us;
}

LatencyParts LatencyTable::predict_parts(const Arch& arch, int64_t M) const {
  check_arch_matches(arch, model_, where_);
  if (static_cast<int64_t>(arch.layers.size()) != model_.num_layers)
    fail("{}: arch has {} layers, the LUT's model {}", where_, arch.layers.size(), model_.num_layers);
  if (arch.group_size != space_.group_size)
    fail("{}: arch uses group size {}, the LUT was measured with group size {}", where_, arch.group_size,
         space_.group_size);
  // The calls the runtime makes for this arch (stacked q|k|v and gate|up where the plan stacks them).
  PlanOptions po;
  po.lm_head_bits = lm_head_bits_;
  const ForwardPlan plan = forward_plan(arch, po);
  LatencyParts p;
  // Embedding row, final norm and the lm_head, at the arch's lm_head width.
  p.model_fixed_us = model_fixed_us(M) + lm_head_extra_us(plan.lm_head.bits);
  const double fa = layer_fixed_attn_us(M), fm = layer_fixed_mlp_us(M);
  for (const LayerPlan& L : plan.layers) {
    if (!L.attention.empty()) {
      for (const PlanLinear& q : L.attention) p.linears_us[q.bits] += linear_us(q.N, q.K, q.bits, M);
      p.attention_us += attention_us(L.kv_heads, M);
      p.layer_fixed_us += fa;
    }
    if (!L.mlp.empty()) {
      for (const PlanLinear& q : L.mlp) p.linears_us[q.bits] += linear_us(q.N, q.K, q.bits, M);
      p.layer_fixed_us += fm;
    }
  }
  return p;
}

double LatencyTable::lm_head_extra_us(int bits) const {
  if (bits == lm_head_bits_) return 0;
  if (!times_lm_head(bits))
    fail("{}: the arch has a {}-bit lm_head; this LUT times lm_head_bits {}{} (rebuild it with `lut --lm-head-bits "
         "{}` or a space with lm_head_bits)",
         where_, bits, lm_head_bits_,
         space_.lm_head_bits.empty() ? "" : fmt::format(" and [{}]", fmt::join(space_.lm_head_bits, ", ")), bits);
  const int64_t V = model_.vocab_size, H = model_.hidden_size;
  return linear_us(V, H, bits, 1) - linear_us(V, H, lm_head_bits_, 1);
}

bool LatencyTable::times_lm_head(int bits) const {
  return bits == lm_head_bits_ ||
         std::find(space_.lm_head_bits.begin(), space_.lm_head_bits.end(), bits) != space_.lm_head_bits.end();
}

double LatencyTable::predict_ms(const Arch& arch, int64_t M) const { return predict_parts(arch, M).total_us() / 1000.0; }

}  // namespace llmc
