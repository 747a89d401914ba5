#include "llmc/nas/search_config.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/model/arch.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/eval/tasks.h"
#include "llmc/latency/lut.h"

namespace llmc {

using json = nlohmann::json;

std::vector<TextDocument> data_source_documents(const SearchConfig& c, const std::string& source) {
  if (source.rfind("text:", 0) == 0) return load_text_docs(source.substr(5));
  std::vector<TextDocument> out;
  for (auto& t : fewshot_split_texts(source.substr(8), c.data_dir)) out.push_back({t, t});
  return out;
}

std::string resolve_config_path(const std::string& p, const std::string& base_dir) {
  std::string s = p;
  const std::string tok = "${shared}";
  if (s.rfind(tok, 0) == 0) return shared_root() + s.substr(tok.size());
  if (s.empty() || s[0] == '/') return s;
  return path_join(base_dir, s);
}

namespace {

// Reads typed values from one JSON object and rejects keys nobody asked for.
class Obj {
 public:
  Obj(const json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object()) fail("{}: expected an object", where_);
  }
  template <typename T>
  void get(const char* key, T* out) {
    seen_.push_back(key);
    if (!j_.contains(key) || j_.at(key).is_null()) return;
    const json& v = j_.at(key);
    bool ok;
    if constexpr (std::is_same_v<T, bool>) ok = v.is_boolean();
    else if constexpr (std::is_integral_v<T>) ok = v.is_number_integer();
    else if constexpr (std::is_floating_point_v<T>) ok = v.is_number();
    else if constexpr (std::is_same_v<T, std::string>) ok = v.is_string();
    else ok = true;
    if (!ok) fail("{}.{}: wrong type ({})", where_, key, v.dump());
    try {
      *out = v.get<T>();
    } catch (const json::exception&) {
      fail("{}.{}: wrong type ({})", where_, key, v.dump());
    }
  }
  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  const json* sub(const char* key) {
    seen_.push_back(key);
    return j_.contains(key) && !j_.at(key).is_null() ? &j_.at(key) : nullptr;
  }
  void finish() {
    for (auto it = j_.begin(); it != j_.end(); ++it)
      if (std::find(seen_.begin(), seen_.end(), it.key()) == seen_.end())
        fail("{}: unknown key '{}'", where_, it.key());
  }
  const std::string& where() const { return where_; }

 private:
  const json& j_;
  std::string where_;
  std::vector<std::string> seen_;
};

}  // namespace

