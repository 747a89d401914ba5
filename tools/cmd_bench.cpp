// bench: prefill and batch-1 decode throughput of a model, median over repeats (latency/bench.h).
#include <algorithm>
#include <cstdio>
#include <memory>

#include "commands.h"
#include "llmc/core/files.h"
#include "llmc/latency/bench.h"
#include "llmc/model/load.h"
#include "llmc/runtime/open.h"

namespace llmc::cli {

namespace {

struct BenchArgs {
  BenchOptions opts;
  std::string engine = "auto", output, versus;
  bool json = false;
};

// The result: JSON to --output (atomically) and, with --json, to stdout; else the text summary.
template <class Text>
void emit(const BenchArgs& a, const std::string& json, Text text) {
  if (!a.output.empty()) write_file_atomic(a.output, json + "\n");
  if (a.json)
    std::puts(json.c_str());
  else
    std::fputs(text().c_str(), stdout);
}

}  // namespace

Action add_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  BenchOptions& o = a->opts;
  app.add_option("--model", o.model_path, "Model: exported folder, HF folder or GGUF file")->required();
  app.add_option("--prompt-tokens", o.prompt_tokens, "Prompt length for prefill")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--new-tokens", o.new_tokens, "Tokens decoded one at a time")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--repeats", o.repeats, "Measured repetitions (the median is reported)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "Unmeasured repetitions first")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--engine", a->engine, "auto (runtime for exported folders, else torch) | runtime | torch")->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of the random prompt")->capture_default_str();
  app.add_flag("--json", a->json, "Print JSON");
  app.add_option("--output", a->output, "Also write the JSON result to this file (atomically)");
  app.add_option("--lut", o.lut_path,
                 "Latency table of the model's original shapes: print its prediction for this model (the "
                 "exported folder's arch.json, else all widths full at 16 bits) next to the measurement");
  app.add_flag("--profile", o.profile,
               "After the timed repeats, decode once more and prefill five more times with every op timed and "
               "print where a token's and a (median) prefill's time goes (next to the LUT's times with --lut); runtime "
               "engine only");
  app.add_flag("--bandwidth", o.bandwidth,
               "Also probe the read-only memory bandwidth (a buffer of 4x the last-level cache) at these threads "
               "and print the decode's weight reads as % of it (and each linear's with --profile)");
  app.add_option("--versus", a->versus,
                 "A second model (runtime engine): time both in turn, token by token, and print their ratio per "
                 "repeat (median, range); steadier than two separate runs on a machine whose speed drifts");
  return [a] {
    const EngineChoice choice = parse_engine(a->engine);
    LoadOptions lo;
    lo.need_tokenizer = false;
    auto model = open_model(a->opts.model_path, lo, choice);
    if (!a->versus.empty()) {
      // Half the repeats with each model loaded first (merge_load_orders says why).
      BenchOptions o1 = a->opts, o2 = a->opts;
      o1.repeats = (a->opts.repeats + 1) / 2;
      o2.repeats = std::max(1, a->opts.repeats - o1.repeats);
      o2.model_path = a->versus;
      BenchVersusResult ab;
      {
        auto other = open_model(a->versus, lo, choice);
        ab = run_bench_versus(*model, *other, a->versus, o1);
      }
      model.reset();
      auto other = open_model(a->versus, lo, choice);
      auto again = open_model(a->opts.model_path, lo, choice);
      const BenchVersusResult r = merge_load_orders(ab, run_bench_versus(*other, *again, a->opts.model_path, o2));
      emit(*a, bench_versus_to_json(r), [&] { return bench_versus_to_text(r); });
      return 0;
    }
    const BenchResult r = run_bench(*model, a->opts);
    emit(*a, bench_to_json(r), [&] { return bench_to_text(r); });
    return 0;
  };
}

}  // namespace llmc::cli
