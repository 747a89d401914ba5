#pragma once
// The search loop (method: "Loss and schedule"): alternating LoRA-weight updates on the train split
// and architecture updates on the valid split (first-order DARTS), Gumbel temperature annealed
// exponentially from tau_start to tau_end, hinge latency loss lambda * max(0, E[lat]/T - 1),
// task loss = KL to the original model (distill) or next-token cross-entropy.
//
// Output folder: arch.json, search_log.jsonl (one line per step), summary.json, lut.json (when
// the config names no table: measured on the first run, read by later ones), search.lock and
// checkpoint/ (state.safetensors + state.json, replaced atomically every checkpoint_every steps and
// on SIGINT/SIGTERM). --resume continues from checkpoint/ and ends with the same arch.json and
// alphas as an uninterrupted run (same seed and threads). The folder's rules (nothing foreign, one
// run at a time, what a resume checks first): nas/search_files.h.
#include <cstdint>
#include <functional>
#include <string>

#include "llmc/model/arch.h"
#include "llmc/nas/search_config.h"

namespace llmc {

struct SearchOptions {
  std::string out_dir = "runs/search";
  bool resume = false;
  bool force = false;  // write into an out_dir that holds files search did not write (left alone)
  bool progress = true;
  // schedule.init "sensitivity": a file of KL values to reuse for the first phase (read when it
  // exists and holds this search's choices, else measured and written there). The values depend only
  // on the model, the space, the data and the seed, so the searches of a study share one measurement.
  std::string sensitivity_cache;
  // Called after every completed step (tests use it to request a stop at a chosen step).
  std::function<void(int64_t step)> on_step;
};

struct SearchResult {
  Arch arch;
  bool interrupted = false;  // stopped by a signal / request; checkpoint written
  double target_ms = 0, predicted_ms = 0, original_ms = 0, fastest_ms = 0;
  double argmax_predicted_ms = 0;  // the argmax architecture, before fit_target's repair
  int fit_changes = 0;             // choices fit_target changed (0: argmax met the target or fit_target off)
  double valid_ppl = 0;        // discretized, fake-quantized subnet on the valid split
  // knapsack: every distinct candidate (schedule.knapsack_width_weights), in weight order.
  struct Candidate {
    double width_weight = 1, predicted_ms = 0, valid_ppl = 0;
    int lm_head_bits = 0;  // space.lm_head_bits: this candidate's lm_head (0: not searched)
    int width_cuts = 0;  // layer parts (attention, MLP) below full width
    // A uniform-bits architecture at full width: scored beside the knapsack's answers (width_weight 0),
    // or a knapsack answer that is one; 0: neither.
    int uniform_bits = 0;
    bool chosen = false;
  };
  std::vector<Candidate> candidates;
  // schedule.sensitivity_passes > 1: each later pass's valid ppl and whether it replaced the answer.
  struct Pass {
    int pass = 0;
    double valid_ppl = 0;
    bool kept = false;
  };
  std::vector<Pass> passes;
  double original_valid_ppl = 0;
  int64_t steps_done = 0;
};

SearchResult run_search(const SearchConfig& config, const SearchOptions& opts);

// Asks a running search to checkpoint and return at the end of the current step
// (async-signal-safe; the CLI installs it for SIGINT and SIGTERM).
void request_search_stop();
void install_search_signal_handlers();

}  // namespace llmc
