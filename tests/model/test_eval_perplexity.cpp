// The GPTQ-style perplexity protocol (eval task wikitext2_gptq, PerplexityProtocol::Chunks): window
// construction and scoring against a plain per-window loop on a random tiny Llama, the task through
// run_eval, and SmolLM2-135M against the transformers reference in
// shared/models/smollm2-135m-instruct/reference_wikitext2.json.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/eval/harness.h"
#include "llmc/eval/perplexity.h"
#include "llmc/data/text_docs.h"
#include "llmc/model/load.h"
#include "synthetic.h"

using namespace llmc;

namespace {

// One token per byte, ids 3..49 (the tiny model's vocabulary is 50); BOS 1 and EOS 2 exist but are
// never produced by encode(add_bos=false), so a 1 in a window would be an added BOS.
class ModTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> ids;
    if (add_bos) ids.push_back(1);
    for (unsigned char c : text) ids.push_back(3 + c % 47);
    return ids;
  }
  std::string decode(const std::vector<int32_t>&) const override { return {}; }
  int vocab_size() const override { return 50; }
  int bos_id() const override { return 1; }
  int eos_id() const override { return 2; }
  bool add_bos_default() const override { return true; }
  std::string type() const override { return "mod47"; }
};

std::string random_text(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, ' ');
  for (auto& c : s) c = static_cast<char>(32 + rng() % 95);
  return s;
}

// The protocol written out plainly: each window alone through forward(), log_softmax, mean NLL of
// positions 0..L-2 predicting tokens 1..L-1.
std::vector<double> plain_window_nll(CausalLM& m, const std::vector<int32_t>& ids, int64_t L, int64_t n) {
  at::NoGradGuard ng;
  std::vector<double> out;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> w(ids.begin() + i * L, ids.begin() + (i + 1) * L);
    auto logp = at::log_softmax(m.forward(at::tensor(w, at::kLong).unsqueeze(0))[0].to(at::kDouble), -1);
    double nll = 0;
    for (int64_t t = 0; t + 1 < L; ++t) nll -= logp[t][w[t + 1]].item<double>();
    out.push_back(nll / static_cast<double>(L - 1));
  }
  return out;
}

struct TmpDir {
  std::string path;
  TmpDir() {
    static int n = 0;
    path = "/tmp/llmc_ppl_" + std::to_string(::getpid()) + "_" + std::to_string(n++);
    std::system(("mkdir -p " + path + "/wikitext2").c_str());
  }
  ~TmpDir() { std::system(("rm -rf " + path).c_str()); }
};

}  // namespace

