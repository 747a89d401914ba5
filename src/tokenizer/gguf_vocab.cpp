// A Hugging Face folder's tokenizer -> tokenizer.ggml.* metadata (include/llmc/tokenizer/gguf_vocab.h).
#include "llmc/tokenizer/gguf_vocab.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <map>
#include <unordered_map>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/json_file.h"
#include "llmc/io/gguf_writer.h"
#include "llmc/tokenizer/bpe.h"
#include "llmc/tokenizer/spm_model.h"
#include "llmc/tokenizer/spm_native.h"

namespace llmc {

using json = nlohmann::json;

namespace {

constexpr float kPadScore = -10000.0f;    // convert_hf_to_gguf.py's score of a [PAD<id>] token
constexpr float kAddedScore = -1000.0f;   // ... and of an added token

json read_json_or_null(const std::string& path) {
  if (!file_exists(path)) return nullptr;
  json j = read_json_file(path);
  if (!j.is_object()) fail("{}: expected a JSON object", path);
  return j;
}

std::string content_of(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return "";
}

GGUFValue types_array(const std::vector<GGUFTokenType>& ts) {
  std::vector<int32_t> v;
  v.reserve(ts.size());
  for (auto t : ts) v.push_back(static_cast<int32_t>(t));
  return gguf_i32_array(v);
}

// The vocabulary being built: texts, scores (SentencePiece only) and types by id.
struct Vocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<GGUFTokenType> types;
  std::string where;  // the tokenizer file, for errors

  // Fills ids without a token and pads to `rows` with [PAD<id>] (UNUSED); refuses more tokens than rows.
  void fit(int64_t rows) {
    if (static_cast<int64_t>(tokens.size()) > rows)
      fail("{}: the tokenizer has {} tokens but the model's embedding has {} rows", where, tokens.size(), rows);
    const size_t n = static_cast<size_t>(rows);
    tokens.resize(n);
    types.resize(n, GGUFTokenType::UNUSED);
    if (!scores.empty()) scores.resize(n, kPadScore);
    for (size_t i = 0; i < n; ++i)
      if (tokens[i].empty()) {
        tokens[i] = fmt::format("[PAD{}]", i);
        types[i] = GGUFTokenType::UNUSED;
        if (!scores.empty()) scores[i] = kPadScore;
      }
  }

  int id_of(const std::string& text) const {
    for (size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] == text) return static_cast<int>(i);
    return -1;
  }
};

// Added tokens of a SentencePiece folder: tokenizer_config.json's added_tokens_decoder
// {"<id>": {"content", "special"}} and added_tokens.json {"<content>": id}.
void add_spm_added_tokens(const std::string& dir, const json& tc, Vocab& v, int64_t rows) {
  struct Added {
    std::string content;
    bool special;
    std::string from;
  };
  std::map<int64_t, Added> added;
  const std::string tc_path = path_join(dir, "tokenizer_config.json");
  if (!tc.is_null() && tc.contains("added_tokens_decoder") && !tc["added_tokens_decoder"].is_null()) {
    const json& d = tc["added_tokens_decoder"];
    if (!d.is_object()) fail("{}: added_tokens_decoder is not an object", tc_path);
    for (auto it = d.begin(); it != d.end(); ++it) {
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(it.key(), &used);
        if (used != it.key().size()) id = -1;
      } catch (const std::exception&) {
        id = -1;
      }
      if (id < 0) fail("{}: added_tokens_decoder key '{}' is not a token id", tc_path, printable_token(it.key()));
      const std::string c = content_of(it.value());
      if (c.empty()) fail("{}: added_tokens_decoder['{}'] has no content", tc_path, printable_token(it.key()));
      bool special = false;
      if (it.value().is_object() && it.value().contains("special")) {
        if (!it.value()["special"].is_boolean()) fail("{}: added_tokens_decoder['{}'].special is not a boolean", tc_path,
                                                         printable_token(it.key()));
        special = it.value()["special"].get<bool>();
      }
      added[id] = {c, special, tc_path};
    }
  }
  const std::string at_path = path_join(dir, "added_tokens.json");
  const json at = read_json_or_null(at_path);
  if (!at.is_null())
    for (auto it = at.begin(); it != at.end(); ++it) {
      if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
        fail("{}: '{}' is not mapped to a token id", at_path, printable_token(it.key()));
      const int64_t id = it.value().get<int64_t>();
      if (it.key().empty()) fail("{}: an added token with empty text", at_path);
      if (!added.count(id)) added[id] = {it.key(), false, at_path};
    }
  for (const auto& [id, a] : added) {
    if (id >= rows)
      fail("{}: added token {} '{}' is past the model's embedding ({} rows)", a.from, id, printable_token(a.content),
           rows);
    if (id < static_cast<int64_t>(v.tokens.size()) && v.tokens[id] == a.content) continue;  // the piece itself
    if (id >= static_cast<int64_t>(v.tokens.size())) {
      v.tokens.resize(id + 1);
      v.scores.resize(id + 1, kPadScore);
      v.types.resize(id + 1, GGUFTokenType::UNUSED);
    }
    v.tokens[id] = a.content;
    v.scores[id] = kAddedScore;
    v.types[id] = a.special ? GGUFTokenType::CONTROL : GGUFTokenType::USER_DEFINED;
  }
}

