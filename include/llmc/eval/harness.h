#pragma once
// `llmcompress eval`: runs a comma list of tasks on one model and collects one JSON result.
// Perplexity tasks (wikitext, wikitext2_gptq, text:FILE) go through evaluate_perplexity; multiple-choice tasks
// (arc_easy, arc_challenge, boolq, hellaswag, piqa, winogrande, openbookqa, mmlu; group reasoning7)
// are defined in tasks.h and scored by loglikelihood.h, as lm-evaluation-harness 0.4 scores them.
#include <string>
#include <vector>

#include "llmc/eval/scoring.h"
#include "llmc/model/causal_lm.h"

namespace llmc {

struct EvalOptions {
  std::vector<std::string> tasks;  // wikitext | text:FILE | a multiple-choice task of tasks.h
  std::string data_dir;            // default: <shared>/data
  int64_t max_length = 0;          // perplexity window; multiple choice: truncation length (0: model max)
  int64_t stride = 0;              // perplexity stride (0: max_length)
  int64_t batch_size = 0;          // perplexity windows (0: 8) / multiple-choice requests (0: 16 with logprobs, else 32) per forward
  int64_t limit = 0;               // first N documents of each task (MMLU: of each subject); 0: all
  int num_fewshot = -1;            // -1: the task's default (0; MMLU 5)
  std::string scorer = "batched";  // batched | naive (one request per forward; reference and benchmark)
  std::string model_path;
  // When set: one JSON line per multiple-choice document, written atomically after the last task
  // (lm-eval's --log_samples, smaller): {"task", "doc" (index in the task's order), "group" (MMLU
  // subject), "gold", "pred", "acc", "acc_norm" (tasks that report it), "ll" (per choice)}. Two
  // models' files pair their documents: `sweep` reports paired differences from them.
  std::string samples_path;
  // The model's scoring fast path (eval/scoring.h), used by the batched scorers and perplexity;
  // empty: forward() + log_softmax. `llmcompress eval` sets it for models on the runtime engine.
  TokenLogprobsFn logprobs;
};

// Returns {"model", "config", "results": {task: {...}}, "average": {...}} as a JSON string. Every
// task's data is read and checked before the model runs; a bad file throws llmc::Error.
std::string run_eval(CausalLM& model, const EvalOptions& opts);
// A markdown table of a run_eval result.
std::string eval_table(const std::string& result_json);
// Splits "a,b,c" and expands groups; throws on unknown task names.
std::vector<std::string> parse_task_list(const std::string& list);

}  // namespace llmc
