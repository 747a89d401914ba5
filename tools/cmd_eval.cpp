#include <cstdio>
#include <memory>

#include "commands.h"
#include "llmc/core/files.h"
#include "llmc/eval/harness.h"
#include "llmc/model/load.h"

namespace llmc::cli {

namespace {
struct EvalArgs {
  std::string model, tasks, output, dtype = "float32";
  EvalOptions e;
  bool json = false;
};
}  // namespace

Action add_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  app.add_option("--model", a->model, "Model folder or GGUF file")->required();
  app.add_option("--tasks", a->tasks, "Comma list: wikitext, text:FILE")->required();
  app.add_option("--data-dir", a->e.data_dir, "Benchmark data root (default: $LLMC_SHARED/data)");
  app.add_option("--max-length", a->e.max_length, "Perplexity window length (default: model context)")->check(CLI::NonNegativeNumber);
  app.add_option("--stride", a->e.stride, "Tokens predicted per perplexity window (default: max-length)")->check(CLI::NonNegativeNumber);
  app.add_option("--batch-size", a->e.batch_size, "Sequences per forward pass")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--limit", a->e.limit, "Use only the first N documents of each task (0 = all)")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--dtype", a->dtype, "Compute dtype: float32 | bfloat16")->capture_default_str();
  app.add_option("--output", a->output, "Write the JSON result to this file (atomically)");
  app.add_flag("--json", a->json, "Print JSON instead of a table");
  return [a] {
    a->e.tasks = parse_task_list(a->tasks);
    a->e.model_path = a->model;
    auto m = load_llama(a->model, LoadOptions{a->dtype, true});
    std::string result = run_eval(*m, a->e);
    if (!a->output.empty()) write_file_atomic(a->output, result + "\n");
    std::fputs(a->json ? (result + "\n").c_str() : eval_table(result).c_str(), stdout);
    return 0;
  };
}

}  // namespace llmc::cli
