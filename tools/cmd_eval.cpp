#include <cstdio>
#include <memory>

#include "commands.h"
#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/eval/harness.h"
#include "llmc/runtime/engine.h"
#include "llmc/runtime/open.h"

namespace llmc::cli {

namespace {
struct EvalArgs {
  std::string model, tasks, output, dtype = "float32", scoring = "fast";
  EvalOptions e;
  bool json = false, allow_past_context = false;
};
}  // namespace

Action add_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  app.add_option("--model", a->model, "Model folder or GGUF file")->required();
  app.add_option("--tasks", a->tasks,
                 "Comma list: wikitext, wikitext2_gptq (GPTQ-style: fixed windows scored alone), wikitext2_llamacpp "
                 "(llama-perplexity's protocol), text:FILE, "
                 "arc_easy, arc_challenge, boolq, hellaswag, piqa, winogrande, "
                 "openbookqa, mmlu, reasoning7 (= the first seven multiple-choice tasks)")
      ->required();
  app.add_option("--data-dir", a->e.data_dir, "Benchmark data root (default: $LLMC_SHARED/data)");
  app.add_option("--max-length", a->e.max_length,
                 "Perplexity window length; multiple-choice inputs are left-truncated to it (default: model context; "
                 "wikitext2_gptq: min(2048, model context); wikitext2_llamacpp: 512, as llama-perplexity -c 512)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--allow-past-context", a->allow_past_context,
               "Allow --max-length beyond the model's context (max_position_embeddings)");
  app.add_option("--stride", a->e.stride, "Tokens predicted per rolling perplexity window (default: max-length)")->check(CLI::NonNegativeNumber);
  app.add_option("--batch-size", a->e.batch_size,
                 "Perplexity windows (default 8) / multiple-choice requests (default 16 with --scoring fast on an "
                 "exported folder, where a row holds a context and all its choices; else 32) per forward pass")
      ->check(CLI::PositiveNumber);
  app.add_option("--limit", a->e.limit,
                 "Use only the first N documents of each task (MMLU: of each subject; wikitext2_gptq / "
                 "wikitext2_llamacpp: the first N windows / chunks; 0 = all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--num-fewshot", a->e.num_fewshot,
                 "Solved examples before each question, from the task's train/dev split (default: 0; mmlu 5)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--scorer", a->e.scorer,
                 "batched (shared-context KV cache, sorted batches) | naive (one request per forward; reference)")
      ->capture_default_str()
      ->check(CLI::IsMember({"batched", "naive"}));
  app.add_option("--scoring", a->scoring,
                 "On the runtime engine (exported folders): fast (a context and all its continuations in one row, "
                 "as branches; lm_head and log-softmax on the scored positions only, linears in 256-row blocks) | "
                 "legacy (continuations from copies of the context's cache, full logits from forward(), one GEMM "
                 "per linear: the path before, for A/B runs; the same accuracies, log-likelihoods within ~1e-2: "
                 "other fp32 summation orders, amplified by the int16 rounding of activations)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fast", "legacy"}));
  app.add_option("--dtype", a->dtype, "Compute dtype: float32 | bfloat16")->capture_default_str();
  app.add_option("--output", a->output, "Write the JSON result to this file (atomically)");
  app.add_option("--samples", a->e.samples_path,
                 "Write one JSON line per multiple-choice document to this file (atomically): task, doc, gold, pred, "
                 "acc, acc_norm, per-choice log-likelihoods; two models' files pair their documents");
  app.add_flag("--json", a->json, "Print JSON instead of a table");
  return [a] {
    a->e.tasks = parse_task_list(a->tasks);
    a->e.model_path = a->model;
    // Fail before hours of work, not after: the outputs must be writable now.
    for (const auto& [flag, path] : {std::pair<const char*, std::string>{"--output", a->output},
                                     {"--samples", a->e.samples_path}}) {
      if (path.empty()) continue;
      const std::string dir = parent_dir(path);
      if (!dir_exists(dir)) fail("{}: folder {} does not exist", flag, dir);
      try {
        check_writable(path);
      } catch (const Error& e) {
        fail("{}: {}", flag, e.what());
      }
    }
    auto m = open_model(a->model, LoadOptions{a->dtype, true});
    const int64_t ctx = m->config().max_position_embeddings;
    if (a->e.max_length > ctx && !a->allow_past_context)
      fail("--max-length {}: longer than the model's context of {} tokens (add --allow-past-context to score "
           "past it anyway)",
           a->e.max_length, ctx);
    if (auto* rt = dynamic_cast<RuntimeLlama*>(m.get())) {
      if (a->scoring == "fast") {
        a->e.logprobs = [rt](const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& key_mask,
                             KVCache* cache, const std::vector<int64_t>& rows, const std::vector<int64_t>& targets,
                             const at::Tensor& segments) {
          return rt->token_logprobs(tokens, positions, key_mask, cache, rows, targets, segments);
        };
      } else {
        rt->engine().set_row_block(0);
        rt->engine().set_zero_caches(true);
      }
    }
    std::string result = run_eval(*m, a->e);
    if (!a->output.empty()) write_file_atomic(a->output, result + "\n");
    std::fputs(a->json ? (result + "\n").c_str() : eval_table(result).c_str(), stdout);
    return 0;
  };
}

}  // namespace llmc::cli
