// One strict UTF-8 check (tokenizer/tokenizer.h check_utf8) for every text a tokenizer or a document
// reader takes (issue 21 defect 10: overlong forms and surrogates were accepted while 0xFF was
// rejected). Each case once through the validator, then through both native tokenizers and the
// text-document readers, which must all say the same thing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/data/text_docs.h"
#include "llmc/tokenizer/bpe.h"
#include "llmc/tokenizer/spm_native.h"

using namespace llmc;

namespace {

struct Bad {
  const char* name;
  std::string bytes;
  size_t offset;    // byte offset reported
  const char* why;  // reason reported
};

// "ok" + the bad sequence + "ok": the offset is 2 unless the case says otherwise.
const std::vector<Bad>& bad_cases() {
  static const std::vector<Bad> v = {
      {"byte 0xFF", "ok\xFFok", 2, "invalid lead byte"},
      {"byte 0xFE", "ok\xFEok", 2, "invalid lead byte"},
      {"stray continuation", "ok\x80ok", 2, "unexpected continuation byte"},
      {"overlong NUL C0 80", "ok\xC0\x80ok", 2, "overlong encoding"},
      {"overlong '/' C0 AF", "ok\xC0\xAFok", 2, "overlong encoding"},
      {"overlong C1 BF", "ok\xC1\xBFok", 2, "overlong encoding"},
      {"overlong 3-byte U+007F", "ok\xE0\x81\xBFok", 2, "overlong encoding"},
      {"overlong 3-byte U+07FF", "ok\xE0\x9F\xBFok", 2, "overlong encoding"},
      {"overlong 4-byte U+FFFF", "ok\xF0\x8F\xBF\xBFok", 2, "overlong encoding"},
      {"surrogate U+D800", "ok\xED\xA0\x80ok", 2, "UTF-16 surrogate"},
      {"surrogate U+DBFF U+DC00 pair", "ok\xED\xAF\xBF\xED\xB0\x80ok", 2, "UTF-16 surrogate"},
      {"surrogate U+DFFF", "ok\xED\xBF\xBFok", 2, "UTF-16 surrogate"},
      {"U+110000", "ok\xF4\x90\x80\x80ok", 2, "code point past U+10FFFF"},
      {"U+1FFFFF", "ok\xF7\xBF\xBF\xBFok", 2, "invalid lead byte"},
      {"lead 0xF5", "ok\xF5\x80\x80\x80ok", 2, "invalid lead byte"},
      {"5-byte form", "ok\xF8\x88\x80\x80\x80ok", 2, "invalid lead byte"},
      {"truncated at end", "ok\xE2\x82", 2, "truncated sequence"},
      {"missing continuation", "ok\xE2\x82(ok", 2, "missing continuation byte"},
      {"after valid text", "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xED\xA0\x80", 9, "UTF-16 surrogate"},
  };
  return v;
}

const std::vector<std::string>& good_cases() {
  static const std::vector<std::string> v = {
      "",
      "plain ASCII\t\n",
      std::string("NUL \0 inside", 12),
      "\xC2\x80",          // U+0080, the first two-byte character
      "\xDF\xBF",          // U+07FF
      "\xE0\xA0\x80",      // U+0800, the first three-byte character
      "\xED\x9F\xBF",      // U+D7FF, just below the surrogates
      "\xEE\x80\x80",      // U+E000, just above them
      "\xEF\xBF\xBF",      // U+FFFF
      "\xF0\x90\x80\x80",  // U+10000, the first four-byte character
      "\xF4\x8F\xBF\xBF",  // U+10FFFF, the last code point
      "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80",
  };
  return v;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string expected_message(const char* what, const Bad& b) {
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned char>(b.bytes[b.offset]));
  return std::string(what) + ": invalid UTF-8 at byte offset " + std::to_string(b.offset) + " (byte " + hex + ": " +
         b.why + ")";
}

const std::string kSp = "\xE2\x96\x81";

SpmNativeTokenizer spm() {
  SpmVocab v;
  v.source = "utf8 test vocabulary";
  v.pieces = {"<unk>", "<s>", "</s>", kSp, "o", "k"};
  v.scores = {0, 0, 0, -1, -1, -1};
  using T = GGUFTokenType;
  v.types = {T::UNKNOWN, T::CONTROL, T::CONTROL, T::NORMAL, T::NORMAL, T::NORMAL};
  v.bos = 1;
  v.eos = 2;
  v.unk = 0;
  return SpmNativeTokenizer(v);
}

BPETokenizer bpe() {
  BPEVocab v;
  v.source = "utf8 test vocabulary";
  v.tokens = {"<unk>", "o", "k"};
  v.pre_regexes = {kGPT2PreRegex};
  v.unk = 0;
  return BPETokenizer(v);
}

}  // namespace

