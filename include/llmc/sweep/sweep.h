#pragma once
// `llmcompress sweep`: the Pareto study of one model. Every method goes through the same pipeline,
// each stage a run of this program (so a crash or kill -9 loses at most the stage in flight):
//
//   lut                      one latency table for the whole study (DIR/lut.json)
//   uniform-<q>-b<B>         export --arch uniform:B --quant q  -> bench -> eval
//   uniform-<q>-ft-b<B>      the same with the search points' fine-tune (finetuned_baselines)
//   <mode>-t<ms>             search --mode <mode> --target-ms <ms> -> export (quant, fine-tune) -> bench -> eval
//   report                   DIR/report.json, report.md, pareto.svg
//
// DIR/manifest.json records each finished stage (written atomically after the stage's outputs
// exist); running the same command again continues where it stopped. A search point whose search
// found the architecture of a finished point (same widths, bits, channel orders, group size) shares
// that point's export (a link), bench and evals instead of making them again (its manifest stages
// say "same_arch_as"). A search killed mid-way
// resumes from its checkpoint. The manifest also fixes the targets, so a resumed study uses the
// same ones. The manifest fingerprints the config in two parts: when only the part the search
// points depend on changed (the base search config, the fine-tune), --restart-searches moves the
// finished search points aside (DIR/stale/) and keeps the baselines; any other change is refused.
//
// The lut and bench stages measure wall-clock time. With LLMC_SWEEP_LOCK=FILE in the environment
// the sweep holds an exclusive flock on FILE while they run, so other jobs on the machine that take
// the same lock (`flock FILE make ...`) wait instead of skewing the timings.
//
// sweep.json (paths relative to the file's folder):
// {
//   "search": "smollm2-135m.json",      // base search config: model, data, space, schedule, lut_settings
//   "lut": "lut.json",                   // optional: use this latency table instead of measuring one
//   "threads": 2,                        // --threads of every stage
//   "export": {"quant": "gptq", "group_size": 64, "lm_head_bits": 8, "dense_dtype": "bfloat16",
//              "finetune_steps": 100, "distill": true},      // search points (baselines: none)
//   "baselines": {"rtn": [8, 4, 3], "gptq": [8, 4, 3]},
//   "finetuned_baselines": {"gptq": [4]},  // optional: uniform points fine-tuned like the search
//                                        // points (the control for "does the search or the fine-tune win?");
//                                        // a running study takes new ones, as it takes extra targets
//   "modes": ["joint", "sequential", "width-only", "bits-only"],
//   "targets": {"count": 4},             // or {"ms": [4.1, 4.4, ...]}: LUT decode ms (target.tokens 1)
//                                        // "extra_ms": [5.85]: more targets, added to either
//                                        // "at_uniform": [4, 8]: more targets, each exactly the LUT decode
//                                        // time of the uniform baseline at those bits (compare at its cost);
//                                        // "count": 0 with these or extra_ms: no spread targets
//   "bench": {"prompt_tokens": 96, "new_tokens": 64, "repeats": 3},
//   "eval": {"tasks": "arc_easy,arc_challenge,boolq,hellaswag,piqa,winogrande", "limit": 500,
//            "ppl": {"task": "wikitext2_gptq", "max_length": 512, "limit": 64}}   // a second eval run
// The perplexity run is separate so its window length and count do not follow the multiple-choice
// limit ("ppl": null or absent = none).
// }
// {"count": N} spreads N targets evenly from 0.85 x the LUT-predicted decode latency of the fastest
// uniform baseline to that of the uniform 8-bit one (both ends included), once those are measured.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace llmc {

