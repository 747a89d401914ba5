#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/model/generate.h"
#include "llmc/model/load.h"
#include "synthetic.h"

using namespace llmc;

namespace {
std::string stories_dir() { return shared_root() + "/models/stories260K"; }
}  // namespace

// Reference: llama2.c run.c (fp32) on the same weights; see shared/models/stories260K/README.md.
TEST(Stories260K, MatchesReferenceGreedyAndLogits) {
  if (!dir_exists(stories_dir())) GTEST_SKIP() << "shared model not found at " << stories_dir();
  auto m = load_llama(stories_dir());
  auto ref = nlohmann::json::parse(read_text_file(stories_dir() + "/reference_greedy.json"));
  int cases = 0;
  for (const auto& c : ref["cases"]) {
    const std::string prompt = c["prompt"];
    auto ids = m->tokenizer().encode(prompt, true);
    ASSERT_EQ(ids, c["prompt_ids"].get<std::vector<int32_t>>()) << prompt;
    // Logits at the last prompt position: max |diff| <= 1e-4.
    std::vector<int64_t> ids64(ids.begin(), ids.end());
    auto logits = m->forward(at::tensor(ids64, at::kLong).unsqueeze(0))[0][ids.size() - 1];
    auto ref_logits = at::tensor(c["logits_last_prompt_position"].get<std::vector<float>>());
    EXPECT_LE((logits - ref_logits).abs().max().item<float>(), 1e-4f) << prompt;
    GenerateOptions g;
    g.max_new_tokens = static_cast<int>(c["generated_ids"].size());
    g.stop_at_eos = false;
    auto out = generate(*m, ids, g);
    EXPECT_EQ(out, c["generated_ids"].get<std::vector<int32_t>>()) << prompt;
    ++cases;
  }
  EXPECT_EQ(cases, 3);
}

TEST(Llama, BatchedPaddingMatchesUnbatched) {
  auto m = test::random_llama(test::tiny_config());
  std::vector<std::vector<int64_t>> seqs = {{1, 5, 9, 13, 17, 21, 25}, {1, 7, 3}, {1, 30, 31, 32, 33}};
  const int64_t T = 7, B = 3;
  for (bool left : {false, true}) {
    auto tokens = at::zeros({B, T}, at::kLong);
    auto pos = at::zeros({B, T}, at::kLong);
    auto mask = at::zeros({B, T}, at::kBool);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = seqs[b].size(), off = left ? T - n : 0;
      for (int64_t t = 0; t < n; ++t) {
        tokens[b][off + t] = seqs[b][t];
        pos[b][off + t] = t;
        mask[b][off + t] = true;
      }
    }
    auto batched = m->forward(tokens, pos, mask, nullptr);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = seqs[b].size(), off = left ? T - n : 0;
      auto single = m->forward(at::tensor(seqs[b], at::kLong).unsqueeze(0))[0];
      auto diff = (batched[b].narrow(0, off, n) - single).abs().max().item<float>();
      EXPECT_LE(diff, 1e-5f) << (left ? "left" : "right") << " padding, sequence " << b;
    }
  }
}

TEST(Llama, KVCacheMatchesFullRecomputation) {
  auto m = test::random_llama(test::tiny_config(), 3);
  std::vector<int64_t> ids = {1, 4, 8, 15, 16, 23, 42, 7, 9, 11};
  auto full = m->forward(at::tensor(ids, at::kLong).unsqueeze(0))[0];  // (T, V)
  auto cache = m->new_cache(1, 16);
  auto mask = at::ones({1, 16}, at::kBool);
  // Prefill 4 tokens, then one at a time.
  auto first = m->forward(at::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + 4), at::kLong).unsqueeze(0),
                          at::arange(4, at::kLong).unsqueeze(0), mask.narrow(1, 0, 4), cache.get());
  EXPECT_LE((first[0] - full.narrow(0, 0, 4)).abs().max().item<float>(), 1e-5f);
  for (int64_t t = 4; t < static_cast<int64_t>(ids.size()); ++t) {
    auto step = m->forward(at::full({1, 1}, ids[t], at::kLong), at::full({1, 1}, t, at::kLong),
                           mask.narrow(1, 0, t + 1), cache.get());
    EXPECT_LE((step[0][0] - full[t]).abs().max().item<float>(), 1e-5f) << "step " << t;
  }
  EXPECT_EQ(cache->len, static_cast<int64_t>(ids.size()));
}

