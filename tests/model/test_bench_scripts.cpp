// The bench scripts end to end on stories260K (tiny settings): each runs the CLI and
// post-processes its JSON, so a renamed field breaks it silently unless something runs it.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <utility>

#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc_kernels/qgemm.h"

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
  EXPECT_GT(s.at("bandwidth").at("read_gbps").get<double>(), 0.0);
  EXPECT_GT(s.at("bandwidth").at("decode_pct_of_read").get<double>(), 0.0);
  EXPECT_FALSE(s.at("profile").at("per_token").empty());
  // The canonical layout's bench next to it exactly where the runtime held tiled copies (4 bits: VNNI).
  EXPECT_EQ(s.contains("no_tiled"), s.at("tiled_copy_bytes").get<int64_t>() > 0);
  EXPECT_EQ(s.at("tiled_copy_bytes").get<int64_t>() > 0, llmc::kernels::tiled_faster(4));
  if (s.contains("no_tiled")) {
    EXPECT_EQ(s.at("no_tiled").at("tiled_copy_bytes").get<int64_t>(), 0);
    EXPECT_GT(s.at("no_tiled").at("decode_tokens_per_s").get<double>(), 0.0);
  }
  fs::remove_all(out);
  fs::remove(out + ".log");
}

// scripts/bench_vs_llamacpp.sh with a stand-in llama.cpp (CI has none): llama-quantize copies the
// file, llama-bench prints fixed tok/s (100 prefill, 50 decode) in its JSON format. Checks the
// script's rounds, medians and ratios against our own bench on stories260K's GGUF, and its errors.
TEST(BenchScripts, BenchVsLlamaCppWithAStandIn) {
  const std::string gguf = llmc::path_join(llmc::shared_root(), "models/stories260K/original/stories260K.gguf");
  if (!llmc::file_exists(gguf)) GTEST_SKIP() << "no " << gguf;
  const std::string dir = "/tmp/llmc_bench_vs_llamacpp_" + std::to_string(::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir + "/bin");
  auto script = [&](const std::string& name, const std::string& body) {
    std::ofstream(dir + "/bin/" + name) << "#!/bin/bash\n" << body;
    fs::permissions(dir + "/bin/" + name, fs::perms::owner_all);
  };
  script("llama-quantize", "cp \"$2\" \"$3\"\n");
  // It also logs the OpenMP wait policy it saw: the caller's (here unset), not common.sh's PASSIVE.
  script("llama-bench",
         "echo \"${OMP_WAIT_POLICY-unset}\" >> \"$(dirname \"$0\")/omp.log\"\n"
         "while [ $# -gt 0 ]; do case $1 in -p) p=$2; shift ;; -n) n=$2; shift ;; esac; shift; done\n"
         "echo \"[{\\\"n_prompt\\\": $p, \\\"n_gen\\\": 0, \\\"avg_ts\\\": 100.0},"
         " {\\\"n_prompt\\\": 0, \\\"n_gen\\\": $n, \\\"avg_ts\\\": 50.0}]\"\n");
  const fs::path build = fs::path(LLMC_CLI).parent_path().parent_path();
  auto run = [&](const std::string& llamacpp) {
    const std::string cmd = "env -u OMP_WAIT_POLICY BUILD='" + build.string() + "' LLMC_SHARED='" + llmc::shared_root() + "' LLAMACPP_BIN='" +
                            llamacpp + "' MODEL='" + gguf + "' ROUNDS=2 THREADS=1 PROMPT=8 NEW=4 bash '" LLMC_SOURCE_DIR
                            "/scripts/bench_vs_llamacpp.sh' '" + dir + "/out' > '" + dir + ".log' 2>&1";
    const int rc = std::system(cmd.c_str());
    return std::make_pair(WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, llmc::read_text_file(dir + ".log"));
  };
  auto [rc, log] = run(dir + "/bin");
  ASSERT_EQ(rc, 0) << log;
  const auto j = nlohmann::json::parse(llmc::read_text_file(dir + "/out/bench_vs_llamacpp.json"));
  // 2 rounds x 6 contenders (ours at groups 32, 64, 128, and 64 with int8 prefill activations) x 1 thread count
  EXPECT_EQ(j["rounds"].size(), 12u);
  ASSERT_EQ(j["ours_over_llamacpp_q4_0"].size(), 4u);
  EXPECT_EQ(j["ours_over_llamacpp_q4_0"][2]["engine"], "ours g128");
  EXPECT_EQ(j["ours_over_llamacpp_q4_0"][3]["engine"], "ours g64 x8");
  for (const auto& m : j["median"]) {
    if (m["engine"].get<std::string>().rfind("llama.cpp", 0) == 0) {
      EXPECT_EQ(m["prefill_tok_s"].get<double>(), 100.0);
      EXPECT_EQ(m["decode_tok_s"].get<double>(), 50.0);
    } else {
      EXPECT_GT(m["decode_tok_s"].get<double>(), 0.0);
    }
  }
  const auto& g64 = j["ours_over_llamacpp_q4_0"][1];
  EXPECT_EQ(g64["engine"], "ours g64");
  EXPECT_NEAR(g64["decode"].get<double>(), j["median"][3]["decode_tok_s"].get<double>() / 50.0, 1e-9);
  EXPECT_NE(llmc::read_text_file(dir + "/out/bench_vs_llamacpp.md").find("| llama.cpp Q4_0 | 50 / 50 (**50**) |"),
            std::string::npos);
  // 2 rounds x 2 llama.cpp contenders, each with OpenMP's own default (PASSIVE slowed its 2-thread decode 7x).
  EXPECT_EQ(llmc::read_text_file(dir + "/bin/omp.log"), "unset\nunset\nunset\nunset\n");
  EXPECT_TRUE(j["llamacpp_omp_wait_policy"].is_null());
  // A llama-bench that dies of SIGILL (the reference build's AMX path on AMX CPUs): the fix in one line.
  fs::create_directories(dir + "/ill");
  fs::copy_file(dir + "/bin/llama-quantize", dir + "/ill/llama-quantize");
  std::ofstream(dir + "/ill/llama-bench") << "#!/bin/bash\nkill -ILL $$\n";
  fs::permissions(dir + "/ill/llama-bench", fs::perms::owner_all);
  std::tie(rc, log) = run(dir + "/ill");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(log.find("error: llama-bench died of SIGILL"), std::string::npos) << log;
  EXPECT_NE(log.find("ldtilecfg"), std::string::npos) << log;
  // No llama-bench where LLAMACPP_BIN points: one clear line, exit 2.
  std::tie(rc, log) = run(dir + "/nope");
  EXPECT_EQ(rc, 2);
  EXPECT_NE(log.find("error: " + dir + "/nope/llama-bench: not found or not executable"), std::string::npos) << log;
  fs::remove_all(dir);
  fs::remove(dir + ".log");
}
