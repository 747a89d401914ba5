#pragma once
// `llmcompress search --config CONFIG.json`: every key, its default and meaning is documented in
// configs/README.md. Unknown keys and wrong types are errors naming the key.
#include <cstdint>
#include <string>
#include <vector>

#include "llmc/data/text_docs.h"
#include "llmc/latency/space.h"

namespace llmc {

struct SearchConfig {
  std::string path;  // the config file (relative paths inside resolve against its folder)
  std::string model;
  // data
  // "text:FILE" (resolved path) or "fewshot:TASK" (the task's few-shot split under data_dir); empty:
  // data-free (the model samples its own text).
  std::vector<std::string> data_sources;
  std::string data_dir;  // benchmark data root for fewshot: sources ($LLMC_SHARED/data)
  int64_t seq_len = 128, batch_size = 8, train_sequences = 64, valid_sequences = 16;
  // space + latency
  SearchSpace space;
  std::string lut;  // path; built on the fly when absent
  std::vector<int64_t> lut_tokens{1};
  int64_t lut_context = 512;
  int lut_lm_head_bits = 16;  // lm_head as it will be exported (export --lm-head-bits)
  int lut_repeats = 25;       // samples per entry of a table the search measures itself (lut --repeats)
  double target_ms = -1, target_fraction = 0.5;  // one of them (ms wins when both given)
  // What target_fraction is a fraction of: 0 = the original (every linear 16-bit, full widths);
  // B = uniform B-bit at full widths (the space's group size): the LUT latency of the plain
  // quantization a searched model should beat at equal latency, on whatever machine built the LUT.
  int target_relative_bits = 0;
  int64_t target_tokens = 1;
  // schedule
  int64_t steps = 100;
  double arch_lr = 0.05, weight_lr = 1e-3;
  std::string arch_optimizer = "adam";  // "adam" | "sgd" (plain descent: Adam::set_plain_sgd)
  int64_t lora_rank = 0;  // 0 = frozen weights
  double lambda = 2.0, tau_start = 1.0, tau_end = 0.1;
  bool hard = false, distill = true;
  bool fit_target = true;  // repair an argmax architecture that misses the target (see configs/README.md)
  // How the searched distributions become one architecture: "argmax" (then fit_target) or
  // "knapsack" (nas/knapsack.h: the most likely architecture that meets the target).
  std::string discretize = "argmax";
  // knapsack only: one candidate architecture per weight on the width choices' log-probabilities
  // (knapsack_fit's width_weight); each is scored on the valid split (fake-quant perplexity) and
  // the best is kept. Single-option KL underprices a width cut that meets quantization elsewhere.
  std::vector<double> knapsack_width_weights{1.0};
  // init "sensitivity" + knapsack: passes > 1 measure every option's KL again around the chosen
  // architecture (nas/sensitivity.h, `around`) and solve the knapsack on those; a pass's answer is
  // kept only when its valid perplexity is lower (each pass: one KL measurement, ~a search's).
  int sensitivity_passes = 1;
  uint64_t seed = 0;
  int64_t checkpoint_every = 25;
  int sequential_mid_bits = 4;
  // Initial architecture logits: "uniform" (all 0) or "sensitivity" (nas/sensitivity.h: from the KL
  // of each option alone on one calibration sequence, scaled by 1 / init_scale).
  std::string init = "uniform";
  double init_scale = 1.0;
  std::string mode = "joint";  // joint | sequential | width-only | bits-only
};

SearchConfig load_search_config(const std::string& path);
SearchConfig parse_search_config(const std::string& json_text, const std::string& where, const std::string& base_dir);
// Resolves `p` against the config's folder; "${shared}" expands to llmc::shared_root().
std::string resolve_config_path(const std::string& p, const std::string& base_dir);

// The documents of one of c.data_sources, in order. Throws one line naming the file or task.
std::vector<TextDocument> data_source_documents(const SearchConfig& c, const std::string& source);

}  // namespace llmc
