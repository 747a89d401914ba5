// sweep.json -> SweepConfig, with one-line errors naming the file and key.
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <set>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/nas/search_config.h"
#include "llmc/sweep/sweep.h"

namespace llmc {

using json = nlohmann::ordered_json;

namespace {

void only_keys(const json& o, const std::string& where, std::initializer_list<const char*> keys) {
  if (!o.is_object()) fail("{}: expected an object", where);
  std::set<std::string> ok(keys.begin(), keys.end());
  for (const auto& [k, v] : o.items())
    if (!ok.count(k)) fail("{}: unknown key '{}'", where, k);
}

template <typename T>
T get(const json& o, const char* key, T def, const std::string& where) {
  if (!o.contains(key)) return def;
  const json& v = o.at(key);
  try {
    if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) throw std::runtime_error("");
    } else if constexpr (std::is_integral_v<T>) {
      if (!v.is_number_integer()) throw std::runtime_error("");
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!v.is_number()) throw std::runtime_error("");
    } else {
      if (!v.is_string()) throw std::runtime_error("");
    }
    return v.get<T>();
  } catch (const std::exception&) {
    fail("{}.{}: {} has the wrong type", where, key, v.dump());
  }
}

}  // namespace

SweepConfig load_sweep_config(const std::string& path) {
  return parse_sweep_config(read_text_file(path), path, parent_dir(path));
}