struct SweepConfig {
  std::string path;           // the sweep file
  std::string search_config;  // resolved path of the base search config
  std::string model;          // from the search config
  std::string lut;            // a LUT file to copy into DIR ("" = measure one at the start)
  int threads = 2;
  std::string quant = "gptq";
  int group_size = 0;  // 0: the search space's
  int lm_head_bits = 16;
  std::string dense_dtype = "float32";
  int64_t finetune_steps = 100;
  bool distill = true;
  std::vector<std::pair<std::string, int>> baselines;  // (rtn | gptq, bits)
  std::vector<std::pair<std::string, int>> finetuned_baselines;  // the same, fine-tuned as the search points
  std::vector<std::string> modes;
  std::vector<double> targets_ms;  // explicit targets; empty: target_count spread (see above)
  std::vector<double> extra_targets_ms;  // added to the others (a running study takes new ones)
  // Added too: each the LUT-predicted decode ms of the uniform baseline at these bits, to the last
  // bit, fixed in the manifest ("uniform_targets_ms") once that baseline is benched.
  std::vector<int> target_uniform_bits;
  int target_count = 4;  // 0: none spread (only ms, extra_ms, at_uniform)
  int64_t prompt_tokens = 96, new_tokens = 64;
  int bench_repeats = 3;
  std::string eval_tasks = "arc_easy,arc_challenge,boolq,hellaswag,piqa,winogrande";
  int64_t eval_limit = 500;
  std::string ppl_task;  // "" = no perplexity run
  int64_t ppl_max_length = 0, ppl_limit = 0;  // 0: eval's defaults
  std::string canonical_json() const;  // every setting that affects results (the manifest's fingerprint)
  // The part of canonical_json() that only the search points depend on (the base search config and
  // their fine-tune), and the rest (which the baselines and the targets depend on too).
  std::string search_json() const;
  std::string common_json() const;  // sweep_common_json(canonical_json())
};

// The common part (SweepConfig::common_json) of a canonical_json() text, such as the one a manifest
// recorded when its study started. The one place that says which settings only the search points
// depend on, so a manifest's stale check and the config always agree. "" when the text is not a
// canonical config (a corrupt or foreign manifest), which then matches no config.
std::string sweep_common_json(const std::string& canonical_json);
// A canonical_json() text without the lists of points: baselines, fine-tuned baselines, modes and
// extra targets ("" when it is not one). Two configs whose texts agree here describe the same study,
// whatever points each lists.
std::string sweep_study_json(const std::string& canonical_json);

// Errors: one line naming the file and the key.
SweepConfig load_sweep_config(const std::string& path);
SweepConfig parse_sweep_config(const std::string& json_text, const std::string& where, const std::string& base_dir);

struct SweepOptions {
  std::string out;                // DIR
  std::string exe;                // the llmcompress binary stages run ("" = this program)
  bool dry_run = false;           // print the stages and their commands, run nothing
  std::string machine;            // recorded in the report ("" = the CPU's name)
  // Only these search points (names as in the report, e.g. "joint-t6.110"); empty = all. The
  // baselines always run first (the targets depend on them).
  std::vector<std::string> points;
  // The base search config (or the search points' fine-tune) changed since the study started: move
  // the finished search points to DIR/stale/ and redo them, keeping the baselines. Without it such a
  // study is refused.
  bool restart_searches = false;
  // Stages to run again (names as in the manifest, e.g. "uniform-gptq-b4/eval", or fnmatch patterns
  // such as "*/eval"): each matched stage leaves the manifest before the study continues, an export
  // with the bench, eval and ppl stages that read it. Only export, bench, eval and ppl stages (a
  // search: restart_searches; the lut: another DIR).
  std::vector<std::string> redo;
};

// The stages are processes of their own, and libgomp reads OMP_WAIT_POLICY when it loads: unset,
// export's fine-tune runs on one torch thread (finetune/qalora.cpp). run_sweep and rebench_sweep
// set it to PASSIVE for them, as scripts/common.sh does for the scripts; a value already set is kept.
void set_stage_environment();

// Targets just below a uniform baseline's LUT-predicted decode time (within 0.1%): a search there
// cannot return that baseline's architecture, which the table prices a hair above the target (the
// Xeon study's 6.478 ms, uniform 8-bit's 6.478236 rounded, bought 209 linears at 8 bits and one at
// 4). One message per such target, naming the baseline and the time to give instead.
// baselines: (name, LUT-predicted decode ms).
std::vector<std::string> targets_just_below(const std::vector<double>& targets,
                                            const std::vector<std::pair<std::string, double>>& baselines);

// Runs every stage not yet in DIR/manifest.json, then writes the report. Returns 0 when the study is
// complete; throws llmc::Error (naming the stage and its log) when a stage fails.
int run_sweep(const SweepConfig& config, const SweepOptions& opts);

