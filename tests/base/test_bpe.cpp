// Byte-level BPE: the byte map, pre-tokenizer regexes, a hand-made vocabulary with ids derived by
// hand, tokenizer.json layouts, and SmolLM2 (GGUF and a tokenizer.json written from it) against
// the transformers reference ids.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/io/gguf.h"
#include "llmc/tokenizer/bpe.h"

using namespace llmc;
using json = nlohmann::json;

namespace {

const std::string kG = "\xC4\xA0";  // "Ġ", the byte-level space
const std::string kC = "\xC4\x8A";  // "Ċ", the byte-level '\n'

std::string tmp_path(const std::string& name) { return "/tmp/llmc_test_bpe_" + std::to_string(::getpid()) + "_" + name; }

std::string smollm2_path() {
  if (const char* e = std::getenv("LLMC_SMOLLM2_GGUF"); e && *e) return e;
  return std::string(LLMC_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

template <typename F>
std::string error_from(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// ids: 0 <|s|> (control), 1 a, 2 b, 3 c, 4 Ġ, 5 ab, 6 Ġa, 7 Ġab, 8 bc, 9 aa, 10 <user> (added,
// non-special), 11 "1", 12 "2", 13 Ċ. Merge ranks: a b (0), Ġ a (1), Ġa b (2), b c (3), a a (4).
BPEVocab hand_vocab(std::vector<std::string> regexes = {kGPT2PreRegex}) {
  BPEVocab v;
  v.source = "hand-made vocabulary";
  v.tokens = {"<|s|>", "a", "b", "c", kG, "ab", kG + "a", kG + "ab", "bc", "aa", "<user>", "1", "2", kC};
  using T = GGUFTokenType;
  v.types.assign(v.tokens.size(), T::NORMAL);
  v.types[0] = T::CONTROL;
  v.types[10] = T::USER_DEFINED;
  v.merges = {{"a", "b"}, {kG, "a"}, {kG + "a", "b"}, {"b", "c"}, {"a", "a"}};
  v.pre_regexes = std::move(regexes);
  v.bos = 0;
  v.eos = 0;
  return v;
}

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xc0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xe0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    s += static_cast<char>(0xf0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  }
  return s;
}

// Random valid UTF-8 mixing ASCII (with whitespace runs and digits), Latin, CJK and emoji; with
// `specials`, also special tokens written in the text (which decode drops).
std::string random_text(std::mt19937& rng, int n, bool specials = false) {
  static const std::vector<std::string> words = {" ",  "  ",   "\n",     "\t",      " \n ", "123", "4",
                                                 "'s", "don't", "HELLO", "\xC3\xA9", "\xE4\xB8\xAD\xE6\x96\x87",
                                                 "\xF0\x9F\x99\x82", "<|im_start|>", "<|im", "\r\n"};
  std::string s;
  for (int i = 0; i < n; ++i) {
    switch (rng() % 5) {
      case 0: {
        const std::string& w = words[rng() % words.size()];
        s += (w == "<|im_start|>" && !specials) ? "<|im" : w;
        break;
      }
      case 1: s += static_cast<char>(0x20 + rng() % 0x5f); break;
      case 2: s += utf8(0x80 + rng() % 0x780); break;
      case 3: s += utf8(0x800 + rng() % 0xd000); break;
      // Plane 1 only: SmolLM2's vocabulary has no byte tokens for the lead bytes F1/F2 of planes
      // 4-11 (nor for C0, C1, F5-FF and the controls 04 06 13 14 16 1D), which encode as <unk>.
      default: s += utf8(0x10000 + rng() % 0x10000); break;
    }
  }
  return s;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

}  // namespace

TEST(BPEByteLevel, MapIsGPT2s) {
  EXPECT_EQ(byte_level_encode(" "), kG);
  EXPECT_EQ(byte_level_encode("\n"), kC);
  EXPECT_EQ(byte_level_encode("a!~"), "a!~");
  EXPECT_EQ(byte_level_encode("\xC3\xA9"), "\xC3\x83\xC2\xA9");  // é = C3 A9 -> "Ã©"
  EXPECT_EQ(byte_level_encode(std::string(1, '\0')), "\xC4\x80");  // U+0100
  EXPECT_EQ(byte_level_encode("\xAD"), "\xC5\x83");                // U+0143, the last one
  std::set<std::string> seen;
  std::string all;
  for (int b = 0; b < 256; ++b) {
    all += static_cast<char>(b);
    seen.insert(byte_level_encode(std::string(1, static_cast<char>(b))));
  }
  EXPECT_EQ(seen.size(), 256u);
  EXPECT_EQ(byte_level_decode(byte_level_encode(all)), all);
  std::mt19937 rng(1);
  for (int k = 0; k < 100; ++k) {
    std::string s(rng() % 40, '\0');
    for (auto& c : s) c = static_cast<char>(rng() & 0xff);
    ASSERT_EQ(byte_level_decode(byte_level_encode(s)), s);
  }
  // Characters outside the map pass through.
  EXPECT_EQ(byte_level_decode("\xE4\xB8\xAD"), "\xE4\xB8\xAD");
}

TEST(BPE, HandMadeVocabularyIdsByHand) {
  BPETokenizer tok(hand_vocab());
  EXPECT_EQ(tok.type(), "bpe");
  EXPECT_EQ(tok.vocab_size(), 14);
  // "abc ab" -> pieces "abc", " ab".
  //   abc: (a,b) rank 0 beats (b,c) rank 3 -> [ab, c].
  //   Ġab: (a,b) rank 0 beats (Ġ,a) rank 1 -> [Ġ, ab], and there is no "Ġ ab" merge.
  EXPECT_EQ(tok.encode("abc ab", false), (std::vector<int32_t>{5, 3, 4, 5}));
  EXPECT_EQ(tok.encode(" a", false), (std::vector<int32_t>{6}));
  // Equal ranks merge leftmost first: aaa -> [aa, a].
  EXPECT_EQ(tok.encode("aaa", false), (std::vector<int32_t>{9, 1}));
  // Special and added tokens are cut out before pre-tokenization.
  EXPECT_EQ(tok.encode("<|s|>abc<user>\n", true), (std::vector<int32_t>{0, 0, 5, 3, 10, 13}));
  EXPECT_THROW(tok.encode("<|s|", false), Error);  // no token for '<' and no <unk>
}

TEST(BPE, HandMadeVocabularyDetails) {
  BPETokenizer tok(hand_vocab());
  // Decode: control dropped, added token verbatim, byte-level chars back to bytes.
  EXPECT_EQ(tok.decode({0, 5, 3, 10, 4, 5, 13}), "abc<user> ab\n");
  EXPECT_EQ(tok.token_id(kG + "a"), 6);
  EXPECT_EQ(tok.token_id("zz"), -1);
  EXPECT_EQ(tok.token_text(7), kG + "ab");
  EXPECT_THROW(tok.decode({14}), Error);
  // A byte without a token and no <unk>: a clear error.
  const std::string e = error_from([&] { tok.encode("x", false); });
  EXPECT_NE(e.find("hand-made vocabulary: byte 0x78 has no token"), std::string::npos) << e;
  // Invalid UTF-8 is rejected with its offset (documented: no byte-level guessing).
  const std::string e2 = error_from([&] { tok.encode("ab\xC3(", false); });
  EXPECT_NE(e2.find("invalid UTF-8 at byte offset 2"), std::string::npos) << e2;
  for (const char* bad : {"\xED\xA0\x80", "\xC0\xAF", "\xF4\x90\x80\x80", "\xE2\x82", "\x80"})
    EXPECT_THROW(tok.encode(bad, false), Error) << bad;
  // ignore_merges (Llama-3): a piece that is a token is taken whole.
  BPEVocab v = hand_vocab();
  v.ignore_merges = true;
  EXPECT_EQ(BPETokenizer(v).encode(" ab", false), (std::vector<int32_t>{7}));
  // <unk> fallback for bytes without tokens.
  v = hand_vocab();
  v.unk = 3;
  EXPECT_EQ(BPETokenizer(v).encode("axb", false), (std::vector<int32_t>{1, 3, 2}));
  // Merges naming unknown tokens are an error at load time.
  v = hand_vocab();
  v.merges.push_back({"c", "c"});
  const std::string e3 = error_from([&] { BPETokenizer t(v); });
  EXPECT_NE(e3.find("merge 5 'c c' names a token that is not in the vocabulary"), std::string::npos) << e3;
  v = hand_vocab({"(unclosed"});
  EXPECT_NE(error_from([&] { BPETokenizer t(v); }).find("does not compile"), std::string::npos);
}

TEST(BPE, PreTokenizerRegexLists) {
  auto split = [](const std::string& pre, const std::string& text) {
    return BPETokenizer(hand_vocab(bpe_pre_regexes(pre, "test"))).pre_tokenize(text);
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(split("gpt2", "Hello world's  end 123\n"), (V{"Hello", " world", "'s", " ", " end", " 123", "\n"}));
  EXPECT_EQ(split("gpt2", "abc 123"), (V{"abc", " 123"}));
  // smollm: every digit its own piece (the space before digits stays alone).
  EXPECT_EQ(split("smollm", "abc 123"), (V{"abc", " ", "1", "2", "3"}));
  EXPECT_EQ(split("smollm", "x=42;"), (V{"x", "=", "4", "2", ";"}));
  // llama3: digits in groups of up to 3, case-insensitive contractions, newlines kept together.
  EXPECT_EQ(split("llama-bpe", "12345 I'M ok\n\n"), (V{"123", "45", " I", "'M", " ok", "\n\n"}));
  EXPECT_EQ(split("llama3", "a12345"), (V{"a", "123", "45"}));
  EXPECT_EQ(split("qwen2", "a12"), (V{"a", "1", "2"}));
  // Unicode classes: CJK letters, emoji as punctuation-like symbols.
  EXPECT_EQ(split("gpt2", "\xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x99\x82!"),
            (V{"\xE4\xB8\xAD\xE6\x96\x87", " \xF0\x9F\x99\x82!"}));
  const std::string e = error_from([] { bpe_pre_regexes("falcon", "model.gguf"); });
  EXPECT_NE(e.find("model.gguf: unsupported BPE pre-tokenizer 'falcon'"), std::string::npos) << e;
}

namespace {

// A tokenizer.json for the hand-made vocabulary in the SmolLM2 layout.
json hand_tokenizer_json() {
  BPEVocab v = hand_vocab();
  json vocab = json::object(), merges = json::array(), added = json::array();
  for (size_t i = 0; i < v.tokens.size(); ++i) vocab[v.tokens[i]] = i;
  for (const auto& [a, b] : v.merges) merges.push_back(a + " " + b);
  added.push_back({{"id", 0}, {"content", "<|s|>"}, {"special", true}});
  added.push_back({{"id", 10}, {"content", "<user>"}, {"special", false}});
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Digits"}, {"individual_digits", true}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}}}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"byte_fallback", false}}}};
}

}  // namespace

TEST(BPEJson, HandMadeLayouts) {
  const std::string p = tmp_path("tokenizer.json"), pc = tmp_path("tokenizer_config.json");
  json j = hand_tokenizer_json();
  write_text(p, j.dump());
  {
    auto tok = load_bpe_tokenizer_json(p, "");
    EXPECT_EQ(tok->type(), "bpe");
    EXPECT_FALSE(tok->add_bos_default());
    EXPECT_EQ(tok->bos_id(), -1);
    EXPECT_EQ(tok->encode("<|s|>abc 12<user>", false), (std::vector<int32_t>{0, 5, 3, 4, 11, 12, 10}));
    EXPECT_EQ(tok->decode({0, 5, 3, 4, 11, 12, 10}), "abc 12<user>");
  }
  write_text(pc, json({{"add_bos_token", true}, {"bos_token", {{"content", "<|s|>"}}}, {"eos_token", "<user>"}}).dump());
  {
    auto tok = load_bpe_tokenizer_json(p, pc);
    EXPECT_TRUE(tok->add_bos_default());
    EXPECT_EQ(tok->bos_id(), 0);
    EXPECT_EQ(tok->eos_id(), 10);
  }
  {  // Llama-3 layout: Split regex + ByteLevel without regex, [a, b] merges, BOS from the template.
    json l3 = hand_tokenizer_json();
    l3["pre_tokenizer"] = {{"type", "Sequence"},
                           {"pretokenizers",
                            {{{"type", "Split"},
                              {"pattern", {{"Regex", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
                              {"behavior", "Isolated"},
                              {"invert", false}},
                             {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    json merges = json::array();
    for (const auto& m : l3["model"]["merges"]) {
      const std::string s = m.get<std::string>();
      merges.push_back({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
    }
    l3["model"]["merges"] = merges;
    l3["model"]["ignore_merges"] = true;
    json bos_piece = {{"SpecialToken", {{"id", "<|s|>"}, {"type_id", 0}}}};
    json seq_piece = {{"Sequence", {{"id", "A"}, {"type_id", 0}}}};
    json tmpl = {{"type", "TemplateProcessing"}, {"single", json::array({bos_piece, seq_piece})}};
    l3["post_processor"] = {{"type", "Sequence"}, {"processors", json::array({json{{"type", "ByteLevel"}}, tmpl})}};
    write_text(p, l3.dump());
    auto tok = load_bpe_tokenizer_json(p, "");
    EXPECT_TRUE(tok->add_bos_default());
    EXPECT_EQ(tok->bos_id(), 0);
    // ignore_merges: " ab" is a token; "121" stays one piece (no such token: bytes).
    EXPECT_EQ(tok->encode(" ab121", true), (std::vector<int32_t>{0, 7, 11, 12, 11}));
  }
  {  // Qwen2: NFC normalizer accepted.
    json q = hand_tokenizer_json();
    q["normalizer"] = {{"type", "NFC"}};
    write_text(p, q.dump());
    EXPECT_EQ(load_bpe_tokenizer_json(p, "")->encode("ab", false), (std::vector<int32_t>{5}));
  }
  // Unsupported layouts: one clear line naming the file and the part.
  auto err = [&](json bad) {
    write_text(p, bad.dump());
    return error_from([&] { load_bpe_tokenizer_json(p, ""); });
  };
  json bad = hand_tokenizer_json();
  bad["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}};
  std::string e = err(bad);
  EXPECT_NE(e.find(p + ": pre_tokenizer type 'Metaspace' is not supported"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  bad = hand_tokenizer_json();
  bad["model"]["byte_fallback"] = true;
  EXPECT_NE(err(bad).find("byte_fallback"), std::string::npos);
  bad = hand_tokenizer_json();
  bad["model"]["type"] = "WordPiece";
  EXPECT_NE(err(bad).find("model type 'WordPiece' is not supported"), std::string::npos);
  bad = hand_tokenizer_json();
  bad["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Removed"}};
  EXPECT_NE(err(bad).find("behavior 'Removed' is not supported"), std::string::npos);
  bad = hand_tokenizer_json();
  bad["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true;
  EXPECT_NE(err(bad).find("add_prefix_space = true is not supported"), std::string::npos);
  bad = hand_tokenizer_json();
  bad["decoder"] = {{"type", "Metaspace"}};
  EXPECT_NE(err(bad).find("decoder 'Metaspace' is not supported"), std::string::npos);
  bad = hand_tokenizer_json();
  bad["model"]["merges"].push_back("zz yy");
  EXPECT_NE(err(bad).find("names a token that is not in the vocabulary"), std::string::npos);
  write_text(p, "{not json");
  EXPECT_NE(error_from([&] { load_bpe_tokenizer_json(p, ""); }).find("not valid JSON"), std::string::npos);
  ::unlink(p.c_str());
  ::unlink(pc.c_str());
}

namespace {

std::unique_ptr<Tokenizer> smollm2_or_skip(std::unique_ptr<GGUFFile>* file) {
  const std::string p = smollm2_path();
  if (!file_exists(p)) return nullptr;
  *file = std::make_unique<GGUFFile>(p);
  return tokenizer_from_gguf(**file);
}

// tokenizer.json + tokenizer_config.json in SmolLM2's own layout, written from the GGUF metadata.
void write_tokenizer_json_from_gguf(const GGUFFile& f, const std::string& path, const std::string& config_path) {
  const auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  const auto types = f.get_i32_array("tokenizer.ggml.token_type");
  json vocab = json::object(), added = json::array(), merges = json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    vocab[tokens[i]] = i;
    if (types[i] == static_cast<int32_t>(GGUFTokenType::CONTROL))
      added.push_back({{"id", i}, {"content", tokens[i]}, {"special", true}});
  }
  for (const auto& m : f.get_string_array("tokenizer.ggml.merges")) merges.push_back(m);
  json j = {{"version", "1.0"},
            {"added_tokens", added},
            {"normalizer", nullptr},
            {"pre_tokenizer",
             {{"type", "Sequence"},
              {"pretokenizers",
               {{{"type", "Digits"}, {"individual_digits", true}},
                {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}}}}},
            {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}}},
            {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}}},
            {"model",
             {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", "<|endoftext|>"}, {"vocab", vocab},
              {"merges", merges}, {"byte_fallback", false}}}};
  write_text(path, j.dump());
  write_text(config_path, json({{"add_bos_token", false},
                                {"bos_token", tokens[f.get_u32("tokenizer.ggml.bos_token_id")]},
                                {"eos_token", tokens[f.get_u32("tokenizer.ggml.eos_token_id")]}})
                              .dump());
}

}  // namespace

TEST(BPESmolLM2, PromptIdsMatchTransformers) {
  std::unique_ptr<GGUFFile> f;
  auto tok = smollm2_or_skip(&f);
  if (!tok) GTEST_SKIP() << smollm2_path() << " not found: run scripts/get-model.sh smollm2-135m (or set LLMC_SMOLLM2_GGUF)";
  const std::string ref = shared_root() + "/models/smollm2-135m-instruct/reference_greedy.json";
  if (!file_exists(ref)) GTEST_SKIP() << ref << " not found (set LLMC_SHARED)";
  EXPECT_EQ(tok->type(), "bpe");
  EXPECT_EQ(tok->vocab_size(), 49152);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_FALSE(tok->add_bos_default());
  const json j = json::parse(read_text_file(ref));
  int matched = 0;
  for (const auto& c : j["cases"]) {
    const std::string prompt = c["prompt"].get<std::string>();
    const auto want = c["prompt_ids"].get<std::vector<int32_t>>();
    const auto got = tok->encode(prompt, tok->add_bos_default());
    EXPECT_EQ(got, want) << "case " << c["case"];
    matched += got == want;
    EXPECT_EQ(tok->decode(c["generated_ids"].get<std::vector<int32_t>>()), c["generated_text_skip_special"].get<std::string>())
        << "case " << c["case"];
    if (prompt.find("<|") == std::string::npos) EXPECT_EQ(tok->decode(got), prompt);
  }
  EXPECT_EQ(matched, 3);
}

TEST(BPESmolLM2, RoundTripsAndInvalidInput) {
  std::unique_ptr<GGUFFile> f;
  auto tok = smollm2_or_skip(&f);
  if (!tok) GTEST_SKIP() << smollm2_path() << " not found: run scripts/get-model.sh smollm2-135m";
  for (const std::string s :
       {"", " ", "   leading", "trailing   ", "tabs\t\tand\n\n\nnewlines\r\n", "emoji \xF0\x9F\x99\x82\xF0\x9F\x8E\x89!",
        "\xE4\xB8\xAD\xE6\x96\x87\xE6\xB5\x8B\xE8\xAF\x95 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E", "caf\xC3\xA9 na\xC3\xAFve",
        "x = 12345678 + 0.5e-3", "def f(n):\n    return n"})
    EXPECT_EQ(tok->decode(tok->encode(s, false)), s) << s;
  // A byte whose byte-level character is not in the vocabulary becomes <unk> (here
  // <|endoftext|>, id 0), which decode drops.
  EXPECT_EQ(tok->encode("\x04", false), (std::vector<int32_t>{0}));
  // Digits are split one per token (llama.cpp's smollm pre-tokenizer).
  const auto ids = tok->encode("2024", false);
  EXPECT_EQ(ids.size(), 4u);
  std::mt19937 rng(42);
  for (int k = 0; k < 300; ++k) {
    const std::string s = random_text(rng, 1 + static_cast<int>(rng() % 30));
    ASSERT_EQ(tok->decode(tok->encode(s, false)), s);
  }
  // Random bytes: valid UTF-8 encodes (bytes without a token as <unk>), anything else throws
  // llmc::Error naming the offset; nothing crashes.
  int rejected = 0;
  for (int k = 0; k < 500; ++k) {
    std::string s(1 + rng() % 24, '\0');
    for (auto& c : s) c = static_cast<char>(rng() & 0xff);
    try {
      (void)tok->decode(tok->encode(s, false));
    } catch (const Error& e) {
      ++rejected;
      ASSERT_NE(std::string(e.what()).find("invalid UTF-8"), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(rejected, 400);
  // Decoding a prefix that ends inside a character returns the bytes as they are.
  const auto emoji = tok->encode("\xF0\x9F\x99\x82", false);
  if (emoji.size() > 1) {
    const std::string partial = tok->decode({emoji[0]});
    EXPECT_EQ(partial, std::string("\xF0\x9F\x99\x82").substr(0, partial.size()));
  }
}

TEST(BPESmolLM2, TokenizerJsonFromTheGGUFGivesTheSameIds) {
  std::unique_ptr<GGUFFile> f;
  auto tok = smollm2_or_skip(&f);
  if (!tok) GTEST_SKIP() << smollm2_path() << " not found: run scripts/get-model.sh smollm2-135m";
  const std::string p = tmp_path("smollm2_tokenizer.json"), pc = tmp_path("smollm2_tokenizer_config.json");
  write_tokenizer_json_from_gguf(*f, p, pc);
  auto tj = load_bpe_tokenizer_json(p, pc);
  EXPECT_EQ(tj->vocab_size(), tok->vocab_size());
  EXPECT_EQ(tj->bos_id(), tok->bos_id());
  EXPECT_EQ(tj->eos_id(), tok->eos_id());
  EXPECT_EQ(tj->add_bos_default(), tok->add_bos_default());
  std::vector<std::string> texts;
  const std::string ref = shared_root() + "/models/smollm2-135m-instruct/reference_greedy.json";
  if (file_exists(ref)) {
    const json j = json::parse(read_text_file(ref));
    for (const auto& c : j["cases"]) texts.push_back(c["prompt"].get<std::string>());
  }
  std::mt19937 rng(8);
  for (int k = 0; k < 200; ++k) texts.push_back(random_text(rng, 1 + static_cast<int>(rng() % 40), true));
  const std::string wiki = shared_root() + "/data/wikitext2/wiki.test.raw";
  if (file_exists(wiki)) texts.push_back(read_text_file(wiki).substr(0, 20000));
  for (const auto& s : texts) {
    const auto a = tok->encode(s, true), b = tj->encode(s, true);
    ASSERT_EQ(a, b) << s.substr(0, 200);
    ASSERT_EQ(tj->decode(b), tok->decode(a));
  }
  ::unlink(p.c_str());
  ::unlink(pc.c_str());
}

TEST(BPESmolLM2, WikiText2TokenCount) {
  std::unique_ptr<GGUFFile> f;
  auto tok = smollm2_or_skip(&f);
  if (!tok) GTEST_SKIP() << smollm2_path() << " not found: run scripts/get-model.sh smollm2-135m";
  const std::string wiki = shared_root() + "/data/wikitext2/wiki.test.raw";
  if (!file_exists(wiki)) GTEST_SKIP() << wiki << " not found (set LLMC_SHARED)";
  const std::string text = read_text_file(wiki);
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok->encode(text, false);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // The count transformers gives for the whole file without special tokens (see the README).
  EXPECT_EQ(ids.size(), 303415u);
  EXPECT_EQ(tok->decode(ids), text);
  std::printf("[ info ] wiki.test.raw: %zu bytes -> %zu tokens in %.2f s\n", text.size(), ids.size(), s);
}