SearchConfig parse_search_config(const std::string& text, const std::string& where, const std::string& base_dir) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", where, e.what());
  }
  SearchConfig c;
  c.path = where;
  c.data_dir = path_join(shared_root(), "data");
  Obj top(j, where);
  top.get("model", &c.model);
  if (c.model.empty()) fail("{}: missing required key 'model'", where);
  c.model = resolve_config_path(c.model, base_dir);
  if (const json* d = top.sub("data")) {
    Obj o(*d, where + ".data");
    std::vector<std::string> sources;
    if (const json* s = o.sub("sources")) {
      if (!s->is_array())
        fail("{}.data.sources: expected an array of \"text:FILE\" or \"fewshot:TASK\" strings", where);
      for (const auto& x : *s) {
        if (!x.is_string()) fail("{}.data.sources: {} is not a string", where, x.dump());
        std::string v = x;
        if (v.rfind("text:", 0) == 0) {
          c.data_sources.push_back("text:" + resolve_config_path(v.substr(5), base_dir));
        } else if (v.rfind("fewshot:", 0) == 0) {
          if (!find_task(v.substr(8)))
            fail("{}.data.sources: '{}': '{}' is not a multiple-choice task", where, v, v.substr(8));
          c.data_sources.push_back(v);
        } else {
          fail("{}.data.sources: '{}' must look like text:FILE or fewshot:TASK", where, v);
        }
      }
    }
    o.get("seq_len", &c.seq_len);
    o.get("batch_size", &c.batch_size);
    o.get("train_sequences", &c.train_sequences);
    o.get("valid_sequences", &c.valid_sequences);
    o.finish();
    if (c.seq_len < 2 || c.batch_size < 1 || c.train_sequences < 1 || c.valid_sequences < 1)
      fail("{}.data: seq_len >= 2, batch_size, train_sequences and valid_sequences >= 1 required", where);
  }
  if (const json* s = top.sub("space")) {
    if (s->is_string()) c.space = load_search_space(resolve_config_path(*s, base_dir));
    else c.space = parse_search_space(s->dump(), where + ".space");
  }
  top.get("lut", &c.lut);
  if (!c.lut.empty()) c.lut = resolve_config_path(c.lut, base_dir);
  if (const json* l = top.sub("lut_settings")) {
    Obj o(*l, where + ".lut_settings");
    o.get("tokens", &c.lut_tokens);
    o.get("context", &c.lut_context);
    int64_t lm_bits = c.lut_lm_head_bits;
    o.get("lm_head_bits", &lm_bits);
    if (!valid_lm_head_bits(static_cast<int>(lm_bits)))
      fail("{}.lut_settings.lm_head_bits: {} (expected 16, 8 or 4, as export --lm-head-bits)", where, lm_bits);
    c.lut_lm_head_bits = static_cast<int>(lm_bits);
    int64_t repeats = c.lut_repeats;
    o.get("repeats", &repeats);
    if (repeats < kLutMinRepeats || repeats > kLutMaxRepeats)
      fail("{}.lut_settings.repeats: {} (expected {} to {} timed samples per entry, as lut --repeats)", where, repeats,
           kLutMinRepeats, kLutMaxRepeats);
    c.lut_repeats = static_cast<int>(repeats);
    o.finish();
  }
  if (const json* t = top.sub("target")) {
    Obj o(*t, where + ".target");
    o.get("ms", &c.target_ms);
    o.get("fraction", &c.target_fraction);
    o.get("tokens", &c.target_tokens);
    std::string rel = "original";
    o.get("relative_to", &rel);
    o.finish();
    if (rel.rfind("uniform:", 0) == 0) {
      const std::string b = rel.substr(8);
      c.target_relative_bits = b == "2" || b == "3" || b == "4" || b == "8" || b == "16" ? std::stoi(b) : -1;
    } else if (rel != "original") {
      c.target_relative_bits = -1;
    }
    if (c.target_relative_bits < 0)
      fail("{}.target.relative_to: '{}' (expected original or uniform:B, B in 2, 3, 4, 8, 16)", where, rel);
    // A given value out of range is an error, never the default in disguise.
    if (o.has("ms") && !(c.target_ms > 0)) fail("{}.target.ms: {} (expected > 0)", where, c.target_ms);
    // Relative to the original a target above 1 compresses nothing; relative to a uniform
    // quantization, a little above 1 (slower than it, more accurate) is a sensible request.
    const double max_fraction = c.target_relative_bits > 0 ? 4.0 : 1.0;
    if (o.has("fraction") && !(c.target_fraction > 0 && c.target_fraction <= max_fraction))
      fail("{}.target.fraction: {} (expected a fraction of the {} latency in (0, {}])", where, c.target_fraction,
           c.target_relative_bits > 0 ? "uniform " + std::to_string(c.target_relative_bits) + "-bit" : "original",
           max_fraction);
    if (c.target_tokens < 1) fail("{}.target.tokens: {} (expected >= 1)", where, c.target_tokens);
  }
  if (const json* s = top.sub("schedule")) {
    Obj o(*s, where + ".schedule");
    o.get("steps", &c.steps);
    o.get("arch_lr", &c.arch_lr);
    o.get("arch_optimizer", &c.arch_optimizer);
    o.get("weight_lr", &c.weight_lr);
    o.get("lora_rank", &c.lora_rank);
    o.get("lambda", &c.lambda);
    o.get("tau_start", &c.tau_start);
    o.get("tau_end", &c.tau_end);
    o.get("hard", &c.hard);
    o.get("distill", &c.distill);
    o.get("fit_target", &c.fit_target);
    o.get("discretize", &c.discretize);
    o.get("knapsack_width_weights", &c.knapsack_width_weights);
    o.get("sensitivity_passes", &c.sensitivity_passes);
    o.get("seed", &c.seed);
    o.get("checkpoint_every", &c.checkpoint_every);
    o.get("sequential_mid_bits", &c.sequential_mid_bits);
    o.get("init", &c.init);
    o.get("init_scale", &c.init_scale);
    o.finish();
    if (c.init != "uniform" && c.init != "sensitivity")
      fail("{}.schedule.init: '{}' is not uniform or sensitivity", where, c.init);
    if (c.discretize != "argmax" && c.discretize != "knapsack")
      fail("{}.schedule.discretize: '{}' is not argmax or knapsack", where, c.discretize);
    if (c.knapsack_width_weights.empty())
      fail("{}.schedule.knapsack_width_weights: empty (expected weights > 0, e.g. [1])", where);
    for (double w : c.knapsack_width_weights)
      if (!(w > 0)) fail("{}.schedule.knapsack_width_weights: {} (expected > 0)", where, w);
    if (c.knapsack_width_weights != std::vector<double>{1.0} && c.discretize != "knapsack")
      fail("{}.schedule.knapsack_width_weights: needs \"discretize\": \"knapsack\"", where);
    if (c.sensitivity_passes < 1)
      fail("{}.schedule.sensitivity_passes: {} (expected >= 1)", where, c.sensitivity_passes);
    if (c.sensitivity_passes > 1 && (c.init != "sensitivity" || c.discretize != "knapsack"))
      fail("{}.schedule.sensitivity_passes: needs \"init\": \"sensitivity\" and \"discretize\": \"knapsack\"", where);
    if (!(c.init_scale > 0)) fail("{}.schedule.init_scale: {} (expected > 0)", where, c.init_scale);
    if (c.steps < 0) fail("{}.schedule.steps: {} (expected >= 0; 0 = no gradient steps)", where, c.steps);
    if (c.tau_start <= 0 || c.tau_end <= 0) fail("{}.schedule: tau_start and tau_end must be > 0", where);
    if (c.lambda < 0) fail("{}.schedule.lambda: must be >= 0", where);
    if (c.lora_rank < 0) fail("{}.schedule.lora_rank: must be >= 0", where);
    if (c.arch_lr < 0) fail("{}.schedule.arch_lr: {} (expected >= 0)", where, c.arch_lr);
    if (c.arch_optimizer != "adam" && c.arch_optimizer != "sgd")
      fail("{}.schedule.arch_optimizer: '{}' is not adam or sgd", where, c.arch_optimizer);
    if (c.weight_lr < 0) fail("{}.schedule.weight_lr: {} (expected >= 0)", where, c.weight_lr);
    if (c.checkpoint_every < 0) fail("{}.schedule.checkpoint_every: {} (expected >= 0; 0 = only at the end)", where,
                                     c.checkpoint_every);
  }
  top.get("mode", &c.mode);
  if (c.mode != "joint" && c.mode != "sequential" && c.mode != "width-only" && c.mode != "bits-only")
    fail("{}.mode: '{}' is not joint, sequential, width-only or bits-only", where, c.mode);
  top.finish();
  // Uniform B-bit must be an architecture of the space: B in every layer's bits.
  auto has_bits = [&](const LayerSpace& s) {
    return std::find(s.bits.begin(), s.bits.end(), c.target_relative_bits) != s.bits.end();
  };
  bool all = has_bits(c.space.defaults);
  for (const auto& o : c.space.overrides) all = all && has_bits(o.second);
  if (c.target_relative_bits > 0 && !all)
    fail("{}.target.relative_to: uniform:{} is not one of the space's bits", where, c.target_relative_bits);
  // The lm_head's bits are chosen among the knapsack's scored candidates (nas/search.h); the LUT
  // prices them against its own lm_head, so that one must be a choice.
  const auto& hb = c.space.lm_head_bits;
  if (!c.space.allows_lut_lm_head(c.lut_lm_head_bits))
    fail("{}.lut_settings.lm_head_bits: {} is not one of space.lm_head_bits [{}]", where, c.lut_lm_head_bits,
         fmt::join(hb, ", "));
  if (!hb.empty() && c.discretize != "knapsack")
    fail("{}.space.lm_head_bits: the lm_head is chosen among the knapsack's candidates; needs \"discretize\": "
         "\"knapsack\"",
         where);
  return c;
}

SearchConfig load_search_config(const std::string& path) {
  if (!file_exists(path)) fail("{}: search config not found", path);
  return parse_search_config(read_text_file(path), path, parent_dir(path));
}

}  // namespace llmc
