// SmolLM2-135M-Instruct from its Q4_1 GGUF against transformers (float32) on the same dequantized
// weights: shared/models/smollm2-135m-instruct/. The GGUF comes from scripts/get-model.sh.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/model/generate.h"
#include "llmc/model/load.h"

using namespace llmc;

namespace {
std::string gguf_path() {
  if (const char* e = std::getenv("LLMC_SMOLLM2_GGUF")) return e;
  return std::string(LLMC_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}
}  // namespace

TEST(SmolLM2, MatchesTransformersGreedyAndLogits) {
  const std::string ref_dir = shared_root() + "/models/smollm2-135m-instruct";
  if (!file_exists(gguf_path())) GTEST_SKIP() << "model not found at " << gguf_path() << " (scripts/get-model.sh smollm2-135m)";
  if (!dir_exists(ref_dir)) GTEST_SKIP() << "reference outputs not found at " << ref_dir;
  auto m = load_llama(gguf_path());
  EXPECT_EQ(m->config().num_layers, 30);
  EXPECT_TRUE(m->config().tie_word_embeddings);
  auto ref = nlohmann::json::parse(read_text_file(ref_dir + "/reference_greedy.json"));
  for (const auto& c : ref["cases"]) {
    const std::string prompt = c["prompt"];
    auto ids = m->tokenizer().encode(prompt, m->tokenizer().add_bos_default());
    ASSERT_EQ(ids, c["prompt_ids"].get<std::vector<int32_t>>()) << prompt;
    // Full last-prompt-position logits (49152 float32).
    std::ifstream f(ref_dir + "/" + c["last_prompt_pos_logits_file"].get<std::string>(), std::ios::binary);
    std::vector<float> want(m->config().vocab_size);
    f.read(reinterpret_cast<char*>(want.data()), want.size() * 4);
    ASSERT_TRUE(f.good());
    std::vector<int64_t> ids64(ids.begin(), ids.end());
    at::NoGradGuard ng;
    auto got = m->forward(at::tensor(ids64, at::kLong).unsqueeze(0))[0][ids.size() - 1];
    const float diff = (got - at::tensor(want)).abs().max().item<float>();
    EXPECT_LE(diff, 5e-4f) << prompt;  // measured <= 7.2e-5: float32 with another summation order
    RecordProperty("max_abs_logit_diff_case" + std::to_string(c["case"].get<int>()), std::to_string(diff));
    // Greedy ids equal up to the first step whose top-2 margin is below 0.01 (either token is a
    // correct float32 answer there).
    GenerateOptions g;
    g.max_new_tokens = static_cast<int>(c["generated_ids"].size());
    auto out = generate(*m, ids, g);
    auto want_ids = c["generated_ids"].get<std::vector<int32_t>>();
    auto margin = c["step_top1_top2_margin"].get<std::vector<double>>();
    for (size_t i = 0; i < want_ids.size() && i < out.size(); ++i) {
      if (margin[i] < 0.01) break;
      ASSERT_EQ(out[i], want_ids[i]) << prompt << " step " << i;
    }
  }
}
