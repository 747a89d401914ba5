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

// A header length off by a few bytes still parses when the header ends in padding spaces; the
// tensors would then be read shifted (issue 21, defect 6). The data section must match its tensors.
TEST(Safetensors, HeaderLengthOffIsAnError) {
  std::vector<float> a(6, 1.5f), b(3, -2.0f);
  const std::string p = tmp_path("hlen.safetensors");
  write_safetensors(p, {{"a", DType::F32, {2, 3}, a.data()}, {"b", DType::F32, {3}, b.data()}});
  ASSERT_EQ(error_of(p), "");
  std::string bytes = read_text_file(p);
  uint64_t hlen = 0;
  std::memcpy(&hlen, bytes.data(), 8);
  // Pad the header with spaces (as many writers do), so a shorter length still parses as JSON.
  const std::string padded_header = bytes.substr(8, hlen) + std::string(16, ' ');
  const std::string data = bytes.substr(8 + hlen);
  write_raw(p, padded_header, data);
  ASSERT_EQ(error_of(p), "") << "16 bytes of padding: a valid file";
  for (int off : {-1, -3, -8}) {
    std::string v = padded_header.substr(0, padded_header.size() + off);
    std::string shifted = padded_header.substr(padded_header.size() + off) + data;  // the cut bytes join the data
    write_raw(p, v, shifted);
    const std::string e = error_of(p);
    EXPECT_NE(e.find(p + ": the data section is " + std::to_string(data.size() - off) + " bytes but its tensors end at"),
              std::string::npos)
        << off << ": " << e;
  }
  // Bytes appended after the last tensor, and a hole before the first one.
  write_raw(p, padded_header, data + "xyz");
  EXPECT_NE(error_of(p).find("but its tensors end at"), std::string::npos) << error_of(p);
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})", std::string(24, '\0'));
  EXPECT_NE(error_of(p).find("16 unused bytes before tensor 'w'"), std::string::npos) << error_of(p);
  ::unlink(p.c_str());
}
