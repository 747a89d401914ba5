#pragma once
// Prefill and batch-1 decode timing of a model (what `llmcompress bench` runs), median over
// repeats, optionally next to a LUT's prediction. A RuntimeLlama is timed on its engine (the
// runtime path: engine prefill/decode, thread CPU time too), any other Llama on the libtorch
// reference forward.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "llmc/model/llama.h"

namespace llmc {

struct BenchOptions {
  // Where the model was opened from: the JSON's "model", the size of its files, and (for an
  // exported folder) its arch.json and export_report.json. May name nothing (then no file info).
  std::string model_path;
  int64_t prompt_tokens = 128;  // prefill length (>= 1)
  int64_t new_tokens = 128;     // tokens decoded one at a time after it (>= 1)
  int repeats = 5;              // measured repetitions (>= 1; the median is reported)
  int warmup = 1;               // unmeasured repetitions first (>= 0)
  uint64_t seed = 0;            // of the random prompt
  // Latency table of the model's original shapes (runtime engine only): its prediction for this
  // model (model_path's arch.json, else all widths full at 16 bits) next to the measurement.
  std::string lut_path;
  // Runtime engine only: after the timed repeats, five more prefills of the prompt (the one of median
  // wall time kept) and a decode of new_tokens tokens after the last, with every op timed (rt::OpProfile), per
  // prefill and per token and, with a LUT, next to the LUT's time for the same op (the prefill's where
  // the LUT has its length).
  bool profile = false;
  // Also probe the read-only memory bandwidth at this run's threads (kernels/membw.h, a buffer of
  // 4x the last-level cache, at least 256 MiB) and report the decode's weight reads as % of it.
  bool bandwidth = false;
};

// One row of a profile (BenchResult::profile per decoded token, prefill_profile per prefill).
struct ProfileRow {
  std::string op;  // "linear N=960 K=576 8-bit" or a LUT part ("attention", ...), or "outside the ops"
  double calls = 0;                 // per token (per prefill)
  double us = 0;                    // measured wall time per token (per prefill)
  std::optional<double> lut_us;     // the LUT's time for the same calls (linears: entry x calls)
  std::optional<double> gbps;       // decode linears: weight bytes read / time
};

// BenchOptions::bandwidth.
struct BenchBandwidth {
  double read_gbps = 0;         // the probe's best pass
  double read_median_gbps = 0;  // its median pass
  int64_t probe_bytes = 0;
  double decode_weight_gbps = 0;  // weight_bytes_per_token x decode tokens/s
  double decode_pct_of_read = 0;  // decode_weight_gbps / read_gbps x 100
};

// One predicted-vs-measured comparison, in milliseconds.
struct BenchComparison {
  double predicted = 0, measured = 0, measured_over_predicted = 0;
  std::optional<double> mean_context;  // decode against a LUT: this decode's mean context
  std::optional<int64_t> lut_context;  //   and the LUT's decode context
  std::optional<int64_t> tokens;       // prefill from export_report.json: the report's token count
  // With a LUT: where the predicted time goes (us; LatencyTable::predict_parts), in the order
  // printed: "linears 4-bit", ..., "attention", "norms, SwiGLU, residuals", "embedding, final norm,
  // lm_head"; then "not in the LUT" = measured - predicted (threading, sync, what no entry times).
  std::vector<std::pair<std::string, double>> parts_us;
};

struct BenchPrediction {
  std::string lut;                   // the LUT path, or "export_report.json"
  std::optional<std::string> clock;  // with a LUT: "thread cpu time" | "wall time"
  std::optional<int> lut_threads;    // with a LUT: the threads it was measured with
  std::optional<BenchComparison> decode_ms, prefill_ms;
};

struct BenchResult {
  std::string model;   // BenchOptions::model_path
  std::string engine;  // "runtime" | "torch"
  int threads = 0;
  std::string isa;  // the kernels' ISA path
  // Activations of the prefill kernels on this CPU (kernels::prefill_x_bits_here): the
  // --prefill-x-bits setting where the CPU's int8-x kernel runs (AVX-512 VNNI; AVX2 for 2/3/4-bit
  // weights), else 16 or 32 (fp32 panel).
  int prefill_x_bits = 16;
  int64_t prompt_tokens = 0, new_tokens = 0;
  int repeats = 0;
  double prefill_tokens_per_s = 0, decode_tokens_per_s = 0, decode_ms_per_token = 0;  // from the medians
  std::vector<double> prefill_s, decode_s;  // wall seconds, one per measured repeat
  // Thread CPU seconds per repeat: meaningful (and in the JSON) on the runtime engine with one
  // thread only, where the calling thread does all the work; zeros on the torch path.
  std::vector<double> prefill_cpu_s, decode_cpu_s;
  int64_t model_file_bytes = 0;  // the file, or a folder's .safetensors; -1 when unreadable
  double loadavg_1min = -1;      // the machine's load while measuring; -1 when unknown
  // The process's resident memory after the timed repeats (VmRSS) and its peak (VmHWM, loading
  // included); -1 when unknown (no /proc).
  int64_t rss_bytes = -1, peak_rss_bytes = -1;
  // Runtime engine only (engine == "runtime").
  int64_t weight_bytes_per_token = 0, tiled_copy_bytes = 0;
  int64_t huge_page_bytes = 0;  // packed weights on 2 MiB pages (RuntimeEngine::huge_page_bytes)
  std::optional<BenchPrediction> predicted;  // JSON null when absent
  // BenchOptions::profile: linears by decreasing time, then the other parts, then "outside the
  // ops" (the profiled decode's wall time less every timed op: argmax, timer and loop overhead).
  std::vector<ProfileRow> profile;
  double profile_decode_ms = 0;  // that decode's wall time per token (timers included)
  // The same for the profiled prefill of prompt_tokens tokens (the median of five by wall time).
  std::vector<ProfileRow> prefill_profile;
  double profile_prefill_ms = 0;
  std::optional<BenchBandwidth> bandwidth;
};

// Times `model` as above. Sets the kernels' default thread count to at::get_num_threads() (what it
// reports as threads). Errors (llmc::Error): a bad LUT, or one that does not fit the model or the
// run, thrown before any measuring.
BenchResult run_bench(Llama& model, const BenchOptions& opts);

// `bench --model A --versus B`: two models on the runtime engine timed in turn, token by token
// (each repeat: both prefills, then decode steps A, B, A, B, ...; who goes first alternates between
// repeats), so that the machine's slow phases, which on a shared VM last seconds to minutes and move
// whole runs by 10-70%, fall on both alike. The ratios are per repeat (a / b of that repeat's sums),
// their median reported: the comparison a study's latency criterion needs, steadier than the ratio
// of two separately measured times.
struct BenchVersusResult {
  std::string a, b;  // model paths
  int threads = 0;
  std::string isa;
  int prefill_x_bits = 16;  // as BenchResult::prefill_x_bits
  int64_t prompt_tokens = 0, new_tokens = 0;
  int repeats = 0;
  std::vector<double> a_prefill_s, b_prefill_s, a_decode_s, b_decode_s;  // wall seconds per repeat
  double a_decode_ms_per_token = 0, b_decode_ms_per_token = 0;           // from the medians
  double a_prefill_tokens_per_s = 0, b_prefill_tokens_per_s = 0;
  std::vector<double> decode_ratios, prefill_ratios;  // per repeat, a / b
  double decode_ratio = 0, prefill_ratio = 0;         // their medians
  double loadavg_1min = -1;
};

// Times a against b as above (opts: prompt/new tokens, repeats, warmup, seed; model_path names a).
// Errors (llmc::Error): a model not on the runtime engine, or --lut / --profile / --bandwidth set.
BenchVersusResult run_bench_versus(Llama& a, Llama& b, const std::string& b_path, const BenchOptions& opts);
// The two halves of `bench --versus` as one result of a against b: `ab` timed with a loaded first,
// `ba` with b loaded first (run_bench_versus(b, a, ...)): its repeats join with b's and a's sides
// swapped and its ratios inverted. The load order is worth cancelling: a model timed against itself
// read 1.016-1.049x slower on the side loaded first (Zen 4 VM, 10 repeats each).
BenchVersusResult merge_load_orders(const BenchVersusResult& ab, const BenchVersusResult& ba);
std::string bench_versus_to_json(const BenchVersusResult& r);
std::string bench_versus_to_text(const BenchVersusResult& r);

// `llmcompress bench --json`: the result as pretty-printed JSON (2-space indent, no final newline).
std::string bench_to_json(const BenchResult& r);
// `llmcompress bench`'s text summary (lines ending in '\n').
std::string bench_to_text(const BenchResult& r);

}  // namespace llmc