SweepConfig parse_sweep_config(const std::string& text, const std::string& where, const std::string& base_dir) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", where, e.what());
  }
  only_keys(j, where,
            {"search", "lut", "threads", "export", "baselines", "finetuned_baselines", "modes", "targets", "bench", "eval"});
  SweepConfig c;
  c.path = where;
  if (!j.contains("search")) fail("{}: missing key 'search' (the base search config)", where);
  c.search_config = resolve_config_path(get<std::string>(j, "search", "", where), base_dir.empty() ? "." : base_dir);
  // The search config is read now so a bad one fails before any stage runs.
  const SearchConfig sc = load_search_config(c.search_config);
  c.model = sc.model;
  if (j.contains("lut")) {
    c.lut = resolve_config_path(get<std::string>(j, "lut", "", where), base_dir.empty() ? "." : base_dir);
    if (!file_exists(c.lut)) fail("{}.lut: {} does not exist", where, c.lut);
  }
  c.threads = get<int>(j, "threads", 2, where);
  if (c.threads < 1) fail("{}.threads: {} (expected >= 1)", where, c.threads);
  c.lm_head_bits = sc.lut_lm_head_bits;
  if (j.contains("export")) {
    const json& e = j["export"];
    const std::string w = where + ".export";
    only_keys(e, w, {"quant", "group_size", "lm_head_bits", "dense_dtype", "finetune_steps", "distill"});
    c.quant = get<std::string>(e, "quant", c.quant, w);
    c.group_size = get<int>(e, "group_size", 0, w);
    c.lm_head_bits = get<int>(e, "lm_head_bits", c.lm_head_bits, w);
    c.dense_dtype = get<std::string>(e, "dense_dtype", c.dense_dtype, w);
    c.finetune_steps = get<int64_t>(e, "finetune_steps", c.finetune_steps, w);
    c.distill = get<bool>(e, "distill", c.distill, w);
    if (c.quant != "rtn" && c.quant != "gptq") fail("{}.quant: '{}' (rtn or gptq)", w, c.quant);
    if (c.group_size != 0 && c.group_size != 32 && c.group_size != 64 && c.group_size != 128)
      fail("{}.group_size: {} (32, 64 or 128)", w, c.group_size);
    if (c.dense_dtype != "float32" && c.dense_dtype != "bfloat16")
      fail("{}.dense_dtype: '{}' (float32 or bfloat16)", w, c.dense_dtype);
    if (c.finetune_steps < 0) fail("{}.finetune_steps: {} (expected >= 0)", w, c.finetune_steps);
  }
  if (c.lm_head_bits != 16 && c.lm_head_bits != 8 && c.lm_head_bits != 4)
    fail("{}.export.lm_head_bits: {} (16, 8 or 4)", where, c.lm_head_bits);
  if (c.lm_head_bits != sc.lut_lm_head_bits)
    fail("{}.export.lm_head_bits: {} but the search config's lut_settings.lm_head_bits is {}: the LUT would not "
         "predict the exports",
         where, c.lm_head_bits, sc.lut_lm_head_bits);
  if (c.group_size == 0) c.group_size = sc.space.group_size;
  if (c.group_size != sc.space.group_size)
    fail("{}.export.group_size: {} but the search space's group_size is {}", where, c.group_size, sc.space.group_size);
  auto baselines = [&](const char* key, std::vector<std::pair<std::string, int>>& out) {
    if (!j.contains(key)) return;
    const json& b = j[key];
    const std::string w = where + "." + key;
    only_keys(b, w, {"rtn", "gptq"});
    for (const auto& [q, bits] : b.items()) {
      if (!bits.is_array()) fail("{}.{}: expected an array of bit widths", w, q);
      for (const auto& v : bits) {
        if (!v.is_number_integer() || (v.get<int>() != 2 && v.get<int>() != 3 && v.get<int>() != 4 && v.get<int>() != 8))
          fail("{}.{}: {} is not 2, 3, 4 or 8", w, q, v.dump());
        out.emplace_back(q, v.get<int>());
      }
    }
  };
  baselines("baselines", c.baselines);
  baselines("finetuned_baselines", c.finetuned_baselines);
  if (!c.finetuned_baselines.empty() && c.finetune_steps <= 0)
    fail("{}.finetuned_baselines: export.finetune_steps is 0, so they would not be fine-tuned", where);
  if (j.contains("modes")) {
    if (!j["modes"].is_array()) fail("{}.modes: expected an array", where);
    for (const auto& m : j["modes"]) {
      const std::string s = m.is_string() ? m.get<std::string>() : m.dump();
      if (s != "joint" && s != "sequential" && s != "width-only" && s != "bits-only")
        fail("{}.modes: '{}' is not joint, sequential, width-only or bits-only", where, s);
      c.modes.push_back(s);
    }
  }
  if (j.contains("targets")) {
    const json& t = j["targets"];
    const std::string w = where + ".targets";
    only_keys(t, w, {"count", "ms", "extra_ms", "at_uniform"});
    auto times = [&](const char* key, std::vector<double>& out) {
      if (!t.contains(key)) return;
      if (!t[key].is_array() || t[key].empty()) fail("{}.{}: expected a non-empty array of milliseconds", w, key);
      for (const auto& v : t[key]) {
        if (!v.is_number() || !(v.get<double>() > 0)) fail("{}.{}: {} is not a positive time", w, key, v.dump());
        out.push_back(v.get<double>());
      }
    };
    times("ms", c.targets_ms);
    times("extra_ms", c.extra_targets_ms);
    if (t.contains("at_uniform")) {
      if (!t["at_uniform"].is_array() || t["at_uniform"].empty())
        fail("{}.at_uniform: expected a non-empty array of bit widths", w);
      for (const auto& v : t["at_uniform"]) {
        const int bits = v.is_number_integer() ? v.get<int>() : 0;
        if (std::none_of(c.baselines.begin(), c.baselines.end(), [&](const auto& b) { return b.second == bits; }))
          fail("{}.at_uniform: {} is not the bits of a uniform baseline (\"baselines\")", w, v.dump());
        c.target_uniform_bits.push_back(bits);
      }
    }
    c.target_count = get<int>(t, "count", c.target_count, w);
    if (c.target_count < 0 ||
        (c.target_count == 0 && c.extra_targets_ms.empty() && c.target_uniform_bits.empty()))
      fail("{}.count: {} (expected >= 1, or 0 with extra_ms or at_uniform)", w, c.target_count);
  }
  if (!c.modes.empty() && c.targets_ms.empty() && c.target_count > 0) {
    auto has = [&](int bits) {
      for (const auto& [q, b] : c.baselines)
        if (b == bits) return true;
      return false;
    };
    if (!has(8))
      fail("{}.targets: without \"ms\" the targets end at the uniform 8-bit baseline; add it to "
           "\"baselines\" or give \"targets\": {{\"ms\": [...]}}",
           where);
  }
  if (j.contains("bench")) {
    const json& b = j["bench"];
    const std::string w = where + ".bench";
    only_keys(b, w, {"prompt_tokens", "new_tokens", "repeats"});
    c.prompt_tokens = get<int64_t>(b, "prompt_tokens", c.prompt_tokens, w);
    c.new_tokens = get<int64_t>(b, "new_tokens", c.new_tokens, w);
    c.bench_repeats = get<int>(b, "repeats", c.bench_repeats, w);
    if (c.prompt_tokens < 1 || c.new_tokens < 1 || c.bench_repeats < 1)
      fail("{}: prompt_tokens, new_tokens and repeats must be >= 1", w);
  }
  if (j.contains("eval")) {
    const json& e = j["eval"];
    const std::string w = where + ".eval";
    only_keys(e, w, {"tasks", "limit", "ppl"});
    c.eval_tasks = get<std::string>(e, "tasks", c.eval_tasks, w);
    c.eval_limit = get<int64_t>(e, "limit", c.eval_limit, w);
    if (e.contains("ppl") && !e["ppl"].is_null()) {
      const json& p = e["ppl"];
      const std::string pw = w + ".ppl";
      only_keys(p, pw, {"task", "max_length", "limit"});
      c.ppl_task = get<std::string>(p, "task", "wikitext2_gptq", pw);
      c.ppl_max_length = get<int64_t>(p, "max_length", 0, pw);
      c.ppl_limit = get<int64_t>(p, "limit", 0, pw);
      if (c.ppl_task != "wikitext2_gptq" && c.ppl_task != "wikitext" && c.ppl_task.rfind("text:", 0) != 0)
        fail("{}.task: '{}' (wikitext2_gptq, wikitext or text:FILE)", pw, c.ppl_task);
      if (c.ppl_max_length < 0 || c.ppl_limit < 0) fail("{}: max_length and limit must be >= 0", pw);
    }
    if (c.eval_tasks.empty()) fail("{}.tasks: empty", w);
    if (c.eval_limit < 0) fail("{}.limit: {} (0 = all documents)", w, c.eval_limit);
  }
  if (c.baselines.empty() && c.modes.empty()) fail("{}: no baselines and no modes: nothing to run", where);
  return c;
}

