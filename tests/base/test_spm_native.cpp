// SentencePiece-style tokenizer from GGUF metadata (no libsentencepiece): a hand-made vocabulary
// with ids derived by hand, and stories260K's tok512 against the run.c / SentencePiece references.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/io/gguf.h"
#include "llmc/tokenizer/bpe.h"
#include "llmc/tokenizer/spm_native.h"

using namespace llmc;

namespace {

const std::string kSp = "\xE2\x96\x81";  // "▁"

// ids: 0 <unk>, 1 <s>, 2 </s>, 3 ▁, 4 a, 5 b, 6 c, 7 ab, 8 ▁a, 9 ▁ab, 10 bc, 11 <0x41>, 12 <0xC3>, 13 <0xA9>
SpmVocab hand_vocab() {
  SpmVocab v;
  v.source = "hand-made vocabulary";
  v.pieces = {"<unk>", "<s>", "</s>", kSp, "a", "b", "c", "ab", kSp + "a", kSp + "ab", "bc", "<0x41>", "<0xC3>", "<0xA9>"};
  v.scores = {0, 0, 0, -1, -1, -1, -1, -2, -3, -4, -1.5f, 0, 0, 0};
  using T = GGUFTokenType;
  v.types = {T::UNKNOWN, T::CONTROL, T::CONTROL, T::NORMAL, T::NORMAL, T::NORMAL, T::NORMAL, T::NORMAL,
             T::NORMAL,  T::NORMAL,  T::NORMAL,  T::BYTE,   T::BYTE,   T::BYTE};
  v.bos = 1;
  v.eos = 2;
  v.unk = 0;
  return v;
}

nlohmann::json load_json(const std::string& path) { return nlohmann::json::parse(read_text_file(path)); }

}  // namespace

TEST(SpmNative, HandMadeVocabularyIdsByHand) {
  SpmNativeTokenizer tok(hand_vocab());
  EXPECT_EQ(tok.type(), "sentencepiece");
  EXPECT_EQ(tok.vocab_size(), 14);
  // "abc" -> "▁abc": pairs ▁a(-3) ab(-2) bc(-1.5): bc wins -> ▁ a bc; then ▁a(-3) -> ▁a bc.
  EXPECT_EQ(tok.encode("abc", false), (std::vector<int32_t>{8, 10}));
  // "ab" -> "▁ab": ab(-2) beats ▁a(-3) -> ▁ ab; then ▁ab(-4) -> [▁ab].
  EXPECT_EQ(tok.encode("ab", true), (std::vector<int32_t>{1, 9}));
  // Equal scores merge leftmost first: "bcbc" -> ▁ b c b c: bc(-1.5) at 1 and 3 -> ▁ bc bc.
  EXPECT_EQ(tok.encode("bcbc", false), (std::vector<int32_t>{3, 10, 10}));
  // Byte fallback: 'A' has a byte piece, 'é' = C3 A9 has both, 'Z' has none -> <unk>.
  EXPECT_EQ(tok.encode("A", false), (std::vector<int32_t>{3, 11}));
  EXPECT_EQ(tok.encode("\xC3\xA9", false), (std::vector<int32_t>{3, 12, 13}));
  EXPECT_EQ(tok.encode("Z", false), (std::vector<int32_t>{3, 0}));
  EXPECT_TRUE(tok.encode("", false).empty());
  EXPECT_EQ(tok.encode("", true), (std::vector<int32_t>{1}));
  // Decode: control dropped, dummy-prefix space stripped once, bytes raw, <unk> as " ⁇ ".
  EXPECT_EQ(tok.decode({1, 8, 10, 9, 2}), "abc ab");
  EXPECT_EQ(tok.decode({1, 8, 10, 3, 9, 2}), "abc  ab");
  EXPECT_EQ(tok.decode({3, 3, 4}), " a");
  EXPECT_EQ(tok.decode({12, 13, 11}), "\xC3\xA9" "A");
  EXPECT_EQ(tok.decode({12}), "\xC3");  // an incomplete character comes back as its byte
  EXPECT_EQ(tok.decode({4, 0}), "a \xE2\x81\x87 ");
  EXPECT_THROW(tok.decode({14}), Error);
  EXPECT_THROW(tok.decode({-1}), Error);
  EXPECT_THROW(tok.encode("\xff", false), Error);
  // Whitespace runs are kept (llama.cpp; no remove_extra_whitespaces), so round trips are exact.
  for (const std::string s : {"ab  abc", " a", "  ", "abc ", "bc\xC3\xA9 A"}) EXPECT_EQ(tok.decode(tok.encode(s, true)), s) << s;
}

