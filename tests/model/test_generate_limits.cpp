// generate and eval at the model's context, the space between prompt and continuation, and eval's
// --output checked before the work (issue 21, defects 8 and 10).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/model/generate.h"
#include "llmc/model/load.h"
#include "synthetic.h"
#include "cli_run.h"

using namespace llmc;

namespace {

std::string stories() { return shared_root() + "/models/stories260K"; }

}  // namespace

// Defect 8: a prompt longer than the context is an error; generation stops at the context with
// stopped_at_context set; allow_past_context goes on as asked.
TEST(GenerateLimits, StopsAtTheContextUnlessAllowed) {
  auto cfg = test::tiny_config();  // context 64
  auto m = test::random_llama(cfg, 4);
  GenerateOptions g;
  g.stop_at_eos = false;
  g.max_new_tokens = 100;
  std::vector<int32_t> prompt(10, 5);
  GenerateStats st;
  auto out = generate(*m, prompt, g, nullptr, &st);
  EXPECT_EQ(out.size(), 54u);
  EXPECT_TRUE(st.stopped_at_context);
  g.max_new_tokens = 20;
  out = generate(*m, prompt, g, nullptr, &st);
  EXPECT_EQ(out.size(), 20u);
  EXPECT_FALSE(st.stopped_at_context);
  g.allow_past_context = true;
  g.max_new_tokens = 60;
  EXPECT_EQ(generate(*m, prompt, g).size(), 60u);
  g.allow_past_context = false;
  std::vector<int32_t> long_prompt(65, 5);
  try {
    generate(*m, long_prompt, g);
    FAIL() << "a prompt past the context was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the prompt has 65 tokens, more than the model's context of 64"),
              std::string::npos)
        << e.what();
  }
  g.allow_past_context = true;
  g.max_new_tokens = 2;
  EXPECT_EQ(generate(*m, long_prompt, g).size(), 2u);
}

// Defect 10: no negative speed with fewer than two new tokens.
TEST(GenerateLimits, DecodeSpeedIsNeverNegative) {
  GenerateStats st;
  st.decode_seconds = 1e-6;
  EXPECT_EQ(st.decode_tokens_per_second(), 0.0);
  st.new_tokens = 1;
  EXPECT_EQ(st.decode_tokens_per_second(), 0.0);
  st.new_tokens = 3;
  st.decode_seconds = 0.5;
  EXPECT_EQ(st.decode_tokens_per_second(), 4.0);
}

// Defect 10: SentencePiece drops the leading space of a text's first piece; the continuation keeps
// the space between prompt and continuation.
TEST(GenerateLimits, ContinuationKeepsTheSpaceAfterThePrompt) {
  if (!dir_exists(stories())) GTEST_SKIP() << "shared model not found at " << stories();
  auto m = load_llama(stories());
  const Tokenizer& tok = m->tokenizer();
  const auto prompt = tok.encode("Once upon a", tok.add_bos_default());
  const auto all = tok.encode("Once upon a time there was", tok.add_bos_default());
  ASSERT_GT(all.size(), prompt.size());
  ASSERT_TRUE(std::equal(prompt.begin(), prompt.end(), all.begin()));
  const std::vector<int32_t> rest(all.begin() + static_cast<long>(prompt.size()), all.end());
  EXPECT_EQ(decode_continuation(tok, prompt, rest), " time there was");
  EXPECT_EQ(decode_continuation(tok, prompt, {}), "");
}

// Defects 8 and 10 through the CLI on stories260K (context 512).
TEST(GenerateLimits, CliContextSpaceAndSpeed) {
  if (!dir_exists(stories())) GTEST_SKIP() << "shared model not found at " << stories();
  CliRun r = run_cli("generate --model " + stories() + " --prompt 'Once upon a' --max-new-tokens 600 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("context is 512 tokens: stopping after"), std::string::npos) << r.out;
  const size_t at = r.out.find("{\"ids\"");
  ASSERT_NE(at, std::string::npos) << r.out;
  const auto j = nlohmann::json::parse(r.out.substr(at, r.out.find('\n', at) - at));
  const size_t prompt = j["prompt_ids"].size(), made = j["ids"].size();
  EXPECT_TRUE(made == 512 - prompt || j["ids"].back() == 2) << made;  // the context, or an EOS before it
  EXPECT_EQ(j["text"].get<std::string>().substr(0, 1), " ") << j["text"];

  r = run_cli("generate --model " + stories() + " --prompt 'Once upon a' --max-new-tokens 3");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.find("Once upon a"), r.out.find("Once upon a "));  // the space is printed
  EXPECT_NE(r.out.find("Once upon a "), std::string::npos) << r.out;
  r = run_cli("generate --model " + stories() + " --prompt 'Once upon a' --max-new-tokens 0");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.find("(-"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(0.0 tok/s)"), std::string::npos) << r.out;

  r = run_cli("eval --model " + stories() + " --tasks wikitext --limit 1 --max-length 100000");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("error: --max-length 100000: longer than the model's context of 512 tokens"), std::string::npos)
      << r.out;
}

// Defect 10: eval --output to a place that cannot be written fails before the evaluation.
TEST(GenerateLimits, EvalOutputCheckedBeforeTheWork) {
  if (!dir_exists(stories())) GTEST_SKIP() << "shared model not found at " << stories();
  CliRun r = run_cli("eval --model " + stories() + " --tasks wikitext --limit 1 --output /proc/llmc_result.json");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("error: --output: /proc/llmc_result.json: cannot write there"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("word_perplexity"), std::string::npos) << r.out;
  const std::string dir = "/tmp/llmc_outdir_" + std::to_string(::getpid());
  make_dirs(dir);
  r = run_cli("eval --model " + stories() + " --tasks wikitext --limit 1 --output " + dir);
  EXPECT_NE(r.out.find("is a folder, expected a file to write"), std::string::npos) << r.out;
  remove_tree(dir);
}