TEST(EvalPerplexity, ChunkWindowsAreFullNonOverlappingAndWithoutBos) {
  std::vector<int32_t> ids(1000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(3 + i % 47);
  auto w = chunk_windows(ids, 48);
  ASSERT_EQ(w.size(), 20u);  // 1000 / 48: the 40-token tail is dropped
  for (size_t i = 0; i < w.size(); ++i) {
    const auto begin = ids.begin() + static_cast<int64_t>(i) * 48;
    EXPECT_EQ(w[i].input, std::vector<int32_t>(begin, begin + 48)) << "window " << i;
    EXPECT_EQ(w[i].target, std::vector<int32_t>(begin + 1, begin + 48)) << "window " << i;
    EXPECT_EQ(w[i].score_from, 0);
    EXPECT_EQ(w[i].n_predict, 47);
  }
  EXPECT_EQ(chunk_windows(std::vector<int32_t>(96, 5), 48).size(), 2u);  // an exact multiple: no tail
  EXPECT_TRUE(chunk_windows(std::vector<int32_t>(47, 5), 48).empty());
  EXPECT_THROW(chunk_windows(ids, 1), Error);
}

TEST(EvalPerplexity, GptqProtocolEqualsPlainPerWindowLoop) {
  auto cfg = test::tiny_config();  // max_position_embeddings 64
  auto tok = std::make_shared<ModTokenizer>();
  auto m = test::random_llama(cfg, 3, tok);
  const std::string text = random_text(1000, 7);
  const auto ids = tok->encode(text, false);
  const std::vector<TextDocument> docs{{text, text}};

  PerplexityOptions o;
  o.protocol = PerplexityProtocol::Chunks;
  o.max_length = 48;
  o.batch_size = 3;  // 20 windows: batches of 3 and a last one of 2
  auto r = evaluate_perplexity(*m, docs, o);
  ASSERT_EQ(r.windows, 20);
  EXPECT_EQ(r.window_length, 48);
  EXPECT_EQ(r.tokens, 20 * 47);
  ASSERT_EQ(r.window_nll.size(), 20u);
  const auto want = plain_window_nll(*m, ids, 48, 20);
  double mean = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(r.window_nll[i], want[i], 1e-5) << "window " << i;
    mean += want[i] / static_cast<double>(want.size());
  }
  EXPECT_NEAR(r.token_perplexity, std::exp(mean), 1e-5 * std::exp(mean));

  // max_windows keeps the first N, unchanged; the default length is min(2048, model context) = 64.
  o.max_windows = 5;
  auto r5 = evaluate_perplexity(*m, docs, o);
  ASSERT_EQ(r5.window_nll.size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(r5.window_nll[i], r.window_nll[i], 1e-6);
  o.max_windows = 0;
  o.max_length = 0;
  auto r64 = evaluate_perplexity(*m, docs, o);
  EXPECT_EQ(r64.window_length, 64);
  EXPECT_EQ(r64.windows, 15);  // 1000 / 64

  // Text shorter than one window: a clear error, not a perplexity of exp(0/0).
  o.max_length = 48;
  const std::string short_text = text.substr(0, 40);
  try {
    evaluate_perplexity(*m, {{short_text, short_text}}, o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the text has 40 tokens, fewer than one 48-token window"),
              std::string::npos)
        << e.what();
  }
}

TEST(EvalPerplexity, Wikitext2GptqTaskThroughRunEval) {
  auto tok = std::make_shared<ModTokenizer>();
  auto m = test::random_llama(test::tiny_config(), 3, tok);
  TmpDir d;
  // Lines that lm-eval's wikitext task would split into articles and detokenize: this task must
  // read the bytes as they stand, as one string.
  const std::string text = " = A = \n" + random_text(300, 9) + " @-@ \n = B = \n" + random_text(300, 10);
  std::ofstream(d.path + "/wikitext2/wiki.test.raw", std::ios::binary) << text;
  EvalOptions o;
  o.tasks = parse_task_list("wikitext2_gptq");
  o.data_dir = d.path;
  o.max_length = 48;
  o.limit = 4;  // windows, for this task
  auto j = nlohmann::json::parse(run_eval(*m, o));
  const auto& r = j["results"]["wikitext2_gptq"];
  EXPECT_EQ(r["windows"], 4);
  EXPECT_EQ(r["window_length"], 48);
  EXPECT_EQ(r["tokens"], 4 * 47);
  const auto got = r["window_nll"].get<std::vector<double>>();
  const auto want = plain_window_nll(*m, tok->encode(text, false), 48, 4);
  ASSERT_EQ(got.size(), 4u);
  double mean = 0;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-5) << "window " << i;
    mean += got[i] / 4;
  }
  EXPECT_NEAR(r["mean_window_nll"].get<double>(), mean, 1e-12);
  EXPECT_NEAR(r["token_perplexity"].get<double>(), std::exp(mean), 1e-9);
  const auto table = eval_table(j.dump());
  EXPECT_NE(table.find("| wikitext2_gptq | 4 × 48 | 188 | "), std::string::npos) << table;
}

