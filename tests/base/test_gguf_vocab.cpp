// A Hugging Face tokenizer as GGUF tokenizer.ggml.* metadata (tokenizer/gguf_vocab.h), and the
// SentencePiece ModelProto reader under it (tokenizer/spm_model.h): a hand-built ModelProto, malformed
// ones, a hand-built tokenizer.json, and stories260K's tokenizer.model against the GGUF that
// llama.cpp's converter wrote for the same model (key by key).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/io/gguf.h"
#include "llmc/io/gguf_writer.h"
#include "llmc/tokenizer/bpe.h"
#include "llmc/tokenizer/gguf_vocab.h"
#include "llmc/tokenizer/spm_model.h"
#include "llmc/tokenizer/spm_native.h"

using namespace llmc;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kSp = "\xE2\x96\x81";  // "▁"

// ---- protobuf wire format, by hand ----
std::string varint(uint64_t v) {
  std::string s;
  do {
    uint8_t c = v & 0x7f;
    v >>= 7;
    if (v) c |= 0x80;
    s.push_back(static_cast<char>(c));
  } while (v);
  return s;
}
std::string tag(int field, int wire) { return varint(static_cast<uint64_t>(field) << 3 | wire); }
std::string len_field(int f, const std::string& payload) { return tag(f, 2) + varint(payload.size()) + payload; }
std::string varint_field(int f, uint64_t v) { return tag(f, 0) + varint(v); }
std::string float_field(int f, float x) {
  char b[4];
  std::memcpy(b, &x, 4);
  return tag(f, 5) + std::string(b, 4);
}
// A SentencePiece message; type 0 = field absent (NORMAL), score NaN = absent (0).
std::string piece(const std::string& text, float score, int type) {
  std::string p = len_field(1, text);
  if (!std::isnan(score)) p += float_field(2, score);
  if (type) p += varint_field(3, static_cast<uint64_t>(type));
  return len_field(1, p);
}

// ids: 0 <unk>, 1 <s>, 2 </s>, 3 <0x41>, 4 ▁a, 5 b; BPE, pad_id -1 (a 10-byte varint), fields this
// reader skips (strings, a float, a fixed64, a self_test_data message).
std::string hand_model(bool add_dummy_prefix = true, int model_type = 2) {
  std::string m;
  m += piece("<unk>", 0.0f, 2);
  m += piece("<s>", 0.0f, 3);
  m += piece("</s>", 0.0f, 3);
  m += piece("<0x41>", 0.0f, 6);
  m += piece(kSp + "a", -1.5f, 0);
  m += piece("b", std::nanf(""), 1);
  std::string trainer = len_field(1, "data.txt") + varint_field(3, static_cast<uint64_t>(model_type)) +
                        varint_field(4, 6) + float_field(10, 1.0f) + tag(12, 1) + std::string(8, '\0') +
                        varint_field(35, 1) + varint_field(40, 0) + varint_field(41, 1) + varint_field(42, 2) +
                        varint_field(43, static_cast<uint64_t>(int64_t{-1}));
  m += len_field(2, trainer);
  std::string norm = len_field(1, "identity") + len_field(2, "");
  if (!add_dummy_prefix) norm += varint_field(3, 0);
  m += len_field(3, norm);
  m += len_field(4, len_field(1, len_field(1, "x")));  // self_test_data: skipped
  return m;
}

