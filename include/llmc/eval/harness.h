#pragma once
// `llmcompress eval`: runs a comma list of tasks on one model and collects one JSON result.
#include <string>
#include <vector>

#include "llmc/model/causal_lm.h"

namespace llmc {

struct EvalOptions {
  std::vector<std::string> tasks;  // wikitext | text:FILE | (reasoning tasks, see tasks/)
  std::string data_dir;            // default: <shared>/data
  int64_t max_length = 0;          // perplexity window (0: model max_position_embeddings)
  int64_t stride = 0;              // perplexity stride (0: max_length)
  int64_t batch_size = 8;
  int64_t limit = 0;               // 0: all documents
  int num_fewshot = -1;            // -1: the task's default
  std::string model_path;
};

// Returns {"model", "config", "results": {task: {...}}, "average": {...}} as a JSON string.
std::string run_eval(CausalLM& model, const EvalOptions& opts);
// A markdown table of a run_eval result.
std::string eval_table(const std::string& result_json);
// Splits "a,b,c" and expands groups; throws on unknown task names.
std::vector<std::string> parse_task_list(const std::string& list);

}  // namespace llmc