// Rerunning only layers l.. from the recorded input of layer l gives the full forward's logits
// (what the sensitivity measurement relies on).
TEST(Llama, ForwardFromLayerInputsEqualsForward) {
  auto m = test::random_llama(test::tiny_config(), 4);
  const auto x = at::tensor(std::vector<int64_t>{1, 4, 8, 15, 16, 23, 42}, at::kLong).unsqueeze(0);
  const auto pos = at::arange(7, at::kLong).unsqueeze(0);
  const auto mask = at::ones({1, 7}, at::kBool);
  const auto full = m->forward(x);
  const auto in = m->layer_inputs(x, pos, mask);
  ASSERT_EQ(static_cast<int64_t>(in.size()), m->config().num_layers + 1);
  for (int64_t l = 0; l <= m->config().num_layers; ++l)
    EXPECT_EQ((m->forward_from(in[l], l, pos, mask) - full).abs().max().item<float>(), 0.0f) << "layer " << l;
  EXPECT_THROW(m->forward_from(in[0], m->config().num_layers + 1, pos, mask), Error);
}

TEST(Llama, GreedyGenerateWithCacheEqualsRecompute) {
  auto m = test::random_llama(test::tiny_config(), 5);
  std::vector<int32_t> prompt = {1, 10, 20};
  GenerateOptions g;
  g.max_new_tokens = 12;
  g.stop_at_eos = false;
  auto out = generate(*m, prompt, g);
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  for (int i = 0; i < g.max_new_tokens; ++i) {
    auto logits = m->forward(at::tensor(seq, at::kLong).unsqueeze(0))[0][seq.size() - 1];
    seq.push_back(logits.argmax().item<int64_t>());
  }
  EXPECT_EQ(std::vector<int32_t>(seq.begin() + prompt.size(), seq.end()), out);
}

TEST(Llama, SyntheticRoundTripThroughSafetensors) {
  auto c = test::tiny_config();
  auto m = test::random_llama(c, 7);
  const std::string dir = "/tmp/llmc_rt_" + std::to_string(::getpid());
  save_hf_folder(*m, dir);
  auto loaded = load_llama(dir, LoadOptions{"float32", false});
  auto x = at::tensor(std::vector<int64_t>{1, 2, 3, 4, 5}, at::kLong).unsqueeze(0);
  EXPECT_EQ((m->forward(x) - loaded->forward(x)).abs().max().item<float>(), 0.0f);
  EXPECT_EQ(loaded->config().num_kv_heads, c.num_kv_heads);
  std::system(("rm -rf " + dir).c_str());
}

TEST(Llama, Bf16ComputeIsClose) {
  if (!dir_exists(stories_dir())) GTEST_SKIP() << "shared model not found";
  auto f32 = load_llama(stories_dir());
  auto bf16 = load_llama(stories_dir(), LoadOptions{"bfloat16", true});
  auto x = at::tensor(std::vector<int64_t>{1, 403, 407, 261, 378}, at::kLong).unsqueeze(0);
  auto a = at::log_softmax(f32->forward(x), -1), b = at::log_softmax(bf16->forward(x), -1);
  EXPECT_LE((a - b).abs().max().item<float>(), 0.5f);  // bf16 has ~3 significant digits
  EXPECT_EQ(a.argmax(-1).equal(b.argmax(-1)), true);
}

TEST(Generate, TopPSamplingIsSeededAndValid) {
  std::vector<float> logits = {0.f, 5.f, 4.f, -10.f};
  uint64_t s1 = 42, s2 = 42;
  for (int i = 0; i < 20; ++i) {
    int32_t a = sample_token(logits.data(), 4, 1.0, 0.9, &s1);
    int32_t b = sample_token(logits.data(), 4, 1.0, 0.9, &s2);
    EXPECT_EQ(a, b);
    EXPECT_TRUE(a == 1 || a == 2) << a;  // top-p 0.9 excludes the tail
  }
  EXPECT_EQ(sample_token(logits.data(), 4, 0.0, 1.0, &s1), 1);
}

// The original GGUF (llama.cpp layout, adjacent-pair RoPE rows) loads to the same function.
TEST(Stories260K, GgufMatchesHfFolder) {
  const std::string gguf = stories_dir() + "/original/stories260K.gguf";
  if (!file_exists(gguf)) GTEST_SKIP() << "shared model not found at " << gguf;
  auto hf = load_llama(stories_dir());
  auto gg = load_llama(gguf);
  EXPECT_EQ(gg->tokenizer().type(), "sentencepiece");
  auto ref = nlohmann::json::parse(read_text_file(stories_dir() + "/reference_greedy.json"));
  for (const auto& c : ref["cases"]) {
    const std::string prompt = c["prompt"];
    auto ids = gg->tokenizer().encode(prompt, true);
    ASSERT_EQ(ids, c["prompt_ids"].get<std::vector<int32_t>>()) << prompt;
    std::vector<int64_t> ids64(ids.begin(), ids.end());
    auto x = at::tensor(ids64, at::kLong).unsqueeze(0);
    EXPECT_LE((gg->forward(x) - hf->forward(x)).abs().max().item<float>(), 1e-5f) << prompt;
    GenerateOptions g;
    g.max_new_tokens = 64;
    g.stop_at_eos = false;
    EXPECT_EQ(generate(*gg, ids, g), c["generated_ids"].get<std::vector<int32_t>>()) << prompt;
  }
}
