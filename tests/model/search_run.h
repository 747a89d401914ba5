#pragma once
// The fixture of the whole-search tests on stories260K (skipped without the shared folder): a
// scratch folder, a LUT with synthetic monotone times, and a small config.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/latency/lut.h"
#include "llmc/latency/space.h"
#include "llmc/model/config.h"
#include "llmc/nas/search.h"

namespace llmc {

class SearchRun : public ::testing::Test {
 protected:
  static std::string data_file() { return shared_root() + "/data/tinystories/tinystories_sample.txt"; }
  static std::string stories() { return shared_root() + "/models/stories260K"; }
  static std::string dir() { return "/tmp/llmc_search_" + std::to_string(::getpid()); }
  void SetUp() override {
    if (!dir_exists(stories())) GTEST_SKIP() << "shared model not found at " << stories();
    std::system(("mkdir -p " + dir()).c_str());
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + dir()).c_str()); }
  // A LUT for stories260K with synthetic, strictly monotone times (real measurements of such tiny
  // shapes tie within noise, which would make "the fastest architecture" ambiguous).
  // One file per space (and lm_head width): `lut_lm_head_bits` is the table's own lm_head.
  static std::string lut_path(const SearchSpace& space, int lut_lm_head_bits = 16) {
    const std::string p = dir() + "/lut-" + shapes_hash(load_hf_config(stories() + "/config.json"), space) + "-" +
                          std::to_string(lut_lm_head_bits) + ".json";
    if (file_exists(p)) return p;
    auto cfg = load_hf_config(stories() + "/config.json");
    LutOptions lo;
    lo.tokens = {1};
    lo.repeats = 1;
    lo.progress = false;
    lo.min_sample_us = 0;
    lo.lm_head_bits = lut_lm_head_bits;
    auto j = nlohmann::json::parse(build_lut_json(cfg, space, lo));
    for (auto& e : j["linears"])
      e["us"] = 1e-3 * e["N"].get<double>() * e["K"].get<double>() * (e["bits"].get<double>() + 1);
    for (auto& e : j["attention"]) e["us"] = 2.0 * e["kv_heads"].get<double>();
    write_file_atomic(p, j.dump());
    return p;
  }
  static constexpr const char* kSpace =
      R"({"kv_group_fractions":[1.0,0.5],"mlp_width_fractions":[1.0,0.5],"bits":[2,4,16],"group_size":32})";
  // `space`: the search space's JSON; `lut_lm_head_bits`: lut_settings.lm_head_bits (and the LUT's).
  SearchConfig config(const std::string& extra_schedule, const std::string& target = R"({"fraction":0.5})",
                      const std::string& space = kSpace, int lut_lm_head_bits = 16) {
    const std::string text = R"({"model":")" + stories() + R"(","data":{"sources":["text:)" + data_file() +
                             R"("],"seq_len":32,"batch_size":4,
                             "train_sequences":8,"valid_sequences":8},"space":)" + space +
                             R"(,"lut":")" + lut_path(parse_search_space(space, "s"), lut_lm_head_bits) +
                             R"(","lut_settings":{"lm_head_bits":)" + std::to_string(lut_lm_head_bits) +
                             R"(},"target":)" + target + R"(,"schedule":{)" + extra_schedule + "}}";
    return parse_search_config(text, "test-config.json", "/");
  }
  // The knapsack on the sensitivity prior, no gradient step, at `fraction` ("0.5") of the original;
  // the run's folder is dir()/name.
  std::pair<SearchOptions, SearchConfig> prior_knapsack(const std::string& name, const std::string& fraction) {
    SearchOptions o;
    o.progress = false;
    o.out_dir = dir() + "/" + name;
    SearchConfig c = config(R"("steps":0,"distill":true,"init":"sensitivity")", R"({"fraction":)" + fraction + "}");
    c.discretize = "knapsack";
    return {o, c};
  }
};

}  // namespace llmc

using llmc::SearchRun;
