#include <gtest/gtest.h>

#include "llmc/core/error.h"
#include "llmc/model/arch.h"

using namespace llmc;

namespace {
ModelConfig base() {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 172;
  c.num_layers = 2;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.head_dim = 8;
  c.vocab_size = 512;
  return c;
}
std::string error_of(const std::string& text) {
  try {
    arch_from_json(text, "arch.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Arch, RoundTripAndCompressedConfig) {
  Arch a = uniform_arch(base(), 4, 128);
  a.layers[1].kv_heads = 2;
  a.layers[1].mlp_channels = 96;
  a.layers[1].bits = {2, 3, 4, 8, 16, 3, 2};
  a.layers[1].kv_order = {3, 1, 0, 2};
  a.predicted_latency_ms = 1.25;
  Arch b = arch_from_json(arch_to_json(a), "x");
  EXPECT_EQ(b.layers[1].bits, a.layers[1].bits);
  EXPECT_EQ(b.layers[1].kv_order, a.layers[1].kv_order);
  EXPECT_DOUBLE_EQ(b.predicted_latency_ms, 1.25);
  auto c = b.compressed_config();
  EXPECT_EQ(c.kv_heads(1), 2);
  EXPECT_EQ(c.q_heads(1), 4);
  EXPECT_EQ(c.mlp_width(1), 96);
  EXPECT_EQ(c.mlp_width(0), 172);
}

TEST(Arch, Errors) {
  Arch a = uniform_arch(base(), 4, 128);
  std::string good = arch_to_json(a);
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    auto p = s.find(from);
    EXPECT_NE(p, std::string::npos) << from;
    return s.replace(p, from.size(), to);
  };
  EXPECT_NE(error_of(with("\"q\": 4", "\"q\": 5")).find("bits 5"), std::string::npos);
  EXPECT_NE(error_of(with("\"kv_heads\": 4", "\"kv_heads\": 9")).find("out of range"), std::string::npos);
  EXPECT_NE(error_of(with("\"kv_order\": []", "\"kv_order\": [0,0,1,2]")).find("not a permutation"), std::string::npos);
  EXPECT_NE(error_of(with("\"llmcompress-arch\"", "\"x\"")).find("format"), std::string::npos);
  EXPECT_NE(error_of(with("\"group_size\": 128", "\"group_size\": \"a\"")).find("mistyped"), std::string::npos);
  EXPECT_NE(error_of("[").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(with("\"group_size\": 128", "\"group_size\": 128, \"lm_head_bits\": 3")).find("lm_head_bits 3"),
            std::string::npos);
}

// lm_head_bits: written only when chosen, read back.
TEST(Arch, LmHeadBits) {
  Arch a = uniform_arch(base(), 4, 128);
  EXPECT_EQ(arch_to_json(a).find("lm_head_bits"), std::string::npos);
  EXPECT_EQ(arch_from_json(arch_to_json(a), "x").lm_head_bits, 0);
  a.lm_head_bits = 4;
  EXPECT_EQ(arch_from_json(arch_to_json(a), "x").lm_head_bits, 4);
}
