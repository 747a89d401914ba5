// GGUF reader: metadata of every type, tensor infos, block formats against per-element reference
// formulas, the Llama mapping (stories260K GGUF == its safetensors, bit for bit; SmolLM2 Q4_1 when
// downloaded), and errors for malformed files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

#include "llmc/core/dtype.h"
#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/model/gguf_llama.h"
#include "llmc/io/safetensors.h"
#include "llmc/tokenizer/bpe.h"

using namespace llmc;

namespace llmc_test {

// A minimal GGUF writer for tests: metadata of any type, tensor infos with aligned offsets.
class GGUFBuilder {
 public:
  enum : uint32_t { kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8,
                    kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12 };
  template <typename T>
  static std::string raw(T v) {
    return std::string(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  static std::string u8(uint8_t v) { return raw(v); }
  static std::string u16(uint16_t v) { return raw(v); }
  static std::string u32(uint32_t v) { return raw(v); }
  static std::string u64(uint64_t v) { return raw(v); }
  static std::string str(const std::string& s) { return u64(s.size()) + s; }

  void kv(const std::string& key, uint32_t type, const std::string& payload) {
    kv_ += str(key) + u32(type) + payload;
    ++n_kv_;
  }
  void kv_u32(const std::string& key, uint32_t v) { kv(key, kU32, u32(v)); }
  void kv_f32(const std::string& key, float v) { kv(key, kF32, raw(v)); }
  void kv_bool(const std::string& key, bool v) { kv(key, kBool, u8(v ? 1 : 0)); }
  void kv_str(const std::string& key, const std::string& v) { kv(key, kString, str(v)); }
  void kv_str_array(const std::string& key, const std::vector<std::string>& v) {
    std::string p = u32(kString) + u64(v.size());
    for (const auto& s : v) p += str(s);
    kv(key, kArray, p);
  }
  void kv_f32_array(const std::string& key, const std::vector<float>& v) {
    std::string p = u32(kF32) + u64(v.size());
    for (float x : v) p += raw(x);
    kv(key, kArray, p);
  }
  void kv_i32_array(const std::string& key, const std::vector<int32_t>& v) {
    std::string p = u32(kI32) + u64(v.size());
    for (int32_t x : v) p += raw(x);
    kv(key, kArray, p);
  }
  // A tensor with data; its offset is assigned by build().
  void tensor(const std::string& name, const std::vector<uint64_t>& ne, GGMLType type, const std::string& data) {
    tensors_.push_back({name, ne, static_cast<uint32_t>(type), 0, data, true});
  }
  // A tensor info written exactly as given (no data).
  void tensor_raw(const std::string& name, const std::vector<uint64_t>& ne, uint32_t type, uint64_t offset) {
    tensors_.push_back({name, ne, type, offset, "", false});
  }
  std::string build(uint64_t alignment = 32) const {
    std::string out = "GGUF" + u32(3) + u64(tensors_.size()) + u64(n_kv_) + kv_;
    std::string data;
    for (const auto& t : tensors_) {
      uint64_t off = t.offset;
      if (t.with_data) {
        data.resize((data.size() + alignment - 1) / alignment * alignment, '\0');
        off = data.size();
        data += t.data;
      }
      out += str(t.name) + u32(static_cast<uint32_t>(t.ne.size()));
      for (auto d : t.ne) out += u64(d);
      out += u32(t.type) + u64(off);
    }
    out.resize((out.size() + alignment - 1) / alignment * alignment, '\0');
    return out + data;
  }
  void write(const std::string& path, uint64_t alignment = 32) const {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    const std::string b = build(alignment);
    f.write(b.data(), static_cast<std::streamsize>(b.size()));
  }

 private:
  struct T {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    uint64_t offset;
    std::string data;
    bool with_data;
  };
  std::string kv_;
  uint64_t n_kv_ = 0;
  std::vector<T> tensors_;
};

// Deterministic Q8_0 data for `rows` rows of `cols` weights.
std::string q8_0_data(std::mt19937& rng, int64_t rows, int64_t cols) {
  std::string out;
  for (int64_t b = 0; b < rows * cols / 32; ++b) {
    out += GGUFBuilder::u16(llmc::f32_to_f16(0.01f * static_cast<float>(1 + rng() % 8)));
    for (int j = 0; j < 32; ++j) out += static_cast<char>(rng() & 0xff);
  }
  return out;
}

std::string f32_data(std::mt19937& rng, int64_t n) {
  std::string out;
  std::normal_distribution<float> nd(0.f, 0.1f);
  for (int64_t i = 0; i < n; ++i) out += GGUFBuilder::raw(nd(rng));
  return out;
}

// A 1-layer Llama (hidden 32, 2 heads / 1 KV head of 16, MLP 64, 8 tokens) with Q8_0 and F32
// tensors and a SentencePiece-style vocabulary. Options break it in one way for error tests.
GGUFBuilder tiny_llama(bool with_output, bool bad_shape = false, const std::string& drop = "",
                       const std::string& extra = "") {
  std::mt19937 rng(5);
  GGUFBuilder b;
  b.kv_str("general.architecture", "llama");
  b.kv_str("general.name", "tiny");
  b.kv_u32("llama.embedding_length", 32);
  b.kv_u32("llama.feed_forward_length", 64);
  b.kv_u32("llama.block_count", 1);
  b.kv_u32("llama.attention.head_count", 2);
  b.kv_u32("llama.attention.head_count_kv", 1);
  b.kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  b.kv_u32("llama.context_length", 128);
  b.kv_str("tokenizer.ggml.model", "llama");
  b.kv_str_array("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "\xE2\x96\x81" "a", "ab"});
  b.kv_f32_array("tokenizer.ggml.scores", {0, 0, 0, -1, -2, -2, -1.5f, -3});
  b.kv_i32_array("tokenizer.ggml.token_type", {2, 3, 3, 1, 1, 1, 1, 1});
  b.kv_u32("tokenizer.ggml.bos_token_id", 1);
  b.kv_u32("tokenizer.ggml.eos_token_id", 2);
  b.kv_u32("tokenizer.ggml.unknown_token_id", 0);
  auto add_q8 = [&](const std::string& name, uint64_t in, uint64_t out) {
    if (name != drop) b.tensor(name, {in, out}, GGMLType::Q8_0, q8_0_data(rng, out, in));
  };
  auto add_f32 = [&](const std::string& name, std::vector<uint64_t> ne) {
    int64_t n = 1;
    for (auto d : ne) n *= static_cast<int64_t>(d);
    if (name != drop) b.tensor(name, ne, GGMLType::F32, f32_data(rng, n));
  };
  add_q8("token_embd.weight", 32, 8);
  add_f32("output_norm.weight", {32});
  if (with_output) add_f32("output.weight", {32, 8});
  add_f32("blk.0.attn_norm.weight", {32});
  add_q8("blk.0.attn_q.weight", 32, 32);
  add_q8("blk.0.attn_k.weight", 32, 16);
  add_f32("blk.0.attn_v.weight", {32, 16});
  add_q8("blk.0.attn_output.weight", 32, 32);
  add_q8("blk.0.ffn_gate.weight", 32, 64);
  if (bad_shape)
    add_q8("blk.0.ffn_up.weight", 64, 32);
  else
    add_q8("blk.0.ffn_up.weight", 32, 64);
  add_f32("blk.0.ffn_down.weight", {64, 32});
  add_f32("blk.0.ffn_norm.weight", {32});
  if (!extra.empty()) add_f32(extra, {32});
  return b;
}

void write_tiny_llama(const std::string& path, bool with_output, bool bad_shape = false, const std::string& drop = "",
                      const std::string& extra = "") {
  tiny_llama(with_output, bad_shape, drop, extra).write(path);
}

// A byte-level BPE vocabulary ("gpt2", smollm pre-tokenizer) over the characters "abc 12".
GGUFBuilder tiny_bpe() {
  GGUFBuilder b;
  b.kv_str("general.architecture", "llama");
  b.kv_str("tokenizer.ggml.model", "gpt2");
  b.kv_str("tokenizer.ggml.pre", "smollm");
  b.kv_str_array("tokenizer.ggml.tokens",
                 {"<|endoftext|>", "<|im_start|>", "a", "b", "c", "\xC4\xA0", "ab", "\xC4\xA0" "a", "\xC4\xA0" "ab", "1", "2"});
  b.kv_i32_array("tokenizer.ggml.token_type", {3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1});
  b.kv_str_array("tokenizer.ggml.merges", {"a b", "\xC4\xA0 a", "\xC4\xA0" "a b"});
  b.kv_u32("tokenizer.ggml.bos_token_id", 1);
  b.kv_u32("tokenizer.ggml.eos_token_id", 0);
  b.kv_bool("tokenizer.ggml.add_bos_token", false);
  return b;
}

}  // namespace llmc_test

using llmc_test::GGUFBuilder;

namespace {

std::string tmp_path(const std::string& name) { return "/tmp/llmc_test_gguf_" + std::to_string(::getpid()) + "_" + name; }

std::string error_of(const std::string& path) {
  try {
    GGUFFile f(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

template <typename F>
std::string error_from(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string smollm2_path() {
  if (const char* e = std::getenv("LLMC_SMOLLM2_GGUF"); e && *e) return e;
  return std::string(LLMC_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

uint16_t h(float f) { return f32_to_f16(f); }

template <typename T>
std::string bytes_of(const T& v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof(T));
}

std::vector<float> dequant(GGMLType t, const std::string& blocks, int64_t n) {
  std::vector<float> out(n);
  ggml_dequantize(t, blocks.data(), out.data(), n);
  return out;
}

}  // namespace

TEST(GGUF, MetadataOfEveryType) {
  GGUFBuilder b;
  b.kv("u8", GGUFBuilder::kU8, GGUFBuilder::u8(200));
  b.kv("i8", GGUFBuilder::kI8, GGUFBuilder::u8(static_cast<uint8_t>(-5)));
  b.kv("u16", GGUFBuilder::kU16, bytes_of<uint16_t>(60000));
  b.kv("i16", GGUFBuilder::kI16, bytes_of<int16_t>(-30000));
  b.kv_u32("u32", 4000000000u);
  b.kv("i32", GGUFBuilder::kI32, bytes_of<int32_t>(-7));
  b.kv_f32("f32", 0.25f);
  b.kv_bool("flag", true);
  b.kv_str("name", "hello");
  b.kv("u64", GGUFBuilder::kU64, bytes_of<uint64_t>(1ull << 40));
  b.kv("i64", GGUFBuilder::kI64, bytes_of<int64_t>(-(1ll << 40)));
  b.kv("f64", GGUFBuilder::kF64, bytes_of<double>(1e-300));
  b.kv_str_array("strs", {"a", "", "ccc"});
  b.kv_f32_array("floats", {1.5f, -2.f});
  b.kv_i32_array("ints", {3, -4, 5});
  // array of arrays of uint8: [[1, 2], []]
  b.kv("nested", GGUFBuilder::kArray,
       GGUFBuilder::u32(GGUFBuilder::kArray) + GGUFBuilder::u64(2) + GGUFBuilder::u32(GGUFBuilder::kU8) +
           GGUFBuilder::u64(2) + GGUFBuilder::u8(1) + GGUFBuilder::u8(2) + GGUFBuilder::u32(GGUFBuilder::kU8) +
           GGUFBuilder::u64(0));
  const std::string p = tmp_path("meta.gguf");
  b.write(p);
  GGUFFile f(p);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.metadata().size(), 16u);
  EXPECT_EQ(f.metadata()[0].first, "u8");
  EXPECT_EQ(f.get_u32("u8"), 200u);
  EXPECT_EQ(f.get_i64("i8"), -5);
  EXPECT_EQ(f.get_u32("u16"), 60000u);
  EXPECT_EQ(f.get_i64("i16"), -30000);
  EXPECT_EQ(f.get_u32("u32"), 4000000000u);
  EXPECT_EQ(f.get_i64("i32"), -7);
  EXPECT_EQ(f.get_f32("f32"), 0.25f);
  EXPECT_TRUE(f.get_bool("flag"));
  EXPECT_EQ(f.get_string("name"), "hello");
  EXPECT_EQ(f.get_i64("u64"), 1ll << 40);
  EXPECT_EQ(f.get_i64("i64"), -(1ll << 40));
  EXPECT_EQ(f.get_f64("f64"), 1e-300);
  EXPECT_EQ(f.get_string_array("strs"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(f.get_f32_array("floats"), (std::vector<float>{1.5f, -2.f}));
  EXPECT_EQ(f.get_i32_array("ints"), (std::vector<int32_t>{3, -4, 5}));
  const GGUFValue& n = f.get("nested");
  ASSERT_EQ(n.type, GGUFType::ARRAY);
  ASSERT_EQ(n.elem_type, GGUFType::ARRAY);
  ASSERT_EQ(n.array.size(), 2u);
  EXPECT_EQ(n.array[0].array.size(), 2u);
  EXPECT_EQ(n.array[0].array[1].u, 2u);
  EXPECT_TRUE(n.array[1].array.empty());
  EXPECT_TRUE(f.has("name"));
  EXPECT_FALSE(f.has("nope"));
  EXPECT_EQ(f.get_u32_or("nope", 9), 9u);
  EXPECT_EQ(f.get_string_or("nope", "x"), "x");
  EXPECT_TRUE(f.tensors().empty());

  // Clear errors naming the file and the key.
  std::string e = error_from([&] { f.get_string("nope"); });
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("'nope' is missing"), std::string::npos) << e;
  e = error_from([&] { f.get_string("u32"); });
  EXPECT_NE(e.find("'u32' is uint32, expected string"), std::string::npos) << e;
  e = error_from([&] { f.get_u32("i32"); });
  EXPECT_NE(e.find("out of the uint32 range"), std::string::npos) << e;
  e = error_from([&] { f.get_u32("u64"); });
  EXPECT_NE(e.find("out of the uint32 range"), std::string::npos) << e;
  e = error_from([&] { f.get_string_array("ints"); });
  EXPECT_NE(e.find("array of int32, expected an array of strings"), std::string::npos) << e;
  e = error_from([&] { f.get_f32("name"); });
  EXPECT_NE(e.find("expected float32 or float64"), std::string::npos) << e;
  ::unlink(p.c_str());
}

TEST(GGUF, TensorInfosShapesAndAlignment) {
  for (uint32_t align : {32u, 64u, 1u}) {
    GGUFBuilder b;
    if (align != 32) b.kv_u32("general.alignment", align);
    std::vector<float> a = {1, 2, 3, 4, 5, 6};
    b.tensor("a", {3, 2}, GGMLType::F32, std::string(reinterpret_cast<const char*>(a.data()), 24));
    std::vector<uint16_t> hh = {h(1.5f), h(-2.f)};
    b.tensor("h", {2}, GGMLType::F16, std::string(reinterpret_cast<const char*>(hh.data()), 4));
    std::vector<uint16_t> bb = {f32_to_bf16(3.f)};
    b.tensor("bf", {1, 1, 1, 1}, GGMLType::BF16, std::string(reinterpret_cast<const char*>(bb.data()), 2));
    const std::string p = tmp_path("shapes.gguf");
    b.write(p, align);
    GGUFFile f(p);
    EXPECT_EQ(f.alignment(), align);
    EXPECT_EQ(f.data_offset() % align, 0u);
    ASSERT_EQ(f.tensors().size(), 3u);
    const GGUFTensorInfo* t = f.find("a");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->ne, (std::vector<int64_t>{3, 2}));
    EXPECT_EQ(t->shape(), (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(t->numel, 6);
    EXPECT_EQ(t->nbytes, 24u);
    EXPECT_EQ(f.dequantize(*t), a);
    EXPECT_EQ(f.dequantize(*f.find("h")), (std::vector<float>{1.5f, -2.f}));
    EXPECT_EQ(f.dequantize(*f.find("bf")), (std::vector<float>{3.f}));
    EXPECT_EQ(f.find("bf")->shape(), (std::vector<int64_t>{1, 1, 1, 1}));
    EXPECT_EQ(f.find("zzz"), nullptr);
    ::unlink(p.c_str());
  }
}

TEST(GGUF, TypeTableIsConsistent) {
  int with_dequant = 0;
  for (const auto& t : ggml_type_table()) {
    EXPECT_EQ(ggml_type_info(static_cast<uint32_t>(t.type)), &t) << t.name;
    EXPECT_GT(t.block_size, 0) << t.name;
    EXPECT_GT(t.type_size, 0u) << t.name;
    with_dequant += t.dequantize != nullptr;
  }
  EXPECT_EQ(with_dequant, 15);  // F32 F16 BF16 F64 I8 I16 I32 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K
  EXPECT_EQ(ggml_type_info(4), nullptr);  // removed Q4_2
  EXPECT_EQ(ggml_type_info(1000), nullptr);
  EXPECT_EQ(std::string(ggml_type_info(3)->name), "Q4_1");
  EXPECT_EQ(ggml_type_info(3)->type_size, 20u);
  EXPECT_EQ(ggml_type_info(14)->type_size, 210u);
}

TEST(GGUFQuants, Q8_0) {
  std::string blk = GGUFBuilder::u16(h(0.5f));
  for (int j = 0; j < 32; ++j) blk += static_cast<char>(static_cast<int8_t>(j * 8 - 128));
  auto y = dequant(GGMLType::Q8_0, blk + blk, 64);
  for (int j = 0; j < 64; ++j) EXPECT_EQ(y[j], 0.5f * ((j % 32) * 8 - 128)) << j;
}

TEST(GGUFQuants, Q4_0AndQ4_1NibbleOrder) {
  // Byte j holds weight j in its low nibble and weight j+16 in its high nibble.
  std::string qs;
  for (int j = 0; j < 16; ++j) qs += static_cast<char>((j & 0xf) | ((15 - j) << 4));
  auto y = dequant(GGMLType::Q4_0, GGUFBuilder::u16(h(2.f)) + qs, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 2.f * (j - 8));
    EXPECT_EQ(y[j + 16], 2.f * ((15 - j) - 8));
  }
  y = dequant(GGMLType::Q4_1, GGUFBuilder::u16(h(0.25f)) + GGUFBuilder::u16(h(-1.f)) + qs, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.25f * j - 1.f);
    EXPECT_EQ(y[j + 16], 0.25f * (15 - j) - 1.f);
  }
}

TEST(GGUFQuants, Q5_0AndQ5_1HighBits) {
  std::mt19937 rng(7);
  std::string qs;
  for (int j = 0; j < 16; ++j) qs += static_cast<char>(rng() & 0xff);
  const uint32_t qh = 0xA5C3F00Fu;
  const std::string qh_bytes = bytes_of(qh);
  auto q5 = [&](int e) {  // weight e: low nibble (e < 16) or high nibble, 5th bit = bit e of qh
    const int nib = e < 16 ? (static_cast<uint8_t>(qs[e]) & 0xf) : (static_cast<uint8_t>(qs[e - 16]) >> 4);
    return nib | static_cast<int>(((qh >> e) & 1) << 4);
  };
  auto y = dequant(GGMLType::Q5_0, GGUFBuilder::u16(h(0.5f)) + qh_bytes + qs, 32);
  for (int e = 0; e < 32; ++e) EXPECT_EQ(y[e], 0.5f * (q5(e) - 16)) << e;
  y = dequant(GGMLType::Q5_1, GGUFBuilder::u16(h(0.5f)) + GGUFBuilder::u16(h(3.f)) + qh_bytes + qs, 32);
  for (int e = 0; e < 32; ++e) EXPECT_EQ(y[e], 0.5f * q5(e) + 3.f) << e;
}

namespace {

// 6-bit scale and min of sub-block s (0..7) of a Q4_K/Q5_K block, from the packing description.
void ref_scale_min(const uint8_t* sc, int s, int* scale, int* min) {
  if (s < 4) {
    *scale = sc[s] & 63;
    *min = sc[s + 4] & 63;
  } else {
    *scale = (sc[s + 4] & 15) | ((sc[s - 4] >> 6) << 4);
    *min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
  }
}

std::string random_bytes(std::mt19937& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

}  // namespace

TEST(GGUFQuants, Q4_K) {
  std::mt19937 rng(11);
  const float d = 0.125f, dmin = 0.0625f;
  const std::string scales = random_bytes(rng, 12), qs = random_bytes(rng, 128);
  const std::string blk = GGUFBuilder::u16(h(d)) + GGUFBuilder::u16(h(dmin)) + scales + qs;
  ASSERT_EQ(blk.size(), 144u);
  auto y = dequant(GGMLType::Q4_K, blk, 256);
  const auto* sc = reinterpret_cast<const uint8_t*>(scales.data());
  for (int e = 0; e < 256; ++e) {
    const int chunk = e / 64, in = e % 64, l = in % 32, s = 2 * chunk + (in >= 32);
    const uint8_t byte = static_cast<uint8_t>(qs[32 * chunk + l]);
    const int q = in < 32 ? (byte & 15) : (byte >> 4);
    int scale, min;
    ref_scale_min(sc, s, &scale, &min);
    EXPECT_EQ(y[e], (d * scale) * q - dmin * min) << e;
  }
}

TEST(GGUFQuants, Q5_K) {
  std::mt19937 rng(12);
  const float d = 0.5f, dmin = 0.25f;
  const std::string scales = random_bytes(rng, 12), qh = random_bytes(rng, 32), qs = random_bytes(rng, 128);
  const std::string blk = GGUFBuilder::u16(h(d)) + GGUFBuilder::u16(h(dmin)) + scales + qh + qs;
  ASSERT_EQ(blk.size(), 176u);
  auto y = dequant(GGMLType::Q5_K, blk, 256);
  const auto* sc = reinterpret_cast<const uint8_t*>(scales.data());
  for (int e = 0; e < 256; ++e) {
    const int chunk = e / 64, in = e % 64, l = in % 32, s = 2 * chunk + (in >= 32);
    const uint8_t byte = static_cast<uint8_t>(qs[32 * chunk + l]);
    const int hi = (static_cast<uint8_t>(qh[l]) >> s) & 1;  // bit 2*chunk (+1 for the high nibbles)
    const int q = (in < 32 ? (byte & 15) : (byte >> 4)) + 16 * hi;
    int scale, min;
    ref_scale_min(sc, s, &scale, &min);
    EXPECT_EQ(y[e], (d * scale) * q - dmin * min) << e;
  }
}

TEST(GGUFQuants, Q6_K) {
  std::mt19937 rng(13);
  const float d = 0.03125f;
  const std::string ql = random_bytes(rng, 128), qh = random_bytes(rng, 64), scales = random_bytes(rng, 16);
  const std::string blk = ql + qh + scales + GGUFBuilder::u16(h(d));
  ASSERT_EQ(blk.size(), 210u);
  auto y = dequant(GGMLType::Q6_K, blk + blk, 512);
  for (int e = 0; e < 512; ++e) {
    const int w = e % 256, half = w / 128, in = w % 128, quarter = in / 32, l = in % 32;
    const uint8_t lo_byte = static_cast<uint8_t>(ql[64 * half + l + 32 * (quarter & 1)]);
    const int lo = quarter < 2 ? (lo_byte & 15) : (lo_byte >> 4);
    const int hi = (static_cast<uint8_t>(qh[32 * half + l]) >> (2 * quarter)) & 3;
    const int scale = static_cast<int8_t>(scales[8 * half + l / 16 + 2 * quarter]);
    EXPECT_EQ(y[e], d * scale * ((lo | (hi << 4)) - 32)) << e;
  }
}

TEST(GGUFQuants, RejectsBadCalls) {
  std::vector<float> out(32);
  std::string blk(34, '\0');
  EXPECT_THROW(ggml_dequantize(GGMLType::Q8_0, blk.data(), out.data(), 31), Error);
  EXPECT_THROW(ggml_dequantize(GGMLType::Q2_K, blk.data(), out.data(), 256), Error);
  EXPECT_THROW(ggml_dequantize(static_cast<GGMLType>(4), blk.data(), out.data(), 32), Error);
}

TEST(GGUF, MalformedFilesGiveClearErrors) {
  const std::string p = tmp_path("bad.gguf");
  auto write = [&](const std::string& bytes) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << bytes;
  };
  write("GGUX" + std::string(20, '\0'));
  EXPECT_NE(error_of(p).find("not a GGUF file"), std::string::npos) << error_of(p);
  write("GGUF" + GGUFBuilder::u32(1) + std::string(16, '\0'));
  EXPECT_NE(error_of(p).find("version 1 is not supported"), std::string::npos) << error_of(p);
  write("GGUF" + GGUFBuilder::u32(3u << 24) + std::string(16, '\0'));
  EXPECT_NE(error_of(p).find("big-endian"), std::string::npos) << error_of(p);
  write("GGUF" + GGUFBuilder::u32(3) + GGUFBuilder::u64(0) + GGUFBuilder::u64(1ull << 60));
  EXPECT_NE(error_of(p).find("more than the file can hold"), std::string::npos) << error_of(p);
  write("GGUF" + GGUFBuilder::u32(3) + GGUFBuilder::u64(0));
  EXPECT_NE(error_of(p).find("truncated"), std::string::npos) << error_of(p);

  {  // a tensor whose data would run past the end
    GGUFBuilder b;
    b.tensor("t", {8}, GGMLType::F32, std::string(32, '\0'));
    std::string bytes = b.build();
    write(bytes.substr(0, bytes.size() - 4));
    EXPECT_NE(error_of(p).find("tensor 't'"), std::string::npos) << error_of(p);
    EXPECT_NE(error_of(p).find("runs past the end"), std::string::npos) << error_of(p);
  }
  {  // row length not a multiple of the block size
    GGUFBuilder b;
    b.tensor("q", {16}, GGMLType::Q8_0, std::string(34, '\0'));
    b.write(p);
    EXPECT_NE(error_of(p).find("not a multiple of the Q8_0 block size 32"), std::string::npos) << error_of(p);
  }
  {  // unknown type, too many dims, duplicate names, bad alignment
    GGUFBuilder b;
    b.tensor_raw("x", {4}, 77, 0);
    b.write(p);
    EXPECT_NE(error_of(p).find("unknown ggml type 77"), std::string::npos) << error_of(p);
    GGUFBuilder b2;
    b2.tensor("x", {1, 1, 1, 1, 1}, GGMLType::F32, std::string(4, '\0'));
    b2.write(p);
    EXPECT_NE(error_of(p).find("5 dimensions"), std::string::npos) << error_of(p);
    GGUFBuilder b3;
    b3.tensor("x", {1}, GGMLType::F32, std::string(4, '\0'));
    b3.tensor("x", {1}, GGMLType::F32, std::string(4, '\0'));
    b3.write(p);
    EXPECT_NE(error_of(p).find("appears twice"), std::string::npos) << error_of(p);
    GGUFBuilder b4;
    b4.kv_u32("general.alignment", 48);
    b4.write(p);
    EXPECT_NE(error_of(p).find("not a power of two"), std::string::npos) << error_of(p);
    GGUFBuilder b5;
    b5.tensor_raw("x", {1}, 0, 4);  // misaligned offset
    b5.write(p);
    EXPECT_NE(error_of(p).find("not a multiple of the alignment"), std::string::npos) << error_of(p);
  }
  {  // huge dims that would overflow the element count
    GGUFBuilder b;
    b.tensor_raw("big", {1ull << 40, 1ull << 40}, 0, 0);
    b.write(p);
    EXPECT_NE(error_of(p).find("too many elements"), std::string::npos) << error_of(p);
  }
  {  // lying array length, bad bool, unknown value type, duplicate key
    write("GGUF" + GGUFBuilder::u32(3) + GGUFBuilder::u64(0) + GGUFBuilder::u64(1) + GGUFBuilder::str("k") +
          GGUFBuilder::u32(9) + GGUFBuilder::u32(8) + GGUFBuilder::u64(1ull << 61));
    EXPECT_NE(error_of(p).find("runs past the end"), std::string::npos) << error_of(p);
    GGUFBuilder b;
    b.kv("flag", GGUFBuilder::kBool, GGUFBuilder::u8(2));
    b.write(p);
    EXPECT_NE(error_of(p).find("neither 0 nor 1"), std::string::npos) << error_of(p);
    GGUFBuilder b2;
    b2.kv("k", 13, GGUFBuilder::u8(0));
    b2.write(p);
    EXPECT_NE(error_of(p).find("unknown value type 13"), std::string::npos) << error_of(p);
    GGUFBuilder b3;
    b3.kv_u32("k", 1);
    b3.kv_u32("k", 2);
    b3.write(p);
    EXPECT_NE(error_of(p).find("'k' appears twice"), std::string::npos) << error_of(p);
  }
  {  // deeply nested arrays
    std::string v = GGUFBuilder::u32(GGUFBuilder::kU8) + GGUFBuilder::u64(0);
    for (int d = 0; d < 20; ++d) v = GGUFBuilder::u32(GGUFBuilder::kArray) + GGUFBuilder::u64(1) + v;
    GGUFBuilder b;
    b.kv("deep", GGUFBuilder::kArray, v);
    b.write(p);
    EXPECT_NE(error_of(p).find("nested deeper"), std::string::npos) << error_of(p);
  }
  {  // unsupported dequantization is an error at dequantize time, not at open time
    GGUFBuilder b;
    b.tensor("k2", {256}, GGMLType::Q2_K, std::string(84, '\0'));
    b.write(p);
    GGUFFile f(p);
    const std::string e = error_from([&] { f.dequantize(f.tensors()[0]); });
    EXPECT_NE(e.find("tensor 'k2' has type Q2_K, which cannot be dequantized"), std::string::npos) << e;
  }
  EXPECT_NE(error_of(tmp_path("does_not_exist.gguf")).find("does_not_exist"), std::string::npos);
  ::unlink(p.c_str());
}

// Issue 21, defect 6: a tensor offset changed to another aligned, in-range value (overlapping
// another tensor, or leaving a hole) is an error, as in safetensors.
TEST(GGUF, OverlappingOrGappedTensorsAreErrors) {
  const std::string p = tmp_path("ranges.gguf");
  auto write = [&](const std::string& bytes) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << bytes;
  };
  GGUFBuilder b;
  b.tensor("a", {8}, GGMLType::F32, std::string(32, '\1'));
  b.tensor("b", {8}, GGMLType::F32, std::string(32, '\2'));
  b.tensor("c", {16}, GGMLType::F32, std::string(64, '\3'));
  const std::string good = b.build();
  write(good);
  ASSERT_EQ(error_of(p), "");
  // The info of tensor c: name, 1 dimension of 16, type F32, data offset 64.
  const std::string info_c = GGUFBuilder::str("c") + GGUFBuilder::u32(1) + GGUFBuilder::u64(16) +
                             GGUFBuilder::u32(0) + GGUFBuilder::u64(64);
  const size_t at = good.find(info_c);
  ASSERT_NE(at, std::string::npos);
  auto with_c_at = [&](uint64_t offset, const std::string& extra) {
    std::string bytes = good;
    bytes.replace(at + info_c.size() - 8, 8, GGUFBuilder::u64(offset));
    write(bytes + extra);
    return error_of(p);
  };
  std::string e = with_c_at(32, "");  // c over b
  EXPECT_NE(e.find(p + ": tensors 'b' and 'c' overlap"), std::string::npos) << e;
  e = with_c_at(0, "");
  EXPECT_NE(e.find("overlap"), std::string::npos) << e;
  e = with_c_at(96, std::string(32, '\0'));  // c one block later: a hole where it was
  EXPECT_NE(e.find(p + ": 32 unused bytes before tensor 'c'"), std::string::npos) << e;
  ::unlink(p.c_str());
}

TEST(GGUFLlama, NameMapping) {
  EXPECT_EQ(gguf_llama_hf_name("token_embd.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(gguf_llama_hf_name("output_norm.weight"), "model.norm.weight");
  EXPECT_EQ(gguf_llama_hf_name("output.weight"), "lm_head.weight");
  EXPECT_EQ(gguf_llama_hf_name("blk.0.attn_q.weight"), "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(gguf_llama_hf_name("blk.12.attn_k.weight"), "model.layers.12.self_attn.k_proj.weight");
  EXPECT_EQ(gguf_llama_hf_name("blk.3.attn_v.weight"), "model.layers.3.self_attn.v_proj.weight");
  EXPECT_EQ(gguf_llama_hf_name("blk.3.attn_output.weight"), "model.layers.3.self_attn.o_proj.weight");
  EXPECT_EQ(gguf_llama_hf_name("blk.3.ffn_gate.weight"), "model.layers.3.mlp.gate_proj.weight");
  EXPECT_EQ(gguf_llama_hf_name("blk.3.ffn_up.weight"), "model.layers.3.mlp.up_proj.weight");
  EXPECT_EQ(gguf_llama_hf_name("blk.3.ffn_down.weight"), "model.layers.3.mlp.down_proj.weight");
  EXPECT_EQ(gguf_llama_hf_name("blk.3.attn_norm.weight"), "model.layers.3.input_layernorm.weight");
  EXPECT_EQ(gguf_llama_hf_name("blk.3.ffn_norm.weight"), "model.layers.3.post_attention_layernorm.weight");
  EXPECT_EQ(gguf_llama_hf_name("blk.3.attn_q.bias"), "");
  EXPECT_EQ(gguf_llama_hf_name("blk..attn_q.weight"), "");
  EXPECT_EQ(gguf_llama_hf_name("blk.x.attn_q.weight"), "");
  EXPECT_EQ(gguf_llama_hf_name("rope_freqs.weight"), "");
}

TEST(GGUFLlama, UnpermuteRopeRows) {
  // 2 heads of head_dim 4, 1 column: GGUF rows 0..7 -> HF rows [0,2,1,3, 4,6,5,7].
  FloatTensor w{{8, 1}, {0, 1, 2, 3, 4, 5, 6, 7}};
  unpermute_rope_rows(w, 2, "test");
  EXPECT_EQ(w.data, (std::vector<float>{0, 2, 1, 3, 4, 6, 5, 7}));
  FloatTensor w2{{4, 2}, {0, 1, 2, 3, 4, 5, 6, 7}};  // one head, 2 columns: rows move whole
  unpermute_rope_rows(w2, 1, "test");
  EXPECT_EQ(w2.data, (std::vector<float>{0, 1, 4, 5, 2, 3, 6, 7}));
  FloatTensor bad{{6, 1}, std::vector<float>(6)};
  EXPECT_THROW(unpermute_rope_rows(bad, 4, "test"), Error);
}

TEST(GGUFLlama, TinyQuantizedModel) {
  const std::string p = tmp_path("tiny_llama.gguf");
  llmc_test::write_tiny_llama(p, /*with_output=*/false);
  GGUFFile f(p);
  const GGUFLlama m = read_gguf_llama(f);
  EXPECT_EQ(m.config.hidden_size, 32);
  EXPECT_EQ(m.config.num_heads, 2);
  EXPECT_EQ(m.config.num_kv_heads, 1);
  EXPECT_EQ(m.config.head_dim, 16);
  EXPECT_EQ(m.config.vocab_size, 8);
  EXPECT_TRUE(m.config.tie_word_embeddings);
  EXPECT_EQ(m.config.bos_token_id, 1);
  EXPECT_EQ(m.config.eos_token_id, 2);
  EXPECT_EQ(m.config.rope_theta, 10000.0);
  EXPECT_EQ(m.tokenizer_model, "llama");
  EXPECT_EQ(m.tensors.size(), 11u);
  EXPECT_EQ(m.source_types.at("model.layers.0.self_attn.q_proj.weight"), "Q8_0");
  EXPECT_EQ(m.source_types.at("model.layers.0.mlp.down_proj.weight"), "F32");
  for (const auto& [name, t] : m.tensors) {
    if (name.find("q_proj") == std::string::npos && name.find("k_proj") == std::string::npos) {
      // Unpermuted tensors equal the raw dequantization.
      const std::string gguf = name == "model.embed_tokens.weight" ? "token_embd.weight" : "";
      if (!gguf.empty()) EXPECT_EQ(t.data, f.dequantize(*f.find(gguf)));
      continue;
    }
    // q/k: HF row j of head h = GGUF row 2j, HF row j + 8 = GGUF row 2j+1.
    const auto raw = f.dequantize(*f.find(name.find("q_proj") != std::string::npos ? "blk.0.attn_q.weight" : "blk.0.attn_k.weight"));
    const int64_t rows = t.shape[0], cols = t.shape[1], hd = 16;
    ASSERT_EQ(cols, 32);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t head = r / hd, j = r % hd;
      const int64_t src = head * hd + (j < hd / 2 ? 2 * j : 2 * (j - hd / 2) + 1);
      for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(t.data[r * cols + c], raw[src * cols + c]) << name << " row " << r;
    }
  }
  ::unlink(p.c_str());
}

TEST(GGUFLlama, ErrorsForUnsupportedOrInconsistentFiles) {
  const std::string p = tmp_path("tiny_bad.gguf");
  {
    GGUFBuilder b;
    b.kv_str("general.architecture", "qwen2");
    b.write(p);
    const std::string e = error_from([&] { read_gguf_llama(p); });
    EXPECT_NE(e.find("unsupported architecture 'qwen2'"), std::string::npos) << e;
    EXPECT_NE(e.find(p), std::string::npos) << e;
  }
  {
    GGUFBuilder b;
    b.write(p);
    const std::string e = error_from([&] { read_gguf_llama(p); });
    EXPECT_NE(e.find("'general.architecture' is missing"), std::string::npos) << e;
  }
  {  // a tensor with the wrong shape
    llmc_test::write_tiny_llama(p, false, /*bad_shape=*/true);
    const std::string e = error_from([&] { read_gguf_llama(p); });
    EXPECT_NE(e.find("tensor 'blk.0.ffn_up.weight' has shape [32, 64]"), std::string::npos) << e;
  }
  {  // a missing weight
    llmc_test::write_tiny_llama(p, /*with_output=*/true, false, /*drop=*/"blk.0.ffn_norm.weight");
    std::string e = error_from([&] { read_gguf_llama(p); });
    EXPECT_NE(e.find("model.layers.0.post_attention_layernorm.weight is missing"), std::string::npos) << e;
    llmc_test::write_tiny_llama(p, /*with_output=*/false, false, /*drop=*/"blk.0.ffn_norm.weight");
    e = error_from([&] { read_gguf_llama(p); });
    EXPECT_NE(e.find("block_count 1 needs at least 11 tensors, the file has 10"), std::string::npos) << e;
  }
  {  // an unknown tensor
    llmc_test::write_tiny_llama(p, false, false, "", /*extra=*/"blk.0.attn_q.bias");
    const std::string e = error_from([&] { read_gguf_llama(p); });
    EXPECT_NE(e.find("tensor 'blk.0.attn_q.bias' is not part of a Llama model"), std::string::npos) << e;
  }
  ::unlink(p.c_str());
}

TEST(GGUFLlama, Stories260KMatchesSafetensorsBitwise) {
  const std::string dir = shared_root() + "/models/stories260K";
  const std::string gguf = dir + "/original/stories260K.gguf", st = dir + "/model.safetensors";
  if (!file_exists(gguf) || !file_exists(st)) GTEST_SKIP() << "stories260K not found under " << dir << " (set LLMC_SHARED)";
  const GGUFLlama m = read_gguf_llama(gguf);
  const ModelConfig& c = m.config;
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_layers, 5);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.rms_norm_eps, static_cast<double>(1e-5f));
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.max_position_embeddings, 2048);  // the converter's default, see the README
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_FALSE(c.tie_word_embeddings);  // this GGUF stores output.weight
  EXPECT_EQ(m.tokenizer_model, "llama");

  SafetensorsFile ref(st);
  EXPECT_EQ(m.tensors.size(), ref.tensors().size());
  size_t compared = 0;
  for (const auto& [name, t] : m.tensors) {
    const TensorInfo* r = ref.find(name);
    ASSERT_NE(r, nullptr) << name << " is not in " << st;
    ASSERT_EQ(r->dtype, DType::F32) << name;
    ASSERT_EQ(r->shape, t.shape) << name;
    ASSERT_EQ(static_cast<int64_t>(t.data.size()), r->numel()) << name;
    EXPECT_EQ(std::memcmp(t.data.data(), ref.data(*r), t.data.size() * 4), 0) << name << " differs";
    ++compared;
  }
  EXPECT_EQ(compared, 48u);
}

TEST(GGUFLlama, SmolLM2Q4_1) {
  const std::string p = smollm2_path();
  if (!file_exists(p)) GTEST_SKIP() << p << " not found: run scripts/get-model.sh smollm2-135m (or set LLMC_SMOLLM2_GGUF)";
  GGUFFile f(p);
  const ModelConfig c = gguf_llama_config(f);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.rope_theta, 100000.0);
  EXPECT_EQ(c.rms_norm_eps, static_cast<double>(1e-5f));
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);

  const GGUFLlama m = read_gguf_llama(f);
  EXPECT_EQ(m.tensors.size(), 272u);
  std::map<std::string, int> types;
  for (const auto& [name, ty] : m.source_types) ++types[ty];
  EXPECT_EQ(types["Q4_1"], 210);
  EXPECT_EQ(types["F32"], 61);
  EXPECT_EQ(types["Q8_0"], 1);
  for (const auto& [name, t] : m.tensors) {
    double sumsq = 0;
    for (float x : t.data) {
      ASSERT_TRUE(std::isfinite(x)) << name;
      sumsq += static_cast<double>(x) * x;
    }
    const double rms = std::sqrt(sumsq / t.data.size());
    EXPECT_GT(rms, 1e-3) << name;  // trained weights: neither zero nor blown up
    EXPECT_LT(rms, 10.0) << name;
  }
}

TEST(GGUFTokenizer, FactoryPicksTheTokenizerOfTheFile) {
  const std::string p = tmp_path("tok.gguf");
  llmc_test::write_tiny_llama(p, false);
  {
    GGUFFile f(p);
    auto tok = tokenizer_from_gguf(f);
    EXPECT_EQ(tok->type(), "sentencepiece");
    EXPECT_EQ(tok->vocab_size(), 8);
    EXPECT_TRUE(tok->add_bos_default());
    // "ab a" -> "▁ab▁a": ▁a (-1.5) beats ab (-3): [▁a, b, ▁a].
    EXPECT_EQ(tok->encode("ab a", true), (std::vector<int32_t>{1, 6, 5, 6}));
    EXPECT_EQ(tok->decode({1, 6, 5, 6, 2}), "ab a");
  }
  llmc_test::tiny_bpe().write(p);
  {
    GGUFFile f(p);
    auto tok = tokenizer_from_gguf(f);
    EXPECT_EQ(tok->type(), "bpe");
    EXPECT_FALSE(tok->add_bos_default());
    EXPECT_EQ(tok->bos_id(), 1);
    EXPECT_EQ(tok->eos_id(), 0);
    // smollm: digits split one by one, "ab" merges, " a" -> "Ġa".
    EXPECT_EQ(tok->encode("<|im_start|>ab a12", false), (std::vector<int32_t>{1, 6, 7, 9, 10}));
    EXPECT_EQ(tok->encode("ab", true), (std::vector<int32_t>{1, 6}));
    EXPECT_EQ(tok->decode({1, 6, 7, 9, 10, 0}), "ab a12");
  }
  {  // unknown tokenizer model / pre-tokenizer
    GGUFBuilder b;
    b.kv_str("tokenizer.ggml.model", "bert");
    b.write(p);
    GGUFFile f(p);
    const std::string e = error_from([&] { tokenizer_from_gguf(f); });
    EXPECT_NE(e.find("tokenizer.ggml.model 'bert' is not supported"), std::string::npos) << e;
  }
  {
    GGUFBuilder b;
    b.kv_str("tokenizer.ggml.model", "gpt2");
    b.kv_str("tokenizer.ggml.pre", "falcon");
    b.kv_str_array("tokenizer.ggml.tokens", {"a"});
    b.kv_str_array("tokenizer.ggml.merges", {});
    b.write(p);
    GGUFFile f(p);
    const std::string e = error_from([&] { tokenizer_from_gguf(f); });
    EXPECT_NE(e.find("unsupported BPE pre-tokenizer 'falcon'"), std::string::npos) << e;
    EXPECT_NE(e.find(p), std::string::npos) << e;
  }
  ::unlink(p.c_str());
}

namespace {

// Opens `path` and runs everything that reads it: metadata, every tensor, the Llama mapping and
// the tokenizer. Only llmc::Error may come out.
void exercise(const std::string& path) {
  try {
    GGUFFile f(path);
    for (const auto& [k, v] : f.metadata()) (void)v.to_string();
    for (const auto& t : f.tensors()) {
      try {
        (void)f.dequantize(t);
      } catch (const Error&) {
      }
    }
    try {
      (void)read_gguf_llama(f);
    } catch (const Error&) {
    }
    auto tok = tokenizer_from_gguf(f);
    const auto ids = tok->encode("ab a12 <|im_start|>", true);
    (void)tok->decode(ids);
  } catch (const Error&) {
  }
}

// `complete`: the shortest prefix of `base` that is a valid file (without tensors, the padding
// after the header is optional).
void fuzz_file(const std::string& base, size_t complete, const std::string& path, uint32_t seed, int flips) {
  auto write = [&](const std::string& bytes) {
    ::unlink(path.c_str());  // a fresh file: rewriting one in place is ~20x slower on some filesystems
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };
  // Every truncation.
  for (size_t n = 0; n < base.size(); ++n) {
    write(base.substr(0, n));
    ASSERT_NO_FATAL_FAILURE(exercise(path)) << "truncated to " << n;
    std::string err = "";
    try {
      GGUFFile f(path);
    } catch (const Error& e) {
      err = e.what();
    }
    if (n < complete) ASSERT_FALSE(err.empty()) << "a file truncated to " << n << " of " << base.size() << " bytes opened";
  }
  // Random byte flips, mostly in the header (metadata and tensor infos), where the structure is.
  std::mt19937 rng(seed);
  size_t header = base.size();
  {
    GGUFFile f([&] { write(base); return path; }());
    header = f.data_offset();
  }
  for (int v = 0; v < flips; ++v) {
    std::string bytes = base;
    const int n_flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n_flips; ++k) {
      const size_t pos = (rng() % 5 != 0) ? rng() % header : rng() % bytes.size();
      switch (rng() % 3) {
        case 0: bytes[pos] = static_cast<char>(rng() & 0xff); break;
        case 1: bytes[pos] ^= static_cast<char>(1u << (rng() % 8)); break;
        default: bytes[pos] = static_cast<char>((rng() % 2) ? 0xff : 0x00); break;
      }
    }
    write(bytes);
    exercise(path);
  }
}

}  // namespace

// Malformed input must produce llmc::Error, never a crash, hang or out-of-bounds read (this test
// also runs under ASan/UBSan, see CMakePresets.json "asan").
TEST(GGUFFuzz, TruncationsAndByteFlipsOfATinyLlama) {
  const std::string p = tmp_path("fuzz_llama.gguf");
  const std::string base = llmc_test::tiny_llama(false).build();
  fuzz_file(base, base.size(), p, 1234, 3000);
  ::unlink(p.c_str());
}

TEST(GGUFFuzz, TruncationsAndByteFlipsOfATinyBPEVocabulary) {
  const std::string p = tmp_path("fuzz_bpe.gguf");
  fuzz_file(llmc_test::tiny_bpe().build(), llmc_test::tiny_bpe().build(1).size(), p, 99, 2000);
  ::unlink(p.c_str());
}
