#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/io/safetensors.h"

using namespace llmc;

namespace {

std::string tmp_path(const std::string& name) {
  return "/tmp/llmc_test_" + std::to_string(::getpid()) + "_" + name;
}

void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  uint64_t n = header.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << header << data;
}

std::string error_of(const std::string& path) {
  try {
    SafetensorsFile f(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, RoundTripAllDtypes) {
  std::vector<float> a = {1.5f, -2.f, 3.25f, 0.f, 7.f, -8.5f};
  std::vector<uint16_t> b = {0x3c00, 0xbc00, 0x0000};
  std::vector<int64_t> c = {42};
  const std::string p = tmp_path("rt.safetensors");
  write_safetensors(p, {{"a", DType::F32, {2, 3}, a.data()}, {"b", DType::BF16, {3}, b.data()},
                        {"c", DType::I64, {}, c.data()}},
                    {{"format", "pt"}});
  SafetensorsFile f(p);
  ASSERT_EQ(f.tensors().size(), 3u);
  const TensorInfo* ta = f.find("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(f.data(*ta), a.data(), a.size() * 4), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f.data(*ta)) % 8, 0u);
  const TensorInfo* tb = f.find("b");
  EXPECT_EQ(tb->dtype, DType::BF16);
  EXPECT_EQ(std::memcmp(f.data(*tb), b.data(), 6), 0);
  EXPECT_EQ(f.find("c")->numel(), 1);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.find("missing"), nullptr);
  ::unlink(p.c_str());
}

TEST(Safetensors, HeaderLengthPastEof) {
  const std::string p = tmp_path("hl.safetensors");
  std::ofstream f(p, std::ios::binary);
  uint64_t n = 1000;
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << "{}";
  f.close();
  EXPECT_NE(error_of(p).find("header length 1000 runs past end of file"), std::string::npos) << error_of(p);
  ::unlink(p.c_str());
}

TEST(Safetensors, TooShortAndEmpty) {
  const std::string p = tmp_path("short.safetensors");
  { std::ofstream f(p, std::ios::binary); f << "abc"; }
  EXPECT_NE(error_of(p).find("not a safetensors file"), std::string::npos);
  { std::ofstream f(p, std::ios::binary); }
  EXPECT_NE(error_of(p).find("not a safetensors file"), std::string::npos);
  ::unlink(p.c_str());
}

TEST(Safetensors, OutOfRangeOffsets) {
  const std::string p = tmp_path("oor.safetensors");
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", std::string(8, '\0'));
  EXPECT_NE(error_of(p).find("out of range"), std::string::npos) << error_of(p);
  ::unlink(p.c_str());
}

TEST(Safetensors, OverlappingOffsets) {
  const std::string p = tmp_path("ovl.safetensors");
  write_raw(p,
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            std::string(16, '\0'));
  EXPECT_NE(error_of(p).find("overlap"), std::string::npos) << error_of(p);
  ::unlink(p.c_str());
}

TEST(Safetensors, ShapeDtypeSizeMismatch) {
  const std::string p = tmp_path("mis.safetensors");
  write_raw(p, R"({"a":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'));
  EXPECT_NE(error_of(p).find("need 6"), std::string::npos) << error_of(p);
  write_raw(p, R"({"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}})", std::string(8, '\0'));
  EXPECT_NE(error_of(p).find("unknown dtype"), std::string::npos) << error_of(p);
  write_raw(p, R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(8, '\0'));
  EXPECT_NE(error_of(p).find("invalid shape"), std::string::npos) << error_of(p);
  write_raw(p, R"({"a":)", "");
  EXPECT_NE(error_of(p).find("not valid JSON"), std::string::npos) << error_of(p);
  ::unlink(p.c_str());
}

TEST(Safetensors, TruncatedFileAtEveryLength) {
  std::vector<float> a(16, 1.0f);
  const std::string p = tmp_path("full.safetensors"), q = tmp_path("trunc.safetensors");
  write_safetensors(p, {{"a", DType::F32, {4, 4}, a.data()}});
  const std::string bytes = read_text_file(p);
  for (size_t len = 0; len < bytes.size(); ++len) {
    { std::ofstream f(q, std::ios::binary); f.write(bytes.data(), static_cast<std::streamsize>(len)); }
    EXPECT_FALSE(error_of(q).empty()) << "truncation to " << len << " bytes was accepted";
  }
  ::unlink(p.c_str());
  ::unlink(q.c_str());
}

TEST(Safetensors, MissingFile) {
  EXPECT_NE(error_of("/nonexistent/x.safetensors").find("cannot open"), std::string::npos);
}
