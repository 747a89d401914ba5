// scripts/bench_search.sh end to end on stories260K (2 steps, both supernet stores): the script
// post-processes summary.json and the search's log, so a renamed field or message breaks it
// silently unless something runs it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "llmc/core/files.h"
#include "llmc/core/paths.h"

namespace fs = std::filesystem;

TEST(BenchScripts, BenchSearchOnStories260KBothStores) {
  const std::string stories = llmc::path_join(llmc::shared_root(), "models/stories260K");
  if (!llmc::dir_exists(stories)) GTEST_SKIP() << "no " << stories;
  const std::string out = "/tmp/llmc_bench_search_" + std::to_string(::getpid());
  const fs::path build = fs::path(LLMC_CLI).parent_path().parent_path();  // <build>/bin/llmcompress
  const std::string cmd = "BUILD='" + build.string() + "' LLMC_SHARED='" + llmc::shared_root() +
                          "' THREADS=1 STEPS=2 MODELS=stories260K STORES='stacked lean' bash '" LLMC_SOURCE_DIR
                          "/scripts/bench_search.sh' '" + out + ".json' > '" + out + ".log' 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream log(out + ".log");
  const std::string log_text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  ASSERT_EQ(rc, 0) << log_text;
  std::ifstream f(out + ".json");
  ASSERT_TRUE(f.good()) << log_text;
  const auto j = nlohmann::json::parse(f);
  const auto& runs = j.at("runs");
  ASSERT_EQ(runs.size(), 2u) << j.dump(1);
  for (size_t i = 0; i < 2; ++i) {
    const auto& r = runs[i];
    EXPECT_EQ(r.at("model"), "stories260K");
    EXPECT_EQ(r.at("store"), i == 0 ? "stacked" : "lean");
    EXPECT_EQ(r.at("steps"), 2);
    EXPECT_GT(r.at("seconds_per_search_step").get<double>(), 0.0);
    EXPECT_GT(r.at("peak_rss_mib").get<double>(), 0.0);
    // The log line that splits the samples was found: both phases have samples.
    EXPECT_GT(r.at("sampled_peak_before_supernet_mib").get<double>(), 0.0) << r.dump();
    EXPECT_GT(r.at("sampled_peak_from_supernet_mib").get<double>(), 0.0) << r.dump();
  }
  fs::remove(out + ".json");
  fs::remove(out + ".log");
}
