// scripts/bench_decode.sh end to end on stories260K (tiny settings): the script runs the CLI and
// post-processes its JSON, so a renamed field breaks it silently unless something runs it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "llmc/core/files.h"
#include "llmc/core/paths.h"

namespace fs = std::filesystem;

TEST(BenchScripts, BenchDecodeOnStories260K) {
  const std::string stories = llmc::path_join(llmc::shared_root(), "models/stories260K");
  if (!llmc::dir_exists(stories)) GTEST_SKIP() << "no " << stories;
  const std::string out = "/tmp/llmc_bench_decode_" + std::to_string(::getpid());
  const fs::path build = fs::path(LLMC_CLI).parent_path().parent_path();  // <build>/bin/llmcompress
  const std::string cmd = "BUILD='" + build.string() + "' LLMC_SHARED='" + llmc::shared_root() + "' OUT='" + out +
                          "' THREADS=1 REPEATS=1 PROMPT=8 NEW=8 SMOL_BITS= bash '" LLMC_SOURCE_DIR
                          "/scripts/bench_decode.sh' > '" + out + ".log' 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream log(out + ".log");
  const std::string log_text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  ASSERT_EQ(rc, 0) << log_text;
  std::ifstream f(out + "/bench_decode.json");
  ASSERT_TRUE(f.good()) << log_text;
  const auto j = nlohmann::json::parse(f);
  const auto& s = j.at("stories260K-u4");
  EXPECT_GT(s.at("decode_tokens_per_s").get<double>(), 0.0);
  EXPECT_GT(s.at("prefill_tokens_per_s").get<double>(), 0.0);
  EXPECT_EQ(s.at("lut").at("decode_context").get<int>(), 8 + 8 / 2);
  EXPECT_GT(s.at("lut").at("decode_ms").at("measured_over_predicted").get<double>(), 0.0);
  EXPECT_GT(s.at("lut").at("prefill_ms").at("measured_over_predicted").get<double>(), 0.0);
  fs::remove_all(out);
  fs::remove(out + ".log");
}
