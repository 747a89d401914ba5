// Byte-level BPE from a Hugging Face tokenizer.json (+ optional tokenizer_config.json).
#include <nlohmann/json.hpp>

#include <map>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/tokenizer/bpe.h"

namespace llmc {

using json = nlohmann::json;

namespace {

json parse_json_file(const std::string& path) {
  const std::string text = read_text_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", path, e.what());
  }
}

std::string type_of(const json& j) { return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : ""; }

bool get_bool(const json& j, const char* key, bool dflt, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  if (!j[key].is_boolean()) fail("{}: '{}' must be true or false", where, key);
  return j[key].get<bool>();
}

// PCRE2-quoted literal for a Split pattern given as {"String": "..."}.
std::string quote_literal(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

// Walks the pre_tokenizer tree and appends the regex list. The byte-level mapping must come last
// (as a ByteLevel pre-tokenizer), exactly once.
void collect_pre(const json& pt, const std::string& where, std::vector<std::string>& regexes, int& byte_level,
                 bool& after_byte_level) {
  const std::string t = type_of(pt);
  if (after_byte_level) fail("{}: pre_tokenizer has a '{}' step after ByteLevel, which is not supported", where, t);
  if (t == "Sequence") {
    if (!pt.contains("pretokenizers") || !pt["pretokenizers"].is_array())
      fail("{}: pre_tokenizer Sequence without a 'pretokenizers' list", where);
    for (const auto& p : pt["pretokenizers"]) collect_pre(p, where, regexes, byte_level, after_byte_level);
  } else if (t == "ByteLevel") {
    if (get_bool(pt, "add_prefix_space", false, where + ": ByteLevel"))
      fail("{}: ByteLevel pre-tokenizer with add_prefix_space = true is not supported", where);
    if (get_bool(pt, "use_regex", true, where + ": ByteLevel")) regexes.push_back(kGPT2PreRegex);
    ++byte_level;
    after_byte_level = true;
  } else if (t == "Split") {
    const std::string behavior = pt.value("behavior", "");
    if (behavior != "Isolated")
      fail("{}: Split pre-tokenizer with behavior '{}' is not supported (only Isolated)", where, behavior);
    if (get_bool(pt, "invert", false, where + ": Split")) fail("{}: Split pre-tokenizer with invert = true is not supported", where);
    const json& pat = pt.contains("pattern") ? pt["pattern"] : json();
    if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string())
      regexes.push_back(pat["Regex"].get<std::string>());
    else if (pat.is_object() && pat.contains("String") && pat["String"].is_string())
      regexes.push_back(quote_literal(pat["String"].get<std::string>()));
    else
      fail("{}: Split pre-tokenizer needs a pattern {{\"Regex\": ...}} or {{\"String\": ...}}", where);
  } else if (t == "Digits") {
    regexes.push_back(get_bool(pt, "individual_digits", false, where + ": Digits") ? "\\p{N}" : "\\p{N}+");
  } else {
    fail("{}: pre_tokenizer type '{}' is not supported (byte-level BPE needs Sequence/Split/Digits/ByteLevel)", where,
         t.empty() ? pt.dump() : t);
  }
}

std::string token_content(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return "";
}

}  // namespace

