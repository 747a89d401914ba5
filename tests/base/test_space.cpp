#include <gtest/gtest.h>

#include "llmc/core/error.h"
#include "llmc/latency/space.h"

using namespace llmc;

namespace {
ModelConfig smol() {
  ModelConfig c;
  c.hidden_size = 576;
  c.intermediate_size = 1536;
  c.num_layers = 30;
  c.num_heads = 9;
  c.num_kv_heads = 3;
  c.head_dim = 64;
  c.vocab_size = 49152;
  return c;
}
std::string error_of(const std::string& t) {
  try {
    parse_search_space(t, "space.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(SearchSpace, DefaultsAndChoices) {
  auto s = parse_search_space("{}", "x");
  auto m = smol();
  EXPECT_EQ(s.kv_choices(m, 0), (std::vector<int64_t>{3, 2, 1}));  // 0.75*3 -> 2, 0.5*3 -> 2, 0.25*3 -> 1
  EXPECT_EQ(s.mlp_choices(m, 0), (std::vector<int64_t>{1536, 1344, 1152, 960, 768}));
  EXPECT_EQ(s.bit_choices(0), (std::vector<int>{2, 3, 4, 8, 16}));
  m.intermediate_size = 172;  // stories260K: widths rounded to 32, never below 32
  EXPECT_EQ(s.mlp_choices(m, 0), (std::vector<int64_t>{172, 160, 128, 96}));
}

TEST(SearchSpace, OverridesAndHash) {
  auto s = parse_search_space(R"({"bits":[4,16],"group_size":64,"layers":{"2":{"bits":[8,16]}}})", "x");
  EXPECT_EQ(s.bit_choices(0), (std::vector<int>{4, 16}));
  EXPECT_EQ(s.bit_choices(2), (std::vector<int>{8, 16}));
  auto m = smol();
  EXPECT_EQ(shapes_hash(m, s), shapes_hash(m, parse_search_space(s.canonical_json(), "y")));
  auto m2 = m;
  m2.num_layers = 29;
  EXPECT_NE(shapes_hash(m, s), shapes_hash(m2, s));
  EXPECT_NE(shapes_hash(m, s), shapes_hash(m, parse_search_space("{}", "z")));
}

TEST(SearchSpace, Errors) {
  EXPECT_NE(error_of(R"({"bitz":[4]})").find("unknown key 'bitz'"), std::string::npos);
  EXPECT_NE(error_of(R"({"bits":[5]})").find("not one of"), std::string::npos);
  EXPECT_NE(error_of(R"({"bits":"4"})").find("non-empty array"), std::string::npos);
  EXPECT_NE(error_of(R"({"kv_group_fractions":[1.5]})").find("not a fraction"), std::string::npos);
  EXPECT_NE(error_of(R"({"group_size":100})").find("not 32, 64 or 128"), std::string::npos);
  EXPECT_NE(error_of(R"({"layers":{"x":{}}})").find("not a layer index"), std::string::npos);
  EXPECT_NE(error_of(R"({"layers":{"1":{"group_size":32}}})").find("unknown key"), std::string::npos);
}

// lm_head_bits: sorted and distinct; in the canonical JSON (and so the hash) only when given, so the
// spaces written before the key hash as they did; per-layer it is not a key.
TEST(SearchSpace, LmHeadBits) {
  auto s = parse_search_space(R"({"bits":[4,8],"lm_head_bits":[8,4,8]})", "x");
  EXPECT_EQ(s.lm_head_bits, (std::vector<int>{4, 8}));
  EXPECT_EQ(parse_search_space(s.canonical_json(), "y").lm_head_bits, s.lm_head_bits);
  const auto plain = parse_search_space(R"({"bits":[4,8]})", "z");
  EXPECT_TRUE(plain.lm_head_bits.empty());
  EXPECT_EQ(plain.canonical_json().find("lm_head"), std::string::npos);
  EXPECT_NE(shapes_hash(smol(), s), shapes_hash(smol(), plain));
  EXPECT_NE(error_of(R"({"lm_head_bits":[3]})").find("space.json.lm_head_bits: 3 is not one of 4, 8, 16"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"lm_head_bits":[]})").find("non-empty array"), std::string::npos);
  EXPECT_NE(error_of(R"({"layers":{"1":{"lm_head_bits":[4]}}})").find("unknown key"), std::string::npos);
}