// SmolLM2-135M (Q4_1 GGUF, float32 forward) against transformers' per-window NLLs for L = 512.
// LLMC_GPTQ_REF_WINDOWS=64 compares every reference window (about 2 minutes on one thread); the
// default 8 keeps the test well under a minute.
TEST(EvalPerplexity, SmolLM2GptqWindowsMatchTransformers) {
  std::string gguf;
  for (const std::string& p : {std::string(LLMC_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                               shared_root() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"})
    if (file_exists(p)) gguf = p;
  if (gguf.empty()) GTEST_SKIP() << "SmolLM2 GGUF not found (scripts/get-model.sh smollm2-135m)";
  const std::string ref_path = shared_root() + "/models/smollm2-135m-instruct/reference_wikitext2.json";
  const std::string wiki = shared_root() + "/data/wikitext2/wiki.test.raw";
  if (!file_exists(ref_path)) GTEST_SKIP() << "reference not found at " << ref_path << " (set LLMC_SHARED)";
  if (!file_exists(wiki)) GTEST_SKIP() << "WikiText-2 not found at " << wiki << " (set LLMC_SHARED)";
  const auto ref = nlohmann::json::parse(read_text_file(ref_path))["runs"]["seqlen512"];
  const auto want = ref["window_mean_nll"].get<std::vector<double>>();
  const char* env = std::getenv("LLMC_GPTQ_REF_WINDOWS");
  const int64_t n = env ? std::stoll(env) : 8;
  ASSERT_TRUE(n >= 1 && n <= static_cast<int64_t>(want.size())) << "LLMC_GPTQ_REF_WINDOWS out of range";

  auto m = load_llama(gguf);
  PerplexityOptions o;
  o.protocol = PerplexityProtocol::Chunks;
  o.max_length = 512;
  o.max_windows = n;
  o.label = "wikitext2_gptq";
  const auto t0 = std::chrono::steady_clock::now();
  auto r = evaluate_perplexity(*m, load_wikitext_raw(wiki), o);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(r.windows, n);
  EXPECT_EQ(r.tokens, n * 511);
  double max_diff = 0, mean_want = 0;
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_NEAR(r.window_nll[i], want[i], 2e-3) << "window " << i;
    max_diff = std::max(max_diff, std::abs(r.window_nll[i] - want[i]));
    mean_want += want[i] / static_cast<double>(n);
  }
  EXPECT_NEAR(r.token_perplexity, std::exp(mean_want), 2e-3 * std::exp(mean_want));
  RecordProperty("max_abs_window_nll_diff", std::to_string(max_diff));
  std::printf("[ info ] %lld windows: ppl %.4f (reference %.4f), max |window NLL - reference| = %.2e, %.1f s\n",
              static_cast<long long>(n), r.token_perplexity, std::exp(mean_want), max_diff, s);
}

// llama-perplexity's protocol (eval task wikitext2_llamacpp): the whole text tokenized with BOS
// (ModTokenizer adds it), chunks of L with the first token replaced by BOS, the second half scored,
// ppl = exp(total NLL / count). Written out plainly as llama-perplexity's loop does it.
TEST(EvalPerplexity, LlamaCppProtocolEqualsDirectComputation) {
  auto tok = std::make_shared<ModTokenizer>();
  auto m = test::random_llama(test::tiny_config(), 4, tok);
  TmpDir d;
  const std::string text = random_text(700, 11) + "\n";  // -f drops one trailing newline
  std::ofstream(d.path + "/wikitext2/wiki.test.raw", std::ios::binary) << text;
  const int64_t L = 48;
  const auto ids = tok->encode(text.substr(0, text.size() - 1), /*add_bos=*/true);
  const int64_t n_chunk = static_cast<int64_t>(ids.size()) / L;  // 701 / 48 = 14
  ASSERT_EQ(n_chunk, 14);
  double nll = 0;
  int64_t count = 0;
  {
    at::NoGradGuard ng;
    for (int64_t i = 0; i < 3; ++i) {  // --limit 3
      std::vector<int64_t> w(ids.begin() + i * L, ids.begin() + (i + 1) * L);
      w[0] = 1;  // BOS replaces the chunk's first token
      auto logp = at::log_softmax(m->forward(at::tensor(w, at::kLong).unsqueeze(0))[0].to(at::kDouble), -1);
      for (int64_t t = L / 2; t < L - 1; ++t) {
        nll -= logp[t][ids[i * L + t + 1]].item<double>();
        ++count;
      }
    }
  }
  EvalOptions o;
  o.tasks = parse_task_list("wikitext2_llamacpp");
  o.data_dir = d.path;
  o.max_length = L;
  o.limit = 3;  // chunks
  o.batch_size = 2;
  auto j = nlohmann::json::parse(run_eval(*m, o));
  const auto& r = j["results"]["wikitext2_llamacpp"];
  EXPECT_EQ(r["windows"], 3);
  EXPECT_EQ(r["tokens"], count);
  EXPECT_EQ(count, 3 * (L - 1 - L / 2));
  EXPECT_NEAR(r["token_perplexity"].get<double>(), std::exp(nll / count), 1e-6 * std::exp(nll / count));

  // Fewer than 2 chunks' tokens: llama-perplexity refuses, so do we.
  o.max_length = 400;
  o.limit = 0;
  const std::string e = test::error_of([&] { run_eval(*m, o); });
  EXPECT_NE(e.find("llama-perplexity needs at least 2 x 400"), std::string::npos) << e;

  // The windows themselves: BOS first, second half scored.
  const auto w = llamacpp_windows(ids, L, true, 1);
  ASSERT_EQ(w.size(), 14u);
  EXPECT_EQ(w[1].input[0], 1);
  EXPECT_EQ(w[1].input[1], ids[L + 1]);
  EXPECT_EQ(w[1].score_from, L / 2);
  EXPECT_EQ(w[1].target.front(), ids[L + L / 2 + 1]);
  EXPECT_EQ(w[1].target.back(), ids[2 * L - 1]);
}