BPEVocab read_bpe_tokenizer_json(const std::string& path, const std::string& config_path) {
  const json j = parse_json_file(path);
  if (!j.is_object()) fail("{}: expected a JSON object", path);
  if (!j.contains("model") || !j["model"].is_object()) fail("{}: no 'model' object", path);
  const json& model = j["model"];
  const std::string mtype = type_of(model).empty() ? "BPE" : type_of(model);
  if (mtype != "BPE") fail("{}: model type '{}' is not supported (only byte-level BPE)", path, mtype);
  if (get_bool(model, "byte_fallback", false, path + ": model"))
    fail("{}: BPE with byte_fallback (SentencePiece-style, e.g. Llama-2) is not supported; use the SentencePiece "
         "tokenizer",
         path);
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(k) && !model[k].is_null() && !(model[k].is_string() && model[k].get<std::string>().empty()))
      fail("{}: model.{} is not supported", path, k);
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"].is_number() &&
      model["dropout"].get<double>() != 0.0)
    fail("{}: BPE dropout is not supported", path);

  // Normalizer: none (Qwen2's NFC is accepted and not applied, as in llama.cpp).
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    const json& nz = j["normalizer"];
    const std::string t = type_of(nz);
    const bool empty_seq = t == "Sequence" && nz.contains("normalizers") && nz["normalizers"].is_array() &&
                           nz["normalizers"].empty();
    if (t != "NFC" && !empty_seq) fail("{}: normalizer '{}' is not supported (byte-level BPE: none or NFC)", path, t);
  }
  if (j.contains("decoder") && !j["decoder"].is_null() && type_of(j["decoder"]) != "ByteLevel")
    fail("{}: decoder '{}' is not supported (byte-level BPE needs the ByteLevel decoder)", path, type_of(j["decoder"]));

  BPEVocab v;
  v.source = path;
  // Vocabulary and added tokens -> dense id table.
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail("{}: model.vocab is not an object", path);
  constexpr int64_t kMaxVocab = 1 << 24;
  std::map<int64_t, std::pair<std::string, GGUFTokenType>> by_id;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    if (!it.value().is_number_integer()) fail("{}: model.vocab['{}'] is not an integer id", path, it.key());
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= kMaxVocab) fail("{}: model.vocab['{}'] = {} is out of range", path, it.key(), id);
    if (!by_id.emplace(id, std::make_pair(it.key(), GGUFTokenType::NORMAL)).second)
      fail("{}: id {} is used by two vocabulary entries", path, id);
  }
  std::map<std::string, int> added;
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    if (!j["added_tokens"].is_array()) fail("{}: added_tokens is not a list", path);
    for (const auto& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
          !a["content"].is_string())
        fail("{}: added_tokens entry {} needs an integer id and a string content", path, a.dump());
      const int64_t id = a["id"].get<int64_t>();
      if (id < 0 || id >= kMaxVocab) fail("{}: added token id {} is out of range", path, id);
      const std::string content = a["content"].get<std::string>();
      if (content.empty()) fail("{}: added token {} has empty content", path, id);
      const bool special = get_bool(a, "special", false, path + ": added token");
      by_id[id] = {content, special ? GGUFTokenType::CONTROL : GGUFTokenType::USER_DEFINED};  // overrides vocab
      added[content] = static_cast<int>(id);
    }
  }
  if (by_id.empty()) fail("{}: the vocabulary is empty", path);
  const int64_t n = by_id.rbegin()->first + 1;
  v.tokens.assign(static_cast<size_t>(n), "");
  v.types.assign(static_cast<size_t>(n), GGUFTokenType::UNUSED);
  for (const auto& [id, tt] : by_id) {
    v.tokens[id] = tt.first;
    v.types[id] = tt.second;
  }

  if (!model.contains("merges") || !model["merges"].is_array()) fail("{}: model.merges is not a list", path);
  size_t r = 0;
  for (const auto& mg : model["merges"]) {
    if (mg.is_string()) {
      const std::string s = mg.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 >= s.size() || s.find(' ', sp + 1) != std::string::npos)
        fail("{}: merge {} '{}' is not of the form 'left right'", path, r, s);
      v.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
      v.merges.emplace_back(mg[0].get<std::string>(), mg[1].get<std::string>());
    } else {
      fail("{}: merge {} is neither 'left right' nor [left, right]: {}", path, r, mg.dump());
    }
    ++r;
  }
  v.ignore_merges = get_bool(model, "ignore_merges", false, path + ": model");

  if (!j.contains("pre_tokenizer") || j["pre_tokenizer"].is_null())
    fail("{}: no pre_tokenizer: not a byte-level BPE layout", path);
  int byte_level = 0;
  bool after = false;
  collect_pre(j["pre_tokenizer"], path, v.pre_regexes, byte_level, after);
  if (byte_level != 1) fail("{}: pre_tokenizer must end with one ByteLevel step (found {})", path, byte_level);
  if (v.pre_regexes.empty()) fail("{}: pre_tokenizer splits nothing (ByteLevel use_regex false and no Split)", path);

  auto id_of = [&](const std::string& content, const std::string& where) {
    auto a = added.find(content);
    if (a != added.end()) return a->second;
    for (int64_t i = 0; i < n; ++i)
      if (v.tokens[i] == content) return static_cast<int>(i);
    fail("{}: token '{}' is not in the vocabulary", where, content);
  };
  if (model.contains("unk_token") && model["unk_token"].is_string())
    v.unk = id_of(model["unk_token"].get<std::string>(), path + ": model.unk_token");

  // BOS/add_bos from a TemplateProcessing post-processor that starts with a special token
  // (Llama-3), unless tokenizer_config.json says otherwise.
  if (j.contains("post_processor") && j["post_processor"].is_object()) {
    std::vector<const json*> procs{&j["post_processor"]};
    if (type_of(j["post_processor"]) == "Sequence" && j["post_processor"].contains("processors") &&
        j["post_processor"]["processors"].is_array())
      for (const auto& p : j["post_processor"]["processors"]) procs.push_back(&p);
    for (const json* p : procs) {
      if (type_of(*p) != "TemplateProcessing" || !p->contains("single") || !(*p)["single"].is_array() ||
          (*p)["single"].empty())
        continue;
      const json& first = (*p)["single"][0];
      if (first.is_object() && first.contains("SpecialToken") && first["SpecialToken"].is_object() &&
          first["SpecialToken"].contains("id") && first["SpecialToken"]["id"].is_string()) {
        v.bos = id_of(first["SpecialToken"]["id"].get<std::string>(), path + ": post_processor");
        v.add_bos = true;
      }
    }
  }
  if (!config_path.empty()) {
    const json c = parse_json_file(config_path);
    if (!c.is_object()) fail("{}: expected a JSON object", config_path);
    if (c.contains("add_bos_token") && !c["add_bos_token"].is_null()) v.add_bos = get_bool(c, "add_bos_token", false, config_path);
    for (auto [key, dst] : {std::make_pair("bos_token", &v.bos), std::make_pair("eos_token", &v.eos),
                            std::make_pair("unk_token", &v.unk)}) {
      if (!c.contains(key) || c[key].is_null()) continue;
      const std::string content = token_content(c[key]);
      if (content.empty()) fail("{}: '{}' is neither a string nor {{\"content\": ...}}", config_path, key);
      *dst = id_of(content, config_path + ": " + key);
    }
  }
  return v;
}

std::unique_ptr<Tokenizer> load_bpe_tokenizer_json(const std::string& path, const std::string& config_path) {
  return std::make_unique<BPETokenizer>(read_bpe_tokenizer_json(path, config_path));
}

}  // namespace llmc