// Benches every point whose bench stage is done again, `rounds` times in one period, points
// alternated within each round (holding $LLMC_SWEEP_LOCK throughout when set); each point's
// bench.json becomes its median-decode round, with "rounds_decode_ms" listing all of them
// (points/NAME/bench-rK.json keep every round). Each round's predictions come from a latency table
// measured at the start of that round (DIR/lut-rebench-rK.json; DIR/lut.json when the config gives
// its own table), since the machine's speed drifts from minute to minute. Then writes the report.
// rounds >= 1.
void rebench_sweep(const SweepConfig& config, const SweepOptions& opts, int rounds);

// The (joint, baseline) pairs sweep --versus times: a joint point goes with each baseline whose
// measured decode time (bench.json) or LUT-predicted one it is within 25% of (one noisy bench must
// not hide a point the table puts next to the baseline: the Zen 4 study's joint-t4.220 was), and
// every baseline gets its nearest joint point by measured time in any case. predicted_ms <= 0:
// unknown (not used). Pairs in the order of `points` (baselines outer).
struct VersusPoint {
  std::string name;
  bool baseline = false;  // a uniform baseline (else a joint point)
  double measured_ms = 0, predicted_ms = 0;
};
std::vector<std::pair<std::string, std::string>> versus_pairs(const std::vector<VersusPoint>& points);

// Times each benched joint point against the uniform baselines versus_pairs pairs it with
// with `bench --versus`: the two
// exports in turn, token by token, `repeats` repeats (half with each loaded first), written to
// DIR/points/JOINT/versus-BASELINE.json (points without an export here are timed on timing
// exports, as --rebench does). The report's comparison of such a pair takes its decode ratio from
// there. Then writes the report. repeats >= 2.
void versus_sweep(const SweepConfig& config, const SweepOptions& opts, int repeats);

// The report of what DIR holds now (points whose eval is not done are left out):
// report.json (docs in the function's source), report.md, pareto.svg.
void write_sweep_report(const SweepConfig& config, const SweepOptions& opts);

// The study's comparisons from report.json's points (each: name, method, target_ms for search
// points, decode_ms, acc_avg, acc_stderr, wikitext2_ppl, and "samples": the eval's per-document
// file, when it was written). One entry per uniform baseline and per other search mode at a joint
// point's target:
//   {"kind": "baseline" | "mode", "a" (joint point), "b", "a_decode_ms", "b_decode_ms",
//    "delta_acc" (a - b, mean over tasks), "stderr", "paired", "docs", "same_arch" (one point shares
//    the other's results: the searches found the same architecture), "delta_ppl_pct" (or null)}
// Every entry holds "decode_ratio" (a / b, measured: where a carries "versus": {b's name:
// {"decode_ratio", "decode_ratios"}} (sweep --versus), that paired measurement, its repeats in
// "decode_ratio_versus"; else where both points carry "rounds_decode_ms" of the same `sweep
// --rebench` rounds (>= 3), the median of the per-round ratios, listed in "decode_ratio_rounds";
// else the ratio of the two decode_ms). Baseline entries also hold
// "criterion", issue 16's test of a
// joint point against a baseline, both clauses "at least as accurate" (delta_acc >= 0 and WikiText-2
// at most 2% higher): "equal_latency" (ratio within 5% of 1), "faster" (ratio below 0.95) or
// "not_met". The entry is the joint point that meets it with the largest delta_acc, else the one
// nearest in measured decode.
// paired: both points have per-document scores for the same documents; the stderr is then that of
// the per-document differences (sqrt(sum over tasks se_t^2) / tasks, se_t = sample stderr of a - b
// over task t's documents), far tighter than the unpaired sqrt(se_a^2 + se_b^2) used otherwise.
nlohmann::ordered_json sweep_comparisons(const nlohmann::ordered_json& points);

// A Pareto plot as SVG text: x = decode ms, y = accuracy; one series (polyline) per method, methods
// named "uniform-*" drawn as single points; each point labelled by what follows the last '-' of its
// label (b4, t6.110). points: (method, label, x, y, y_err).
struct PlotPoint {
  std::string method, label;
  double x = 0, y = 0;
  double y_err = 0;  // drawn as a vertical bar y +- y_err (the accuracy's standard error); 0: none
};
std::string pareto_svg(const std::vector<PlotPoint>& points, const std::string& title, const std::string& x_label,
                       const std::string& y_label);

}  // namespace llmc
