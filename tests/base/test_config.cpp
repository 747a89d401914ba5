#include <gtest/gtest.h>

#include "llmc/core/error.h"
#include "llmc/model/config.h"

using namespace llmc;

namespace {
const char* kGood = R"({"model_type":"llama","hidden_size":64,"intermediate_size":172,"num_hidden_layers":5,
  "num_attention_heads":8,"num_key_value_heads":4,"vocab_size":512,"rms_norm_eps":1e-5,"rope_theta":10000.0,
  "tie_word_embeddings":true,"bos_token_id":1,"eos_token_id":2})";

std::string error_of(const std::string& text) {
  try {
    parse_hf_config(text, "cfg.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Config, ParsesLlama) {
  auto c = parse_hf_config(kGood, "cfg.json");
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.eos_token_id, 2);
  auto again = parse_hf_config(hf_config_to_json(c), "rt");
  EXPECT_EQ(again.intermediate_size, 172);
  EXPECT_EQ(again.rope_theta, 10000.0);
}

TEST(Config, Llama3RopeScalingAndEosList) {
  auto c = parse_hf_config(R"({"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":1,
    "num_attention_heads":4,"vocab_size":10,"eos_token_id":[5,6],
    "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
    "original_max_position_embeddings":8192}})", "c");
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_EQ(c.eos_token_id, 5);
  EXPECT_EQ(c.num_kv_heads, 4);
}

TEST(Config, Errors) {
  EXPECT_NE(error_of(R"({"model_type":"llama"})").find("missing required key 'hidden_size'"), std::string::npos);
  EXPECT_NE(error_of(R"({"model_type":"gpt2","hidden_size":1})").find("unsupported architecture"), std::string::npos);
  EXPECT_NE(error_of("{not json").find("not valid JSON"), std::string::npos);
  std::string bad_type = kGood;
  bad_type.replace(bad_type.find("\"hidden_size\":64"), 16, "\"hidden_size\":\"x\"");
  EXPECT_NE(error_of(bad_type).find("wrong type"), std::string::npos) << error_of(bad_type);
  std::string bad_gqa = kGood;
  bad_gqa.replace(bad_gqa.find("\"num_key_value_heads\":4"), 23, "\"num_key_value_heads\":3");
  EXPECT_NE(error_of(bad_gqa).find("not a multiple"), std::string::npos);
  EXPECT_NE(error_of(R"({"model_type":"llama","hidden_size":64,"intermediate_size":8,"num_hidden_layers":1,
    "num_attention_heads":4,"vocab_size":10,"rope_scaling":{"type":"yarn"}})").find("not supported"), std::string::npos);
}

// Values that used to load silently (issue 21, defect 7): one line naming the file and the key.
TEST(Config, RejectsSilentlyAcceptedValues) {
  auto with = [](const std::string& key_value, const std::string& replacement) {
    std::string t = kGood;
    const size_t at = t.find(key_value);
    EXPECT_NE(at, std::string::npos) << key_value;
    t.replace(at, key_value.size(), replacement);
    return error_of(t);
  };
  std::string e = with("\"num_hidden_layers\":5", "\"num_hidden_layers\":5.5");
  EXPECT_NE(e.find("cfg.json: key 'num_hidden_layers' must be an integer (got 5.5)"), std::string::npos) << e;
  e = with("\"num_hidden_layers\":5", "\"num_hidden_layers\":5,\"max_position_embeddings\":0");
  EXPECT_NE(e.find("cfg.json: max_position_embeddings must be positive (got 0)"), std::string::npos) << e;
  e = with("\"eos_token_id\":2", "\"eos_token_id\":-5");
  EXPECT_NE(e.find("cfg.json: key 'eos_token_id' is -5, not a token id"), std::string::npos) << e;
  e = with("\"bos_token_id\":1", "\"bos_token_id\":[-1]");
  EXPECT_NE(e.find("key 'bos_token_id' is -1"), std::string::npos) << e;
  e = with("\"eos_token_id\":2", "\"eos_token_id\":2.5");
  EXPECT_NE(e.find("key 'eos_token_id' must be a token id"), std::string::npos) << e;
  e = with("\"eos_token_id\":2", "\"eos_token_id\":512");
  EXPECT_NE(e.find("outside the vocabulary of 512 tokens"), std::string::npos) << e;
  e = with("\"hidden_size\":64", "\"hidden_size\":64.0");
  EXPECT_NE(e.find("key 'hidden_size' must be an integer"), std::string::npos) << e;
  // Still fine: null ids and lists of ids.
  EXPECT_EQ(with("\"eos_token_id\":2", "\"eos_token_id\":null"), "");
  EXPECT_EQ(with("\"eos_token_id\":2", "\"eos_token_id\":[2,3]"), "");
}
