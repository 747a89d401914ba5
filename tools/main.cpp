// llmcompress: search, quantize, fine-tune, export, run and evaluate compressed LLMs.
#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "llmc/core/error.h"
#include "llmc/core/log.h"
#include "llmc_kernels/qgemm.h"

int main(int argc, char** argv) {
  CLI::App app{"llmcompress: jointly search widths and bit-widths of an LLM against a latency budget, "
               "then quantize, fine-tune, export, run and evaluate it"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "llmcompress 0.1.0");
  std::string log_level = "info";
  int threads = 0;
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0 = all cores)")->capture_default_str()->check(CLI::NonNegativeNumber);
  int prefill_x_bits = 16;
  app.add_option("--prefill-x-bits", prefill_x_bits,
                 "Activations of our integer prefill kernels (16+ tokens at once: prompts and scoring): 16 = int16 "
                 "per row and group; 8 = int8 per row and group, faster (the products per instruction double) at a "
                 "small accuracy cost (docs/measurements.md); 8 needs AVX-512 VNNI, or AVX2 for 2/3/4-bit weights "
                 "(elsewhere: a warning, and 16)")
      ->capture_default_str()
      ->check(CLI::IsMember({8, 16}));

  std::vector<std::pair<CLI::App*, llmc::cli::Action>> commands;
  auto add = [&](const char* name, const char* desc, llmc::cli::Action (*fn)(CLI::App&)) {
    CLI::App* sub = app.add_subcommand(name, desc);
    commands.emplace_back(sub, fn(*sub));
  };
  add("info", "Show a model's architecture, parameter counts, dtype and tokenizer", llmc::cli::add_info);
  add("generate", "Generate text from a prompt (greedy by default)", llmc::cli::add_generate);
  add("eval", "Evaluate perplexity (wikitext, wikitext2_gptq, text:FILE) and benchmark tasks", llmc::cli::add_eval);
  add("export", "Discretize, quantize (RTN/GPTQ), LoRA fine-tune and export a compressed model", llmc::cli::add_export);
  add("bench", "Measure prefill and decode tokens/s of a model (exported folders run on our kernels)", llmc::cli::add_bench);
  add("lut", "Measure the latency lookup table of a model's search space", llmc::cli::add_lut);
  add("search", "Jointly search widths and bit-widths against a latency target (writes arch.json)", llmc::cli::add_search);
  add("launch", "Run an llmcompress command as N data-parallel ranks (torchrun's environment contract)",
      llmc::cli::add_launch);
  add("sweep", "Run the Pareto study: uniform baselines and every search mode at several targets (resumable)",
      llmc::cli::add_sweep);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    // A data-parallel rank (RANK set by `launch` or torchrun) other than 0 logs warnings only
    // unless --log-level says otherwise; by default the ranks on one machine share its cores.
    const char* rank = std::getenv("RANK");
    const bool quiet_rank = rank && *rank && std::string(rank) != "0" && log_level == "info";
    llmc::setup_logging(quiet_rank ? "warn" : log_level);
    int local = 1;
    if (const char* lws = std::getenv("LOCAL_WORLD_SIZE")) local = std::max(1, std::atoi(lws));
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const int n = threads > 0 ? threads : std::max(1, cores / local);
    at::set_num_threads(n);
    llmc::kernels::set_prefill_x_bits(prefill_x_bits);
    // The setting is only honoured by the int8-x kernels (AVX-512 VNNI; AVX2 for 2/3/4-bit weights);
    // say so instead of letting a user (or a benchmark row) believe int8 activations ran.
    if (const int ran = llmc::kernels::prefill_x_bits_here(); prefill_x_bits == 8 && ran != 8)
      spdlog::warn("--prefill-x-bits 8: this CPU ({}) has no int8-activation prefill kernel (AVX-512 VNNI or AVX2); "
                   "prefill runs with {}-bit activations",
                   llmc::kernels::isa_name(llmc::kernels::best_isa()), ran);
    for (auto& [sub, action] : commands)
      if (sub->parsed()) return action();
  } catch (const llmc::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 1;
}
