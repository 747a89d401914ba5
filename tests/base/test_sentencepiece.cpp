#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/tokenizer/sentencepiece.h"

using namespace llmc;

// The sanitizer runtime refuses dlopen(RTLD_DEEPBIND), so the shim is left out of the ASan build.
#if defined(__SANITIZE_ADDRESS__)
#define SKIP_UNDER_ASAN() GTEST_SKIP() << "sentencepiece shim is not loaded under ASan (RTLD_DEEPBIND)"
#else
#define SKIP_UNDER_ASAN() (void)0
#endif

TEST(SentencePiece, Llama2ReferenceEncodings) {
  SKIP_UNDER_ASAN();
  const std::string dir = shared_root() + "/tokenizers/llama2";
  if (!file_exists(dir + "/tokenizer.model")) GTEST_SKIP() << "shared tokenizer not found under " << dir;
  if (find_spm_shim().empty()) GTEST_SKIP() << "sentencepiece shim not built";
  auto tok = load_sentencepiece(dir + "/tokenizer.model", SpecialIds{});
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  auto ref = nlohmann::json::parse(read_text_file(dir + "/reference_encodings.json"));
  int n = 0;
  for (const auto& c : ref["cases"]) {
    const std::string text = c["text"];
    auto ids = tok->encode(text, true);
    EXPECT_EQ(ids, c["ids_with_bos"].get<std::vector<int32_t>>()) << "text: " << text;
    EXPECT_EQ(tok->decode(ids), c["decoded"].get<std::string>());
    ++n;
  }
  EXPECT_EQ(n, 5);
}

TEST(SentencePiece, RejectsInvalidUtf8AndBadIds) {
  SKIP_UNDER_ASAN();
  const std::string p = shared_root() + "/models/stories260K/tokenizer.model";
  if (!file_exists(p)) GTEST_SKIP() << "shared model not found at " << p;
  auto tok = load_sentencepiece(p, SpecialIds{});
  try {
    tok->encode("abc\xff\xfe", true);
    FAIL() << "invalid UTF-8 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("invalid UTF-8"), std::string::npos);
  }
  EXPECT_THROW(tok->decode({100000}), Error);
  EXPECT_THROW(load_sentencepiece("/nonexistent/tokenizer.model", SpecialIds{}), Error);
}
