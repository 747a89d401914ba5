#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/data/text_docs.h"

using namespace llmc;

TEST(TextDocs, WikitextDetokenizer) {
  EXPECT_EQ(wikitext_detokenize(" = = Career = = \n"), " == Career ==\n");
  EXPECT_EQ(wikitext_detokenize("a 1 @,@ 000 b 2 @.@ 5 c @-@ d"), "a 1,000 b 2.5 c-d");
  EXPECT_EQ(wikitext_detokenize("x ( y z ) , w \" q \" ."), "x (y z), w \"q\" .");
  EXPECT_EQ(wikitext_detokenize("the player 's goal"), "the player's goal");
  EXPECT_EQ(count_words(" a  b\nc "), 5);  // Python: ['', 'a', 'b', 'c', '']
  EXPECT_EQ(count_words("abc"), 1);
}

TEST(TextDocs, WikitextSplitsArticles) {
  const std::string p = shared_root() + "/data/wikitext2/wiki.test.raw";
  if (!file_exists(p)) GTEST_SKIP() << "shared data not found at " << p << " (set LLMC_SHARED)";
  auto docs = load_wikitext_docs(p);
  EXPECT_EQ(docs.size(), 62u);  // the 62 articles of the WikiText-2 test split (lm-eval: 62 docs)
  EXPECT_EQ(docs[0].original.rfind(" \n = Robert Boulter = \n", 0), 0u);
  EXPECT_EQ(docs[1].original.rfind(" = Du Fu = \n", 0), 0u);
  size_t bytes = 0;
  for (auto& d : docs) bytes += d.original.size();
  EXPECT_EQ(bytes, 1290590u);
}

TEST(TextDocs, TextFileSeparatorsAndErrors) {
  const std::string p = "/tmp/llmc_docs_" + std::to_string(::getpid()) + ".txt";
  { std::ofstream f(p); f << "one story.\n<|endoftext|>\ntwo\nlines\n<|endoftext|>\ncut off fragm"; }
  auto docs = load_text_docs(p);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].text, "one story.");
  EXPECT_EQ(docs[1].text, "two\nlines");
  { std::ofstream f(p); f << "just text\nno separators\n"; }
  EXPECT_EQ(load_text_docs(p).size(), 1u);
  { std::ofstream f(p); }
  try {
    load_text_docs(p);
    FAIL() << "empty file accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("empty text file"), std::string::npos);
  }
  ::unlink(p.c_str());
  EXPECT_THROW(load_text_docs("/nonexistent.txt"), Error);
}