TEST(SpmNative, RejectsInconsistentVocabularies) {
  SpmVocab v = hand_vocab();
  v.scores.pop_back();
  EXPECT_THROW(SpmNativeTokenizer{v}, Error);
  v = hand_vocab();
  v.pieces[11] = "<0xZZ>";
  try {
    SpmNativeTokenizer t(v);
    ADD_FAILURE() << "bad byte piece accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("hand-made vocabulary: token 11 '<0xZZ>' has type BYTE"), std::string::npos)
        << e.what();
  }
  v = hand_vocab();
  v.bos = 99;
  EXPECT_THROW(SpmNativeTokenizer{v}, Error);
  v = hand_vocab();
  v.scores[5] = std::nanf("");
  EXPECT_THROW(SpmNativeTokenizer{v}, Error);
}

TEST(SpmNative, Stories260KMatchesRunCAndSentencePiece) {
  const std::string dir = shared_root() + "/models/stories260K";
  const std::string gguf = dir + "/original/stories260K.gguf", ref = dir + "/reference_greedy.json";
  if (!file_exists(gguf) || !file_exists(ref)) GTEST_SKIP() << "stories260K not found under " << dir << " (set LLMC_SHARED)";
  GGUFFile f(gguf);
  auto tok = tokenizer_from_gguf(f);
  EXPECT_EQ(tok->type(), "sentencepiece");
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->add_bos_default());
  const auto j = load_json(ref);
  int cases = 0;
  for (const auto& c : j["cases"]) {
    const std::string prompt = c["prompt"].get<std::string>();
    EXPECT_EQ(tok->encode(prompt, true), c["prompt_ids"].get<std::vector<int32_t>>()) << "prompt: " << prompt;
    EXPECT_EQ(tok->decode(c["generated_ids"].get<std::vector<int32_t>>()),
              c["generated_text_sentencepiece_decode"].get<std::string>())
        << "prompt: " << prompt;
    ++cases;
  }
  EXPECT_EQ(cases, 3);

  // Round trips, including text that needs byte fallback (tok512 has no 'é', emoji or CJK pieces).
  for (const std::string s : {"Once upon a time", "  two spaces", "tabs\tand\nnewlines\n", "trailing  ",
                              "caf\xC3\xA9 \xF0\x9F\x99\x82 \xE4\xB8\xAD\xE6\x96\x87", "", " "})
    EXPECT_EQ(tok->decode(tok->encode(s, true)), s) << s;
  // A character without a piece falls back to its bytes: <0xE4> = id 3 + 0xE4 ("中" = E4 B8 AD).
  EXPECT_EQ(tok->encode("\xE4\xB8\xAD", false), (std::vector<int32_t>{410, 3 + 0xE4, 3 + 0xB8, 3 + 0xAD}));
  EXPECT_EQ(dynamic_cast<const SpmNativeTokenizer&>(*tok).piece(410), "\xE2\x96\x81");
  // Random valid UTF-8 (code points of every length) round-trips.
  std::mt19937 rng(3);
  for (int k = 0; k < 200; ++k) {
    std::string s;
    const int n = 1 + static_cast<int>(rng() % 20);
    for (int i = 0; i < n; ++i) {
      uint32_t cp;
      switch (rng() % 4) {
        case 0: cp = 0x20 + rng() % 0x5f; break;
        case 1: cp = 0x80 + rng() % 0x780; break;
        case 2: cp = 0x800 + rng() % 0xd000; break;  // stays below the surrogates
        default: cp = 0x10000 + rng() % 0x100000; break;
      }
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
    }
    ASSERT_EQ(tok->decode(tok->encode(s, false)), s);
  }
  EXPECT_THROW(tok->encode("bad \xC3", false), Error);
}