TEST(Utf8, ReplaceInvalidGivesValidTextAndKeepsValidText) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(utf8_replace_invalid("caf\xC3\xA9 \xE4\xB8\xAD"), "caf\xC3\xA9 \xE4\xB8\xAD");
  EXPECT_EQ(utf8_replace_invalid("a\xFF" "b"), "a" + fffd + "b");
  EXPECT_EQ(utf8_replace_invalid("end\xE4\xB8"), "end" + fffd + fffd);  // cut mid-character
  EXPECT_EQ(utf8_replace_invalid("\x80\x80"), fffd + fffd);
  EXPECT_EQ(utf8_replace_invalid("\xED\xA0\x80x"), fffd + fffd + fffd + "x");  // a surrogate
  EXPECT_EQ(utf8_replace_invalid(""), "");
  for (const char* s : {"a\xFF" "b", "end\xE4\xB8", "\xC0\xAF", "\xF4\x90\x80\x80"})
    EXPECT_EQ(utf8_problem(utf8_replace_invalid(s)), nullptr) << s;
}

TEST(Utf8, ValidTextPasses) {
  for (const auto& s : good_cases()) {
    size_t off = 123;
    EXPECT_EQ(utf8_problem(s, &off), nullptr) << s;
    EXPECT_NO_THROW(check_utf8(s, "text")) << s;
  }
}

TEST(Utf8, EachInvalidFormIsRejectedWithItsOffsetAndReason) {
  for (const auto& b : bad_cases()) {
    size_t off = 0;
    const char* why = utf8_problem(b.bytes, &off);
    ASSERT_NE(why, nullptr) << b.name;
    EXPECT_STREQ(why, b.why) << b.name;
    EXPECT_EQ(off, b.offset) << b.name;
    EXPECT_EQ(error_of([&] { check_utf8(b.bytes, "prompt text"); }), expected_message("prompt text", b)) << b.name;
  }
}

TEST(Utf8, BothTokenizersRejectExactlyWhatTheValidatorRejects) {
  const SpmNativeTokenizer s = spm();
  const BPETokenizer p = bpe();
  for (const auto& b : bad_cases()) {
    EXPECT_EQ(error_of([&] { s.encode(b.bytes, true); }), expected_message("tokenizer input", b)) << b.name;
    EXPECT_EQ(error_of([&] { p.encode(b.bytes, true); }), expected_message("tokenizer input", b)) << b.name;
  }
  for (const auto& g : good_cases()) {
    EXPECT_EQ(error_of([&] { s.encode(g, true); }), "") << g;
    EXPECT_EQ(error_of([&] { p.encode(g, true); }), "") << g;
  }
}

TEST(Utf8, TextDocumentsAreCheckedNamingTheFile) {
  const std::string path = "/tmp/llmc_utf8_" + std::to_string(::getpid()) + ".txt";
  for (const auto& b : bad_cases()) {
    std::ofstream(path, std::ios::binary) << b.bytes;
    const std::string want = expected_message(path.c_str(), b);
    EXPECT_EQ(error_of([&] { load_text_docs(path); }), want) << b.name;
    EXPECT_EQ(error_of([&] { load_wikitext_docs(path); }), want) << b.name;
    EXPECT_EQ(error_of([&] { load_wikitext_raw(path); }), want) << b.name;
  }
  std::ofstream(path, std::ios::binary) << "caf\xC3\xA9 \xF4\x8F\xBF\xBF";
  EXPECT_EQ(load_text_docs(path).size(), 1u);
  std::remove(path.c_str());
}
