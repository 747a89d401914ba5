// Multiple-choice scoring: a hand-checkable synthetic model, batched == naive log-likelihoods
// (random tiny Llama, stories260K on real task requests), SmolLM2 against lm-eval's reference
// log-likelihoods when the GGUF can be loaded, and the `eval` CLI's behaviour on good and bad data.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <sstream>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/eval/harness.h"
#include "llmc/eval/loglikelihood.h"
#include "llmc/eval/tasks.h"
#include "llmc/model/load.h"
#include "synthetic.h"
#include "cli_run.h"
#include "../byte_tokenizer.h"

using namespace llmc;

namespace {

using test::ByteTokenizer;

int32_t id_of(char c) { return static_cast<unsigned char>(c) + 3; }

// A bigram "model": the logits at a position depend only on the token there. All logits are 0
// (uniform next-token distribution) except after 'z', where 'z' gets logit 5.
class BigramLM : public CausalLM {
 public:
  BigramLM() {
    cfg_.vocab_size = 259;
    cfg_.max_position_embeddings = 256;
    table_ = at::zeros({259, 259});
    table_[id_of('z')][id_of('z')] = 5.0;
  }
  const ModelConfig& config() const override { return cfg_; }
  const Tokenizer& tokenizer() const override { return tok_; }
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& key_mask,
                     KVCache* cache) override {
    const int64_t B = tokens.size(0), T = tokens.size(1), past = cache ? cache->len : 0;
    EXPECT_EQ(key_mask.size(1), past + T);
    EXPECT_EQ(positions.sizes(), tokens.sizes());
    if (cache) {
      EXPECT_LE(past + T, cache->max_len);
      cache->len += T;
    }
    ++forwards;
    return table_.index_select(0, tokens.reshape({-1})).view({B, T, 259});
  }
  std::unique_ptr<KVCache> new_cache(int64_t batch, int64_t max_len) const override {
    auto c = std::make_unique<KVCache>();
    c->max_len = max_len;
    return c;
  }
  using CausalLM::forward;
  int forwards = 0;

 private:
  ModelConfig cfg_;
  ByteTokenizer tok_;
  at::Tensor table_;
};