struct TempDir {
  std::string path;
  TempDir() {
    static int n = 0;
    path = "/tmp/llmc_gguf_vocab_test_" + std::to_string(::getpid()) + "_" + std::to_string(n++);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string put(const std::string& name, const std::string& data) const {
    const std::string p = path + "/" + name;
    write_file_atomic(p, data);
    return p;
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

const GGUFValue* find(const GGUFMetadata& kv, const std::string& k) {
  for (const auto& [key, v] : kv)
    if (key == k) return &v;
  return nullptr;
}

bool same(const GGUFValue& a, const GGUFValue& b) {
  if (a.type != b.type) return false;
  switch (a.type) {
    case GGUFType::STRING: return a.str == b.str;
    case GGUFType::ARRAY:
      if (a.elem_type != b.elem_type || a.array.size() != b.array.size()) return false;
      for (size_t i = 0; i < a.array.size(); ++i)
        if (!same(a.array[i], b.array[i])) return false;
      return true;
    case GGUFType::FLOAT32:
    case GGUFType::FLOAT64: return a.f == b.f;
    case GGUFType::INT8:
    case GGUFType::INT16:
    case GGUFType::INT32:
    case GGUFType::INT64: return a.i == b.i;
    default: return a.u == b.u;
  }
}

// The metadata as a GGUF file (no tensors), read back by our reader.
std::string write_gguf_of(const TempDir& d, const GGUFMetadata& kv, const std::string& name = "t.gguf") {
  GGUFWriter w;
  w.set("general.architecture", gguf_str("llama"));
  for (const auto& [k, v] : kv) w.set(k, v);
  const std::string p = d.path + "/" + name;
  w.write(p);
  return p;
}

}  // namespace

TEST(SpmModel, ParsesAHandBuiltModelProto) {
  const SpmModelProto m = parse_spm_model(hand_model(false), "hand.model");
  using T = GGUFTokenType;
  EXPECT_EQ(m.pieces, (std::vector<std::string>{"<unk>", "<s>", "</s>", "<0x41>", kSp + "a", "b"}));
  EXPECT_EQ(m.scores, (std::vector<float>{0, 0, 0, 0, -1.5f, 0}));
  EXPECT_EQ(m.types, (std::vector<T>{T::UNKNOWN, T::CONTROL, T::CONTROL, T::BYTE, T::NORMAL, T::NORMAL}));
  EXPECT_EQ(m.model_type, 2);
  EXPECT_EQ(spm_model_type_name(m.model_type), "BPE");
  EXPECT_TRUE(m.byte_fallback);
  EXPECT_EQ(m.unk_id, 0);
  EXPECT_EQ(m.bos_id, 1);
  EXPECT_EQ(m.eos_id, 2);
  EXPECT_EQ(m.pad_id, -1);
  EXPECT_EQ(m.normalizer_name, "identity");
  EXPECT_FALSE(m.add_dummy_prefix);
  EXPECT_TRUE(m.remove_extra_whitespaces);
  // Absent specs: the proto2 defaults; a default id past the pieces is none.
  const SpmModelProto d = parse_spm_model(piece("<unk>", 0.0f, 2) + piece("x", -1.0f, 0), "p");
  EXPECT_EQ(d.model_type, 1);
  EXPECT_EQ(d.unk_id, 0);
  EXPECT_EQ(d.bos_id, 1);
  EXPECT_EQ(d.eos_id, -1);
  EXPECT_EQ(d.pad_id, -1);
  EXPECT_TRUE(d.add_dummy_prefix);
}

// Every malformed input: one line naming the file and the problem, no crash, no partial result.
TEST(SpmModel, MalformedInputGivesOneClearLine) {
  const std::string good = hand_model();
  auto err = [](const std::string& bytes) { return error_of([&] { parse_spm_model(bytes, "/m/tokenizer.model"); }); };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "the file is empty"},
      {good.substr(0, good.size() - 1), "runs past the end of ModelProto"},
      {good + "\x80", "truncated varint in ModelProto"},
      {good + tag(9, 3), "group wire type (field 9 of ModelProto)"},
      {good + tag(9, 7), "unknown wire type 7"},
      {std::string(1, '\0'), "field number 0 in ModelProto"},
      {len_field(2, varint_field(3, 2)), "it has no pieces"},
      {piece("<unk>", 0.0f, 2) + piece("<unk>", 0.0f, 2), "piece 1 '<unk>' repeats piece 0"},
      {piece("a\xff", 0.0f, 1), "piece 0 is not valid UTF-8"},
      {piece("a", 0.0f, 9), "piece 0 'a' has unknown type 9"},
      {piece("a\nb" + std::string(60, 'c'), 0.0f, 9), "piece 0 'a\\x0Abccc"},  // one line, cut
      {piece("a", std::numeric_limits<float>::infinity(), 1), "piece 0 'a' has a non-finite score"},
      {len_field(1, float_field(2, 1.0f)), "piece 0 has no text"},
      {len_field(1, len_field(1, "a") + varint_field(2, 1)), "field 2 (score) of SentencePiece has wire type 0, expected 5"},
      {len_field(1, len_field(1, "a") + tag(2, 5) + "\x01"), "truncated float in SentencePiece"},
      {piece("a", 0.0f, 1) + len_field(2, varint_field(41, 5)), "trainer_spec.bos_id = 5 is outside the 1 pieces"},
      {piece("a", 0.0f, 1) + len_field(2, varint_field(43, 0xfffffffe)), "pad_id = 4294967294 is not an int32"},
      {piece("a", 0.0f, 1) + len_field(2, "") + len_field(2, ""), "trainer_spec appears twice"},
      {piece("a", 0.0f, 1) + len_field(2, tag(41, 0) + std::string(10, '\xff') + "\x01"), "varint longer than"},
      {"{\"model\": {\"type\": \"BPE\"}}", "not a valid SentencePiece model"},  // a tokenizer.json by mistake
  };
  for (const auto& [bytes, want] : cases) {
    const std::string e = err(bytes);
    EXPECT_EQ(e.rfind("/m/tokenizer.model: ", 0), 0u) << e;
    EXPECT_NE(e.find(want), std::string::npos) << "want '" << want << "' in: " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  // Offsets point at the problem: the 2nd piece's tag is right after the first piece message.
  const std::string one = piece("<unk>", 0.0f, 2);
  EXPECT_NE(err(one + one).find("(byte offset " + std::to_string(one.size()) + ")"), std::string::npos) << err(one + one);
  // Through the file reader: a missing file, and a truncated real file.
  EXPECT_NE(error_of([] { read_spm_model("/nonexistent/tokenizer.model"); }).find("/nonexistent/tokenizer.model: "
                                                                                   "tokenizer model not found"),
            std::string::npos);
}

// tokenizer.model + tokenizer_config.json + config.json -> tokenizer.ggml.*, then our GGUF reader
// builds a tokenizer from it that segments as the ids say.
TEST(GGUFVocab, SentencePieceFolderByHand) {
  TempDir d;
  d.put("tokenizer.model", hand_model());
  d.put("config.json", R"({"bos_token_id": 1, "eos_token_id": 2})");
  d.put("tokenizer_config.json", R"({"add_bos_token": true, "add_eos_token": false, "pad_token": "<pad>",
    "chat_template": "{{ messages }}",
    "added_tokens_decoder": {"0": {"content": "<unk>", "special": true}, "7": {"content": "<pad>", "special": true},
                             "8": {"content": "<tool>", "special": false}}})");
  const GGUFMetadata kv = gguf_tokenizer_from_hf(d.path, 10, 1, 2);
  std::vector<std::string> keys;
  for (const auto& [k, v] : kv) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                            "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id",
                                            "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                                            "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
                                            "tokenizer.ggml.add_eos_token", "tokenizer.chat_template"}));
  const std::string p = write_gguf_of(d, kv);
  GGUFFile f(p);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens"),
            (std::vector<std::string>{"<unk>", "<s>", "</s>", "<0x41>", kSp + "a", "b", "[PAD6]", "<pad>", "<tool>",
                                      "[PAD9]"}));
  EXPECT_EQ(f.get_f32_array("tokenizer.ggml.scores"),
            (std::vector<float>{0, 0, 0, 0, -1.5f, 0, -10000, -1000, -1000, -10000}));
  EXPECT_EQ(f.get_i32_array("tokenizer.ggml.token_type"), (std::vector<int32_t>{2, 3, 3, 6, 1, 1, 5, 3, 4, 5}));
  EXPECT_EQ(f.get_u32("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(f.get_u32("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_EQ(f.get_u32("tokenizer.ggml.unknown_token_id"), 0u);
  EXPECT_EQ(f.get_u32("tokenizer.ggml.padding_token_id"), 7u);
  EXPECT_TRUE(f.get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(f.get_bool("tokenizer.ggml.add_eos_token"));
  EXPECT_EQ(f.get_string("tokenizer.chat_template"), "{{ messages }}");
  auto tok = tokenizer_from_gguf(f);
  EXPECT_EQ(tok->encode("ab", true), (std::vector<int32_t>{1, 4, 5}));  // <s> ▁a b
  // "▁A": no piece; the bytes of ▁ have no <0xXX> piece (<unk> each), A has <0x41>.
  EXPECT_EQ(tok->encode("A", false), (std::vector<int32_t>{0, 0, 0, 3}));
  EXPECT_EQ(tok->decode({1, 4, 5, 2}), "ab");

  // add_dummy_prefix false -> add_space_prefix false (llama.cpp's default is true, so only then).
  d.put("tokenizer.model", hand_model(false));
  const GGUFMetadata kv2 = gguf_tokenizer_from_hf(d.path, 10, -1, -1);
  ASSERT_NE(find(kv2, "tokenizer.ggml.add_space_prefix"), nullptr);
  EXPECT_EQ(find(kv2, "tokenizer.ggml.add_space_prefix")->u, 0u);
  EXPECT_EQ(find(kv, "tokenizer.ggml.add_space_prefix"), nullptr);
  // Without config ids, trainer_spec's.
  EXPECT_EQ(find(kv2, "tokenizer.ggml.bos_token_id")->u, 1u);
  EXPECT_EQ(find(kv2, "tokenizer.ggml.eos_token_id")->u, 2u);
}

TEST(GGUFVocab, SentencePieceRefusals) {
  TempDir d;
  d.put("tokenizer.model", hand_model(true, 1));  // UNIGRAM
  std::string e = error_of([&] { gguf_tokenizer_from_hf(d.path, 6, -1, -1); });
  EXPECT_NE(e.find(d.path + "/tokenizer.model: a SentencePiece UNIGRAM model; llama.cpp's SentencePiece tokenizer"),
            std::string::npos)
      << e;
  d.put("tokenizer.model", hand_model());
  e = error_of([&] { gguf_tokenizer_from_hf(d.path, 5, -1, -1); });
  EXPECT_NE(e.find("tokenizer.model: the tokenizer has 6 tokens but the model's embedding has 5 rows"), std::string::npos)
      << e;
  e = error_of([&] { gguf_tokenizer_from_hf(d.path, 6, 9, -1); });
  EXPECT_NE(e.find("the BOS token id 9 is outside the vocabulary (6 tokens)"), std::string::npos) << e;
  // A BYTE piece that names no byte (llama.cpp reads the byte from the text); text shown on one line.
  std::string bad = piece("<unk>", 0.0f, 2) + piece("<0x4\n>", 0.0f, 6) + len_field(2, varint_field(3, 2));
  d.put("tokenizer.model", bad);
  e = error_of([&] { gguf_tokenizer_from_hf(d.path, 6, -1, -1); });
  EXPECT_NE(e.find("tokenizer.model: piece 1 '<0x4\\x0A>' has type BYTE but is not of the form <0xXX>"), std::string::npos)
      << e;
  d.put("tokenizer.model", hand_model());
  d.put("tokenizer_config.json", R"({"added_tokens_decoder": {"6": {"content": "<x>", "special": true}}})");
  e = error_of([&] { gguf_tokenizer_from_hf(d.path, 6, -1, -1); });
  EXPECT_NE(e.find("tokenizer_config.json: added token 6 '<x>' is past the model's embedding (6 rows)"), std::string::npos)
      << e;
  d.put("tokenizer_config.json", "{not json");
  e = error_of([&] { gguf_tokenizer_from_hf(d.path, 6, -1, -1); });
  EXPECT_NE(e.find("tokenizer_config.json: not valid JSON"), std::string::npos) << e;
  fs::remove(d.path + "/tokenizer_config.json");
  d.put("tokenizer.model", hand_model().substr(0, 20));
  e = error_of([&] { gguf_tokenizer_from_hf(d.path, 6, -1, -1); });
  EXPECT_NE(e.find(d.path + "/tokenizer.model: not a valid SentencePiece model: "), std::string::npos) << e;
  fs::remove(d.path + "/tokenizer.model");
  e = error_of([&] { gguf_tokenizer_from_hf(d.path, 6, -1, -1); });
  EXPECT_NE(e.find(": no tokenizer.model or tokenizer.json"), std::string::npos) << e;
}

namespace {

// A small byte-level BPE tokenizer.json: bytes of "hello" and space, merges to "Ġhello".
json bpe_json(const json& pre_tokenizer, bool ignore_merges = false) {
  json vocab = {{"h", 0}, {"e", 1}, {"l", 2}, {"o", 3}, {"\xC4\xA0", 4}, {"he", 5}, {"ll", 6}, {"hell", 7},
                {"hello", 8}, {"\xC4\xA0hello", 9}, {"1", 10}};
  return {{"model",
           {{"type", "BPE"},
            {"vocab", vocab},
            {"merges", {"h e", "l l", "he ll", "hell o", "\xC4\xA0 hello"}},
            {"ignore_merges", ignore_merges}}},
          {"added_tokens",
           {{{"id", 11}, {"content", "<|end|>"}, {"special", true}}, {{"id", 13}, {"content", "<note>"}, {"special", false}}}},
          {"pre_tokenizer", pre_tokenizer},
          {"decoder", {{"type", "ByteLevel"}}}};
}

const json kByteLevel = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};

}  // namespace

TEST(GGUFVocab, ByteLevelBpeFolderByHand) {
  TempDir d;
  d.put("tokenizer.json", bpe_json({{"type", "Sequence"},
                                    {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, kByteLevel}}})
                              .dump());
  d.put("tokenizer_config.json", R"({"eos_token": "<|end|>", "pad_token": {"content": "<|end|>"}, "add_bos_token": false})");
  d.put("config.json", R"({"bos_token_id": 11})");
  const GGUFMetadata kv = gguf_tokenizer_from_hf(d.path, 15, 11, -1);
  const std::string p = write_gguf_of(d, kv);
  GGUFFile f(p);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "smollm");
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens"),
            (std::vector<std::string>{"h", "e", "l", "o", "\xC4\xA0", "he", "ll", "hell", "hello", "\xC4\xA0hello", "1",
                                      "<|end|>", "[PAD12]", "<note>", "[PAD14]"}));
  EXPECT_EQ(f.get_i32_array("tokenizer.ggml.token_type"),
            (std::vector<int32_t>{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 5, 4, 5}));
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.merges"),
            (std::vector<std::string>{"h e", "l l", "he ll", "hell o", "\xC4\xA0 hello"}));
  EXPECT_FALSE(f.has("tokenizer.ggml.scores"));
  EXPECT_EQ(f.get_u32("tokenizer.ggml.bos_token_id"), 11u);  // config.json's: tokenizer_config names none
  EXPECT_EQ(f.get_u32("tokenizer.ggml.eos_token_id"), 11u);
  EXPECT_EQ(f.get_u32("tokenizer.ggml.padding_token_id"), 11u);
  EXPECT_FALSE(f.has("tokenizer.ggml.unknown_token_id"));
  EXPECT_FALSE(f.get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(f.get_bool("tokenizer.ggml.add_space_prefix"));
  // Our GGUF reader's tokenizer and the tokenizer.json's agree.
  auto from_gguf = tokenizer_from_gguf(f);
  auto from_json = load_bpe_tokenizer_json(d.path + "/tokenizer.json", d.path + "/tokenizer_config.json");
  for (const std::string s : {"hello hello", "hello1<|end|>", "<note>hello"})
    EXPECT_EQ(from_gguf->encode(s, false), from_json->encode(s, false)) << s;
  EXPECT_EQ(from_gguf->encode(" hello<|end|>", false), (std::vector<int32_t>{9, 11}));

  // The pre-tokenizer names: GPT-2 (ByteLevel's regex), Llama-3 in HF's (?i:...) spelling (and
  // ignore_merges, which llama.cpp's llama-bpe implies), Qwen2.
  const std::string ci = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|";
  const std::string tail = "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  auto split = [](const std::string& re) {
    return json{{"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"}, {"invert", false}};
  };
  const json no_regex = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  struct Case {
    json pre;
    bool ignore_merges;
    std::string want;
  };
  const std::vector<Case> cases = {
      {kByteLevel, false, "gpt2"},
      {json{{"type", "Sequence"}, {"pretokenizers", json::array({split(ci + "\\p{N}{1,3}" + tail), no_regex})}}, true,
       "llama-bpe"},
      {json{{"type", "Sequence"}, {"pretokenizers", json::array({split(ci + "\\p{N}" + tail), no_regex})}}, false,
       "qwen2"}};
  for (const Case& c : cases) {
    d.put("tokenizer.json", bpe_json(c.pre, c.ignore_merges).dump());
    GGUFMetadata m = gguf_tokenizer_from_hf(d.path, 15, -1, -1);
    EXPECT_EQ(find(m, "tokenizer.ggml.pre")->str, c.want);
  }
  // An unknown split, and ignore_merges that llama.cpp's pre-tokenizer would not reproduce: refused.
  d.put("tokenizer.json",
        bpe_json(json{{"type", "Sequence"}, {"pretokenizers", json::array({split("\\p{L}+"), no_regex})}}).dump());
  std::string e = error_of([&] { gguf_tokenizer_from_hf(d.path, 15, -1, -1); });
  EXPECT_NE(e.find("tokenizer.json: its pre-tokenizer (regexes '\\p{L}+') is none of llama.cpp's gpt2, smollm, "
                   "llama-bpe, qwen2"),
            std::string::npos)
      << e;
  d.put("tokenizer.json", bpe_json(kByteLevel, true).dump());
  e = error_of([&] { gguf_tokenizer_from_hf(d.path, 15, -1, -1); });
  EXPECT_NE(e.find("model.ignore_merges is true but llama.cpp's 'gpt2' pre-tokenizer applies merges"), std::string::npos)
      << e;
  d.put("tokenizer.json", bpe_json(kByteLevel).dump());
  e = error_of([&] { gguf_tokenizer_from_hf(d.path, 12, -1, -1); });
  EXPECT_NE(e.find("tokenizer.json: the tokenizer has 14 tokens but the model's embedding has 12 rows"), std::string::npos)
      << e;
}

