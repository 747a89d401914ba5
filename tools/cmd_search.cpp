#include <cstdio>
#include <memory>

#include "commands.h"
#include "llmc/core/error.h"
#include "llmc/finetune/dist.h"
#include "llmc/nas/search.h"

namespace llmc::cli {

namespace {
struct SearchArgs {
  std::string config, out = "runs/search", device = "cpu", mode, lut, sensitivity;
  double target_ms = -1;
  int64_t target_tokens = 0;
  bool resume = false, force = false;
};
}  // namespace

Action add_search(CLI::App& app) {
  auto a = std::make_shared<SearchArgs>();
  app.add_option("--config", a->config, "Search config JSON (see configs/README.md)")->required();
  app.add_option("--out", a->out, "Output folder (arch.json, search_log.jsonl, checkpoint/)")->capture_default_str();
  app.add_flag("--resume", a->resume, "Continue from OUT/checkpoint");
  app.add_flag("--force", a->force, "Write into an OUT that holds files search did not write (they are left alone)");
  app.add_option("--mode", a->mode, "Override the config's mode: joint|sequential|width-only|bits-only");
  app.add_option("--target-ms", a->target_ms, "Override the config's target: LUT ms of one step of target.tokens tokens")
      ->check(CLI::PositiveNumber);
  app.add_option("--target-tokens", a->target_tokens, "Override the config's target.tokens (1 = decode)")
      ->check(CLI::PositiveNumber);
  app.add_option("--lut", a->lut, "Override the config's lut: the latency table file (measured and written there when missing)");
  app.add_option("--sensitivity", a->sensitivity,
                 "schedule.init \"sensitivity\": reuse the KL values in this file (written there when missing)");
  app.add_option("--device", a->device, "cpu (the supernet runs on the CPU)")->capture_default_str();
  return [a] {
    if (a->device != "cpu" && a->device != "auto")
      throw Error("--device: the search runs on the CPU in this build (cuda is used only by the kernels)");
    SearchConfig c = load_search_config(a->config);
    if (!a->mode.empty()) {
      if (a->mode != "joint" && a->mode != "sequential" && a->mode != "width-only" && a->mode != "bits-only")
        throw Error("--mode: '" + a->mode + "' is not joint, sequential, width-only or bits-only");
      c.mode = a->mode;
    }
    if (a->target_ms > 0) c.target_ms = a->target_ms;
    if (!a->lut.empty()) c.lut = a->lut;
    if (a->target_tokens > 0) c.target_tokens = a->target_tokens;
    install_search_signal_handlers();
    SearchOptions o;
    o.out_dir = a->out;
    o.resume = a->resume;
    o.force = a->force;
    o.sensitivity_cache = a->sensitivity;
    SearchResult r = run_search(c, o);
    if (r.interrupted) return 130;
    if (!DataParallel::get().is_root()) return 0;  // rank 0 wrote the outputs and prints the result
    std::printf("| mode | target ms | predicted ms | original ms | valid ppl (discretized, fake-quant) | original ppl |\n");
    std::printf("|---|---:|---:|---:|---:|---:|\n");
    std::printf("| %s | %.4f | %.4f | %.4f | %.3f | %.3f |\n", c.mode.c_str(), r.target_ms, r.predicted_ms,
                r.original_ms, r.valid_ppl, r.original_valid_ppl);
    std::printf("arch written to %s/arch.json\n", a->out.c_str());
    return 0;
  };
}

}  // namespace llmc::cli