struct TmpDir {
  std::string path;
  TmpDir() {
    static int n = 0;
    path = "/tmp/llmc_eval_" + std::to_string(::getpid()) + "_" + std::to_string(n++);
    std::system(("mkdir -p " + path).c_str());
  }
  ~TmpDir() { std::system(("rm -rf " + path).c_str()); }
  std::string write(const std::string& rel, const std::string& content) const {
    const std::string p = path + "/" + rel;
    std::system(("mkdir -p " + parent_dir(p)).c_str());
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
};

std::string arc_line(const std::string& q, const std::vector<std::string>& choices, int gold) {
  nlohmann::json j;
  j["id"] = q;
  j["question"]["stem"] = q;
  j["question"]["choices"] = nlohmann::json::array();
  for (size_t i = 0; i < choices.size(); ++i)
    j["question"]["choices"].push_back({{"text", choices[i]}, {"label", std::string(1, static_cast<char>('A' + i))}});
  j["answerKey"] = std::string(1, static_cast<char>('A' + gold));
  return j.dump() + "\n";
}

std::string stories_dir() { return shared_root() + "/models/stories260K"; }

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace

// ---------------------------------------------------------------- hand-computed accuracy

TEST(EvalTasks, SyntheticModelAccuracyByHand) {
  // Each continuation " X" is ' ' then X's bytes. Under the bigram model every token costs
  // log(259) except a 'z' after 'z', which has log-probability 5 - log(258 + e^5).
  const double u = -std::log(259.0), zz = 5.0 - std::log(258.0 + std::exp(5.0));
  TmpDir d;
  d.write("arc_easy/ARC-Easy-Test.jsonl",
          // ll = -(n+1) log 259: acc picks the shortest (gold, right); acc_norm (ll/n) the longest (wrong).
          arc_line("q1", {"a", "bbbb", "cc", "dddddd"}, 0) +
              // "y": 2u = -11.11; "zzzzzzzz": 2u + 7zz = -18.17. acc: "y" (wrong); acc_norm: -11.11/1 vs
              // -18.17/8 = -2.27 -> the z's (right).
              arc_line("q2", {"y", "zzzzzzzz"}, 1) +
              // "zzzz": 2u + 3zz = -14.14, "q": 2u. acc: "q" (wrong); acc_norm: -3.53 vs -11.11 (right).
              arc_line("q3", {"zzzz", "q"}, 0) +
              // A tie: numpy argmax takes the first; gold is the second: both wrong.
              arc_line("q4", {"x", "w"}, 1));
  BigramLM model;
  EvalOptions o;
  o.tasks = {"arc_easy"};
  o.data_dir = d.path;
  o.model_path = "bigram";
  auto j = nlohmann::json::parse(run_eval(model, o));
  const auto& r = j["results"]["arc_easy"];
  EXPECT_EQ(r["n"], 4);
  EXPECT_DOUBLE_EQ(r["acc"].get<double>(), 0.25);  // [1, 0, 0, 0]
  EXPECT_DOUBLE_EQ(r["acc_norm"].get<double>(), 0.5);  // [0, 1, 1, 0]
  // Sample stderr of the mean: sqrt(var(ddof=1) / n).
  EXPECT_NEAR(r["acc_stderr"].get<double>(), std::sqrt((0.75 / 3) / 4), 1e-12);
  EXPECT_NEAR(r["acc_norm_stderr"].get<double>(), std::sqrt((1.0 / 3) / 4), 1e-12);
  EXPECT_DOUBLE_EQ(j["average"]["acc"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(j["average"]["acc_norm"].get<double>(), 0.5);

  // The log-likelihoods themselves, batched and naive.
  auto t = load_task("arc_easy", d.path, 0, 0);
  auto reqs = tokenize_instances(model.tokenizer(), t.instances);
  ASSERT_EQ(reqs.size(), 10u);
  LoglikelihoodOptions lo;
  for (auto ll : {loglikelihoods(model, reqs, lo), loglikelihoods_naive(model, reqs, lo)}) {
    EXPECT_NEAR(ll[0], 2 * u, 1e-5);
    EXPECT_NEAR(ll[3], 7 * u, 1e-5);
    EXPECT_NEAR(ll[5], 2 * u + 7 * zz, 1e-5);
    EXPECT_NEAR(ll[6], 2 * u + 3 * zz, 1e-5);
  }
  // The table prints the row and the unweighted average.
  auto table = eval_table(j.dump());
  EXPECT_NE(table.find("| arc_easy | 4 | 0 | 0.2500 ± 0.2500 | 0.5000 ± 0.2887 |"), std::string::npos) << table;

  // --samples: one line per document, in order, with the per-document scores worked out above.
  o.samples_path = d.path + "/samples.jsonl";
  o.tasks = {"arc_easy", "boolq"};
  d.write("boolq/val.jsonl", R"({"question": "q", "passage": "p", "label": "true"})" "\n");
  EXPECT_EQ(nlohmann::json::parse(run_eval(model, o))["results"]["arc_easy"]["acc"], r["acc"]);
  std::vector<nlohmann::json> lines;
  std::istringstream in(read_text_file(o.samples_path));
  for (std::string l; std::getline(in, l);) lines.push_back(nlohmann::json::parse(l));
  ASSERT_EQ(lines.size(), 5u);
  const std::vector<int> gold = {0, 1, 0, 1}, pred = {0, 0, 1, 0};
  const std::vector<double> acc = {1, 0, 0, 0}, acc_norm = {0, 1, 1, 0};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(lines[i]["task"], "arc_easy");
    EXPECT_EQ(lines[i]["doc"], i);
    EXPECT_EQ(lines[i]["gold"], gold[i]) << i;
    EXPECT_EQ(lines[i]["pred"], pred[i]) << i;
    EXPECT_EQ(lines[i]["acc"].get<double>(), acc[i]) << i;
    EXPECT_EQ(lines[i]["acc_norm"].get<double>(), acc_norm[i]) << i;
  }
  EXPECT_EQ(lines[0]["ll"].size(), 4u);
  EXPECT_NEAR(lines[1]["ll"][1].get<double>(), 2 * u + 7 * zz, 1e-5);
  EXPECT_EQ(lines[4]["task"], "boolq");
  EXPECT_FALSE(lines[4].contains("acc_norm"));  // boolq reports none
  EXPECT_EQ(lines[4]["pred"], 0);                // " no": fewer tokens
  EXPECT_EQ(lines[4]["acc"].get<double>(), 0.0);  // gold "true" -> " yes"
}

TEST(EvalTasks, AccNormIsNullWhereLmEvalHasNone) {
  TmpDir d;
  d.write("boolq/val.jsonl", R"({"question": "q", "passage": "p", "label": "true"})" "\n"
                             R"({"question": "r", "passage": "s", "label": "false"})" "\n");
  BigramLM model;
  EvalOptions o;
  o.tasks = {"boolq"};
  o.data_dir = d.path;
  auto j = nlohmann::json::parse(run_eval(model, o));
  EXPECT_TRUE(j["results"]["boolq"]["acc_norm"].is_null());
  // " no" and " yes" under a uniform model: " no" has fewer tokens, so it always wins.
  EXPECT_DOUBLE_EQ(j["results"]["boolq"]["acc"].get<double>(), 0.5);
  EXPECT_TRUE(j["average"]["acc_norm"].is_null());
}

// ---------------------------------------------------------------- batched == naive

TEST(EvalTasks, BatchedEqualsNaiveOnRandomLlama) {
  auto cfg = test::tiny_config();
  cfg.max_position_embeddings = 256;
  auto m = test::random_llama(cfg, 11);
  std::mt19937 rng(5);
  auto rand_ids = [&](int n) {
    std::vector<int32_t> v(n);
    for (auto& x : v) x = static_cast<int32_t>(rng() % 50);
    return v;
  };
  std::vector<TokenizedRequest> reqs;
  // A cluster: 6 contexts sharing a 90-token prefix (one shared prefix pass per batch).
  const auto prefix = rand_ids(90);
  for (int d = 0; d < 6; ++d) {
    auto ctx = prefix;
    auto tail = rand_ids(3 + d * 4);
    ctx.insert(ctx.end(), tail.begin(), tail.end());
    for (int c = 0; c < 3; ++c) reqs.push_back({ctx, rand_ids(1 + (d + c) % 6)});
  }
  // Unrelated short contexts, some sharing a short prefix, 2-4 continuations each.
  for (int d = 0; d < 9; ++d) {
    auto ctx = rand_ids(2 + (d * 7) % 30);
    if (d % 3 == 0) ctx.insert(ctx.begin(), prefix.begin(), prefix.begin() + 10);
    for (int c = 0; c < 2 + d % 3; ++c) reqs.push_back({ctx, rand_ids(1 + (c * 3 + d) % 7)});
  }
  // A long context that must be truncated when max_length is small.
  reqs.push_back({rand_ids(120), rand_ids(5)});
  reqs.push_back({rand_ids(120), rand_ids(1)});
  for (int64_t max_length : {0, 40}) {
    LoglikelihoodOptions o;
    o.max_length = max_length;
    auto ref = loglikelihoods_naive(*m, reqs, o);
    for (int64_t bs : {1, 3, 8, 64}) {
      o.batch_size = bs;
      auto got = loglikelihoods(*m, reqs, o);
      EXPECT_LE(max_abs_diff(got, ref), 1e-4) << "max_length " << max_length << " batch " << bs;
    }
  }
  // Only single-token continuations (the MMLU case: no continuation pass).
  std::vector<TokenizedRequest> one;
  for (int d = 0; d < 5; ++d) {
    auto ctx = prefix;
    auto tail = rand_ids(2 + d);
    ctx.insert(ctx.end(), tail.begin(), tail.end());
    for (int c = 0; c < 4; ++c) one.push_back({ctx, {static_cast<int32_t>(10 + c)}});
  }
  LoglikelihoodOptions o;
  o.batch_size = 8;
  LoglikelihoodStats st;
  EXPECT_LE(max_abs_diff(loglikelihoods(*m, one, o, &st), loglikelihoods_naive(*m, one, o)), 1e-4);
  // 5 contexts x 4 choices in batches of 8 rows = 3 batches; the 90-token prefix they share runs
  // once for all three, each context's own tail once, and one-token continuations need no pass.
  EXPECT_EQ(st.model_tokens, 90 + (2 + 3 + 4 + 5 + 6));
  EXPECT_EQ(st.forwards, 1 + 3);
}

TEST(EvalTasks, BatchedEqualsNaiveOnStories260K) {
  if (!dir_exists(stories_dir())) GTEST_SKIP() << "shared model not found at " << stories_dir();
  const std::string data = shared_root() + "/data";
  if (!file_exists(data + "/arc_easy/ARC-Easy-Test.jsonl")) GTEST_SKIP() << "shared data not found at " << data;
  auto m = load_llama(stories_dir());
  std::vector<TokenizedRequest> reqs;
  auto add = [&](const std::string& task, int fewshot, int64_t limit, size_t max_docs) {
    auto t = load_task(task, data, fewshot, limit);
    if (t.instances.size() > max_docs) t.instances.resize(max_docs);
    auto r = tokenize_instances(m->tokenizer(), t.instances);
    reqs.insert(reqs.end(), r.begin(), r.end());
  };
  add("arc_easy", 0, 12, 12);
  add("hellaswag", 0, 6, 6);
  add("winogrande", 0, 6, 6);
  add("mmlu", 5, 1, 6);  // 5-shot contexts are longer than 512 tokens: left truncation
  LoglikelihoodOptions o;
  o.batch_size = 16;
  LoglikelihoodStats sb, sn;
  auto got = loglikelihoods(*m, reqs, o, &sb);
  auto ref = loglikelihoods_naive(*m, reqs, o, &sn);
  EXPECT_LE(max_abs_diff(got, ref), 1e-4);
  EXPECT_EQ(sb.tokens, sn.tokens);
  EXPECT_LT(sb.model_tokens, sn.model_tokens);  // shared contexts run once
}

// ---------------------------------------------------------------- SmolLM2 vs lm-eval

TEST(EvalTasks, SmolLM2MatchesLmEvalLoglikelihoods) {
  std::string gguf;
  for (const std::string& p : {std::string(LLMC_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                               shared_root() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"})
    if (file_exists(p)) gguf = p;
  if (gguf.empty()) GTEST_SKIP() << "SmolLM2 GGUF not found (scripts/get-model.sh smollm2-135m)";
  std::unique_ptr<Llama> m;
  try {
    m = load_llama(gguf);
  } catch (const Error& e) {
    GTEST_SKIP() << "SmolLM2 GGUF cannot be loaded yet: " << e.what();
  }
  const std::string ref_dir = shared_root() + "/models/smollm2-135m-instruct/lmeval";
  const std::string data = shared_root() + "/data";
  // LLMC_EVAL_REF_DOCS=250 compares every reference document (slow); the default keeps the test fast.
  const char* env = std::getenv("LLMC_EVAL_REF_DOCS");
  const size_t all = env ? std::stoul(env) : 0;
  for (const auto& [task, n] : std::vector<std::pair<std::string, size_t>>{{"arc_easy", all ? all : 6},
                                                                           {"hellaswag", all ? all : 3}}) {
    double max_diff = 0;
    auto t = load_task(task, data, 0, static_cast<int64_t>(n));
    auto reqs = tokenize_instances(m->tokenizer(), t.instances);
    auto ll = loglikelihoods(*m, reqs, LoglikelihoodOptions{});
    std::ifstream f(ref_dir + "/" + task + ".jsonl");
    std::string line;
    size_t k = 0;
    for (size_t doc = 0; doc < n && std::getline(f, line); ++doc) {
      auto ref = nlohmann::json::parse(line);
      ASSERT_EQ(ref["doc"].get<size_t>(), doc);
      EXPECT_EQ(ref["gold"].get<int>(), t.instances[doc].gold) << task << " doc " << doc;
      const auto rl = ref["ll"].get<std::vector<double>>();
      ASSERT_EQ(rl.size(), t.instances[doc].requests.size());
      for (size_t c = 0; c < rl.size(); ++c, ++k) {
        EXPECT_NEAR(ll[k], rl[c], 1e-3) << task << " doc " << doc << " choice " << c;
        max_diff = std::max(max_diff, std::abs(ll[k] - rl[c]));
      }
    }
    std::printf("%s: %zu documents, max |ll - lm-eval ll| = %.2e\n", task.c_str(), n, max_diff);
  }
}

// ---------------------------------------------------------------- CLI

namespace {

CliRun run_cli_1t(const std::string& args) { return run_cli("--threads 1 " + args); }  // one thread

size_t files_in(const std::string& dir) {
  size_t n = 0;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) n += std::string(e->d_name) != "." && std::string(e->d_name) != "..";
    ::closedir(d);
  }
  return n;
}

}  // namespace

TEST(EvalCli, BadDataFileFailsCleanlyWithoutOutput) {
  if (!dir_exists(stories_dir())) GTEST_SKIP() << "shared model not found at " << stories_dir();
  TmpDir d;
  d.write("data/arc_easy/ARC-Easy-Test.jsonl", arc_line("q1", {"a", "b"}, 0) +
                                                   R"({"question": {"stem": "q2", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "C"})"
                                                   "\n");
  ::mkdir((d.path + "/out").c_str(), 0755);
  const std::string out = d.path + "/out/result.json";
  CliRun r = run_cli_1t("eval --model " + stories_dir() + " --tasks arc_easy --data-dir " + d.path + "/data --output " + out);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("error: " + d.path + "/data/arc_easy/ARC-Easy-Test.jsonl:2: answerKey 'C' is not one of"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(files_in(d.path + "/out"), 0u) << "no partial JSON may be left behind";
  // A missing file and a missing few-shot split name what was looked for.
  r = run_cli_1t("eval --model " + stories_dir() + " --tasks piqa --data-dir " + d.path + "/data --output " + out);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("piqa: data file not found; looked for " + d.path + "/data/piqa/valid.jsonl"), std::string::npos)
      << r.out;
  d.write("data2/arc_easy/ARC-Easy-Test.jsonl", arc_line("q1", {"a", "b"}, 0));
  r = run_cli_1t("eval --model " + stories_dir() + " --tasks arc_easy --num-fewshot 2 --data-dir " + d.path +
              "/data2 --output " + out);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--num-fewshot 2 needs solved examples"), std::string::npos) << r.out;
  EXPECT_EQ(files_in(d.path + "/out"), 0u);
  r = run_cli_1t("eval --model " + stories_dir() + " --tasks arc_easy --data-dir " + d.path + "/data --output " +
              d.path + "/nope/result.json");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--output: folder " + d.path + "/nope does not exist"), std::string::npos) << r.out;
  r = run_cli_1t("eval --model " + stories_dir() + " --tasks arc_easy --data-dir " + d.path + "/data --samples " +
                 d.path + "/nope/s.jsonl");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--samples: folder " + d.path + "/nope does not exist"), std::string::npos) << r.out;
}

TEST(EvalCli, TableAndJson) {
  if (!dir_exists(stories_dir())) GTEST_SKIP() << "shared model not found at " << stories_dir();
  const std::string data = shared_root() + "/data";
  if (!file_exists(data + "/piqa/valid.jsonl")) GTEST_SKIP() << "shared data not found at " << data;
  TmpDir d;
  const std::string out = d.path + "/r.json";
  CliRun r = run_cli_1t("eval --model " + stories_dir() + " --tasks arc_easy,piqa --limit 8 --dtype bfloat16 --output " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("| task | n | shots | acc ± stderr | acc_norm ± stderr | answer-share chance | req/s |"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("| piqa | 8 | 0 | "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| average (2 tasks, unweighted) |"), std::string::npos) << r.out;
  auto j = nlohmann::json::parse(read_text_file(out));
  for (const char* k : {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "acc_chance", "n"})
    EXPECT_TRUE(j["results"]["arc_easy"].contains(k)) << k;
  const double chance = j["results"]["piqa"]["acc_chance"].get<double>();  // 2 choices: within [0, 1]
  EXPECT_GE(chance, 0.0);
  EXPECT_LE(chance, 1.0);
  EXPECT_EQ(j["results"]["piqa"]["n"], 8);
  EXPECT_EQ(j["model"], stories_dir());
  EXPECT_TRUE(j["average"].contains("acc"));
  EXPECT_TRUE(j["config"].contains("num_fewshot"));
  EXPECT_EQ(j["config"]["dtype"], "bfloat16");  // results depend on it, so the JSON says which
}