// stories260K: the tokenizer.model of its HF folder gives the tokenizer metadata of the GGUF that
// llama.cpp's convert-llama2c-to-ggml wrote for the same model: every key of the original equal,
// except the "none" ids (0xFFFFFFFF) it writes, which we leave out; ours adds add_bos_token = true
// and add_eos_token = false (tokenizer_config.json's, and llama.cpp's defaults for "llama" vocabularies).
TEST(GGUFVocab, Stories260KMatchesTheOriginalGGUF) {
  const std::string dir = shared_root() + "/models/stories260K";
  const std::string orig = dir + "/original/stories260K.gguf", ref = dir + "/reference_greedy.json";
  if (!file_exists(dir + "/tokenizer.model") || !file_exists(orig) || !file_exists(ref))
    GTEST_SKIP() << "stories260K not found under " << dir << " (set LLMC_SHARED)";
  const GGUFMetadata kv = gguf_tokenizer_from_hf(dir, 512, 1, 2);
  GGUFFile o(orig);
  int compared = 0;
  std::vector<std::string> none;
  for (const auto& [k, v] : o.metadata()) {
    if (k.rfind("tokenizer.", 0) != 0) continue;
    const GGUFValue* ours = find(kv, k);
    if (v.type == GGUFType::UINT32 && v.u == 0xffffffffu) {
      EXPECT_EQ(ours, nullptr) << k;
      none.push_back(k);
      continue;
    }
    ASSERT_NE(ours, nullptr) << "missing " << k;
    EXPECT_TRUE(same(*ours, v)) << k << ": ours " << ours->to_string() << ", original " << v.to_string();
    ++compared;
  }
  EXPECT_EQ(compared, 7);  // model, tokens, scores, token_type, unknown/bos/eos ids
  EXPECT_EQ(none, (std::vector<std::string>{"tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id"}));
  std::map<std::string, uint64_t> extra;
  for (const auto& [k, v] : kv)
    if (!o.has(k)) extra[k] = v.u;
  EXPECT_EQ(extra, (std::map<std::string, uint64_t>{{"tokenizer.ggml.add_bos_token", 1},
                                                    {"tokenizer.ggml.add_eos_token", 0}}));
  // The written file's tokenizer encodes run.c's prompts as the reference does.
  TempDir d;
  GGUFFile f(write_gguf_of(d, kv));
  auto tok = tokenizer_from_gguf(f);
  const json j = json::parse(read_text_file(ref));
  for (const auto& c : j["cases"])
    EXPECT_EQ(tok->encode(c["prompt"].get<std::string>(), tok->add_bos_default()),
              c["prompt_ids"].get<std::vector<int32_t>>());
}