std::string SweepConfig::search_json() const {
  json j;
  j["search"] = read_text_file(search_config);  // by content: how the path was spelled does not matter
  j["finetune"] = {{"finetune_steps", finetune_steps}, {"distill", distill}};
  return j.dump();
}

std::string SweepConfig::common_json() const { return sweep_common_json(canonical_json()); }

std::string sweep_study_json(const std::string& canonical) {
  try {
    json j = json::parse(canonical);
    // Which points a study lists (points are named by method and bits, or by mode and target) does
    // not change what a listed point is: a running study takes added or dropped ones.
    if (j.contains("targets")) j["targets"].erase("extra_ms"), j["targets"].erase("at_uniform");
    j.erase("finetuned_baselines");
    j.erase("baselines");
    j.erase("modes");
    return j.dump();
  } catch (const json::exception&) {  // not JSON, or not objects where a config has them
    return "";
  }
}

std::string sweep_common_json(const std::string& canonical) {
  // Drops what search_json() holds: the base search config and the search points' fine-tune.
  try {
    json j = json::parse(sweep_study_json(canonical));
    j.erase("search");
    if (j.contains("export")) {
      j["export"].erase("finetune_steps");
      j["export"].erase("distill");
    }
    return j.dump();
  } catch (const json::exception&) {  // not JSON, or not objects where a config has them
    return "";
  }
}

std::string SweepConfig::canonical_json() const {
  json j;
  j["search"] = read_text_file(search_config);  // by content: how the path was spelled does not matter
  j["model"] = model;
  // A given LUT by content (its hash): the targets and every search depend on it.
  if (!lut.empty()) j["lut"] = content_hash(lut);
  j["threads"] = threads;
  j["export"] = {{"quant", quant},           {"group_size", group_size},         {"lm_head_bits", lm_head_bits},
                 {"dense_dtype", dense_dtype}, {"finetune_steps", finetune_steps}, {"distill", distill}};
  json b = json::array();
  for (const auto& [q, bits] : baselines) b.push_back({q, bits});
  j["baselines"] = b;
  j["modes"] = modes;
  j["targets"] = {{"ms", targets_ms}, {"count", target_count}};
  // Only when given, so a study started before the key existed keeps its fingerprint.
  if (!extra_targets_ms.empty()) j["targets"]["extra_ms"] = extra_targets_ms;
  if (!target_uniform_bits.empty()) j["targets"]["at_uniform"] = target_uniform_bits;
  if (!finetuned_baselines.empty()) {
    json f = json::array();
    for (const auto& [q, bits] : finetuned_baselines) f.push_back({q, bits});
    j["finetuned_baselines"] = f;
  }
  j["bench"] = {{"prompt_tokens", prompt_tokens}, {"new_tokens", new_tokens}, {"repeats", bench_repeats}};
  j["eval"] = {{"tasks", eval_tasks},
               {"limit", eval_limit},
               {"ppl", {{"task", ppl_task}, {"max_length", ppl_max_length}, {"limit", ppl_limit}}}};
  return j.dump();
}

}  // namespace llmc