// The id an int field of config.json holds; -1 when absent, null or not an id of the vocabulary.
int config_id(const json& cfg, const char* key, size_t n) {
  if (cfg.is_null() || !cfg.contains(key) || !cfg[key].is_number_integer()) return -1;
  const int64_t id = cfg[key].get<int64_t>();
  return id >= 0 && id < static_cast<int64_t>(n) ? static_cast<int>(id) : -1;
}

void check_id(const std::string& where, const char* what, int id, size_t n) {
  if (id >= static_cast<int64_t>(n))
    fail("{}: the {} token id {} is outside the vocabulary ({} tokens)", where, what, id, n);
}

// "<0xAB>": two hex digits.
bool is_byte_piece(const std::string& p) {
  return p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>' && std::isxdigit(static_cast<unsigned char>(p[3])) &&
         std::isxdigit(static_cast<unsigned char>(p[4]));
}

const char* const kCaseInsensitiveContractions = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
const char* const kExpandedContractions = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";

}  // namespace

std::string bpe_pre_name_of(const std::vector<std::string>& regexes) {
  std::vector<std::string> norm = regexes;
  const std::string ci = kCaseInsensitiveContractions;
  for (auto& r : norm)
    for (size_t p; (p = r.find(ci)) != std::string::npos;) r.replace(p, ci.size(), kExpandedContractions);
  for (const char* name : {"gpt2", "smollm", "llama-bpe", "qwen2"})
    if (bpe_pre_regexes(name, "") == norm) return name;
  return "";
}