// SmolLM2's tokenizer as the tokenizer.json HF ships it (rebuilt from the GGUF's vocabulary: byte-level
// tokens in model.vocab, the CONTROL ones as special added_tokens, the merges; its Digits + ByteLevel
// pre-tokenizer; tokenizer_config.json's special tokens) converts back to the GGUF's keys.
TEST(GGUFVocab, SmolLM2TokenizerJsonGivesTheGGUFKeys) {
  const std::string gguf = std::string(LLMC_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!file_exists(gguf)) GTEST_SKIP() << gguf << " not found (scripts/get-model.sh smollm2-135m)";
  GGUFFile g(gguf);
  const auto tokens = g.get_string_array("tokenizer.ggml.tokens");
  const auto types = g.get_i32_array("tokenizer.ggml.token_type");
  json vocab = json::object(), added = json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (types[i] == 3) added.push_back({{"id", i}, {"content", tokens[i]}, {"special", true}});
    vocab[tokens[i]] = i;
  }
  json merges = json::array();
  for (const auto& m : g.get_string_array("tokenizer.ggml.merges")) merges.push_back(m);
  const json tj = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", false}}},
      {"added_tokens", added},
      {"pre_tokenizer",
       {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, kByteLevel}}}},
      {"post_processor", {{"type", "ByteLevel"}}},
      {"decoder", {{"type", "ByteLevel"}}}};
  const json tc = {{"bos_token", "<|im_start|>"},   {"eos_token", "<|im_end|>"},
                   {"unk_token", "<|endoftext|>"},  {"pad_token", "<|im_end|>"},
                   {"add_prefix_space", false},     {"chat_template", g.get_string("tokenizer.chat_template")}};
  TempDir d;
  d.put("tokenizer.json", tj.dump());
  d.put("tokenizer_config.json", tc.dump());
  d.put("config.json", R"({"bos_token_id": 1, "eos_token_id": 2})");
  const GGUFMetadata kv = gguf_tokenizer_from_hf(d.path, static_cast<int64_t>(tokens.size()), 1, 2);
  std::vector<std::string> keys;
  for (const auto& [k, v] : g.metadata()) {
    if (k.rfind("tokenizer.", 0) != 0) continue;
    keys.push_back(k);
    const GGUFValue* ours = find(kv, k);
    ASSERT_NE(ours, nullptr) << "missing " << k;
    EXPECT_TRUE(same(*ours, v)) << k << ": ours " << ours->to_string() << ", GGUF " << v.to_string();
  }
  EXPECT_EQ(keys.size(), kv.size());
}