GGUFMetadata gguf_tokenizer_from_hf(const std::string& dir, int64_t vocab_rows, int config_bos, int config_eos) {
  LLMC_CHECK(dir_exists(dir), "{}: not a folder", dir);
  LLMC_CHECK(vocab_rows > 0, "{}: the model has no embedding rows", dir);
  const std::string spm_path = path_join(dir, "tokenizer.model"), tj_path = path_join(dir, "tokenizer.json");
  const std::string tc_path = path_join(dir, "tokenizer_config.json");
  const json tc = read_json_or_null(tc_path);
  const json cfg = read_json_or_null(path_join(dir, "config.json"));
  auto tc_bool = [&](const char* key, bool& out) {
    if (tc.is_null() || !tc.contains(key) || tc[key].is_null()) return false;
    if (!tc[key].is_boolean()) fail("{}: '{}' must be true or false", tc_path, key);
    out = tc[key].get<bool>();
    return true;
  };

  GGUFMetadata kv;
  Vocab v;
  int bos = -1, eos = -1, unk = -1, pad = -1;
  bool add_bos = true, add_space_prefix = true;
  const bool spm = file_exists(spm_path);
  if (spm) {
    const SpmModelProto m = read_spm_model(spm_path);
    v.where = spm_path;
    if (m.model_type != 2)
      fail("{}: a SentencePiece {} model; llama.cpp's SentencePiece tokenizer (tokenizer.ggml.model 'llama') is "
           "SentencePiece's BPE, so GGUF export converts BPE models only",
           spm_path, spm_model_type_name(m.model_type));
    v.tokens = m.pieces;
    v.scores = m.scores;
    v.types = m.types;
    add_spm_added_tokens(dir, tc, v, vocab_rows);
    v.fit(vocab_rows);
    const size_t n = v.tokens.size();
    bos = config_bos >= 0 ? config_bos : m.bos_id;
    eos = config_eos >= 0 ? config_eos : m.eos_id;
    unk = m.unk_id;
    pad = m.pad_id;
    tc_bool("add_bos_token", add_bos);
    kv.emplace_back("tokenizer.ggml.model", gguf_str("llama"));
    kv.emplace_back("tokenizer.ggml.tokens", gguf_str_array(v.tokens));
    kv.emplace_back("tokenizer.ggml.scores", gguf_f32_array(v.scores));
    kv.emplace_back("tokenizer.ggml.token_type", types_array(v.types));
    if (int p = config_id(cfg, "pad_token_id", n); p >= 0) pad = p;
    add_space_prefix = m.add_dummy_prefix;
    if (!add_space_prefix) kv.emplace_back("tokenizer.ggml.add_space_prefix", gguf_bool(false));
  } else if (file_exists(tj_path)) {
    BPEVocab b = read_bpe_tokenizer_json(tj_path, tc.is_null() ? "" : tc_path);
    BPETokenizer check(b);  // the checks our loader makes (merges name tokens, regexes compile)
    v.where = tj_path;
    const std::string pre = bpe_pre_name_of(b.pre_regexes);
    if (pre.empty()) {
      std::string list;
      for (const auto& r : b.pre_regexes) list += (list.empty() ? "" : ", ") + ("'" + r + "'");
      fail("{}: its pre-tokenizer (regexes {}) is none of llama.cpp's gpt2, smollm, llama-bpe, qwen2; the GGUF "
           "could not name it (tokenizer.ggml.pre)",
           tj_path, list);
    }
    if (b.ignore_merges != (pre == "llama-bpe"))
      fail("{}: model.ignore_merges is {} but llama.cpp's '{}' pre-tokenizer {} merges; the GGUF would tokenize "
           "otherwise",
           tj_path, b.ignore_merges, pre, pre == "llama-bpe" ? "ignores" : "applies");
    v.tokens = b.tokens;
    v.types = b.types.empty() ? std::vector<GGUFTokenType>(b.tokens.size(), GGUFTokenType::NORMAL) : b.types;
    v.fit(vocab_rows);
    const size_t n = v.tokens.size();
    std::vector<std::string> merges;
    merges.reserve(b.merges.size());
    for (size_t r = 0; r < b.merges.size(); ++r) {
      const auto& [l, rt] = b.merges[r];
      if (l.find(' ') != std::string::npos || rt.find(' ') != std::string::npos)
        fail("{}: merge {} ['{}', '{}'] holds a space, which GGUF's 'left right' merges cannot write", tj_path, r,
             printable_token(l), printable_token(rt));
      merges.push_back(l + " " + rt);
    }
    bos = b.bos >= 0 ? b.bos : config_bos;
    eos = b.eos >= 0 ? b.eos : config_eos;
    unk = b.unk;
    add_bos = b.add_bos;
    kv.emplace_back("tokenizer.ggml.model", gguf_str("gpt2"));
    kv.emplace_back("tokenizer.ggml.pre", gguf_str(pre));
    kv.emplace_back("tokenizer.ggml.tokens", gguf_str_array(v.tokens));
    kv.emplace_back("tokenizer.ggml.token_type", types_array(v.types));
    kv.emplace_back("tokenizer.ggml.merges", gguf_str_array(merges));
    if (int p = config_id(cfg, "pad_token_id", n); p >= 0) pad = p;
    kv.emplace_back("tokenizer.ggml.add_space_prefix", gguf_bool(false));
  } else {
    fail("{}: no tokenizer.model or tokenizer.json to write the GGUF's tokenizer from", dir);
  }

  const size_t n = v.tokens.size();
  if (!tc.is_null() && tc.contains("pad_token") && !tc["pad_token"].is_null()) {
    const std::string c = content_of(tc["pad_token"]);
    if (c.empty()) fail("{}: 'pad_token' is neither a string nor {{\"content\": ...}}", tc_path);
    if (int p = v.id_of(c); p >= 0) pad = p;
  }
  check_id(v.where, "BOS", bos, n);
  check_id(v.where, "EOS", eos, n);
  check_id(v.where, "unknown", unk, n);
  check_id(v.where, "padding", pad, n);
  if (spm) {
    // What llama.cpp and our GGUF reader need of the pieces: a BYTE piece names its byte.
    for (size_t i = 0; i < n; ++i)
      if (v.types[i] == GGUFTokenType::BYTE && !is_byte_piece(v.tokens[i]))
        fail("{}: piece {} '{}' has type BYTE but is not of the form <0xXX>", v.where, i, printable_token(v.tokens[i]));
    SpmVocab sv;
    sv.pieces = v.tokens;
    sv.scores = v.scores;
    sv.types = v.types;
    sv.bos = bos;
    sv.eos = eos;
    sv.unk = unk;
    sv.add_bos = add_bos;
    sv.add_space_prefix = add_space_prefix;
    sv.source = v.where;
    SpmNativeTokenizer check(std::move(sv));  // the rest of our GGUF reader's checks
  }
  if (bos >= 0) kv.emplace_back("tokenizer.ggml.bos_token_id", gguf_u32(static_cast<uint32_t>(bos)));
  if (eos >= 0) kv.emplace_back("tokenizer.ggml.eos_token_id", gguf_u32(static_cast<uint32_t>(eos)));
  if (unk >= 0) kv.emplace_back("tokenizer.ggml.unknown_token_id", gguf_u32(static_cast<uint32_t>(unk)));
  if (pad >= 0) kv.emplace_back("tokenizer.ggml.padding_token_id", gguf_u32(static_cast<uint32_t>(pad)));
  kv.emplace_back("tokenizer.ggml.add_bos_token", gguf_bool(add_bos));
  if (bool add_eos = false; tc_bool("add_eos_token", add_eos))
    kv.emplace_back("tokenizer.ggml.add_eos_token", gguf_bool(add_eos));
  if (!tc.is_null() && tc.contains("chat_template") && tc["chat_template"].is_string())
    kv.emplace_back("tokenizer.chat_template", gguf_str(tc["chat_template"].get<std::string>()));
  return kv;
}

}  // namespace llmc
