#pragma once
// Latency lookup table (LUT): measured latency of every linear shape a search space can produce for
// one model, at every bit width and token count, plus the per-layer and per-model fixed costs.
// `llmcompress lut` builds it (build_lut_json); `search` and `run` read it (LatencyTable).
//
// lut.json (documented in configs/README.md):
// {
//   "format": "llmcompress-lut", "version": 3,
//   "device": "cpu (Intel(R) Xeon(R) ...)", "threads": 2, "kernel_version": "runtime-ops-3 avx512",
//   "shapes_hash": "0123456789abcdef",            // llmc::shapes_hash(model, space)
//   "model": {"hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
//             "head_dim", "vocab_size", "tie_word_embeddings"},
//   "space": {...canonical space JSON...}, "tokens": [1, 128], "context": 512, "lm_head_bits": 16,
//   "linears": [{"N", "K", "bits", "group", "M", "us"}],   // bits 16: dense fp32, group 0
//   "attention": [{"kv_heads", "M", "us"}],
//   "layer_fixed": [{"M", "us", "attn_us", "mlp_us"}],      // us = attn_us + mlp_us
//   "model_fixed": [{"M", "us"}],
//   "build": {...}                                          // informational (timing settings)
// }
// All times are microseconds for one forward step of M tokens (batch 1), from `repeats` samples taken
// in interleaved passes: with one thread the median of the timing thread's CPU time, with more the
// 10th percentile of the wall times (see Measurer in lut_build.cpp).
//
// Every entry times the runtime engine's own functions (llmc/runtime/ops.h) with the LUT's thread
// count, so the table predicts `bench` / `generate` on an exported model:
//   linears     rt::linear: bits 2/3/4/8 packed (kernels::qgemm_cpu, group effective_group(K,
//               space.group_size)), bits 16 dense fp32. Besides every single linear, the stacked
//               q|k|v (N = (g+2) h hd) and gate|up (N = 2w) matrices the runtime runs as one call
//               when their bits agree. Weights rotate through a buffer the size of the whole
//               model's linears at that bit width (+ lm_head): each call reads weights that were
//               last touched a full forward ago, as in a real run (cache-resident for tiny
//               models, streamed from memory for large ones).
//   attention   per KV-group count h: split of the stacked q|k|v rows, RoPE on the h*g query and
//               h key heads, KV-cache append, causal attention (positions: lut_attention_span).
//   layer_fixed attn_us: input RMSNorm + residual add; mlp_us: post-attention RMSNorm, SwiGLU
//               (at the full MLP width: an upper bound for narrower layers) and residual add.
//   model_fixed embedding rows, final RMSNorm and lm_head (vocab x hidden at lm_head_bits) for the
//               last position only (what prefill and decode compute). With space.lm_head_bits, the
//               lm_head at each of those bits is also a linear entry (M 1): an arch with another
//               lm_head width is priced model_fixed - lm_head(lm_head_bits) + lm_head(its bits).
#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "llmc/latency/space.h"
#include "llmc/model/config.h"
#include "llmc/model/arch.h"

namespace llmc {

constexpr const char* kLutFormat = "llmcompress-lut";
// 3: attention entries with M > 1 are a prompt from an empty cache (lut_attention_span).
constexpr int kLutVersion = 3;
// Version of the timing method + kernels; the LUT records it followed by the CPU ISA path used
// (e.g. "runtime-ops-2 avx512"). Bump when the kernels or what an entry measures change.
// 4: 2/3-bit linears at M < 16 read a row-tiled copy (x-table kernel, kernels/qtiled.h);
//    attention scores by GEMV, vector exp in softmax and SwiGLU.
// 5: AVX2 GEMMs on int16 x (vpmaddwd): decode 1.1-3.6x faster by width (4 bit now faster than 8).
// 6: AVX-512 VNNI int16 decode kernel (Isa::kAvx512Vnni); an entry's calls read regions
//    kLutRegionGap apart, no longer adjacent ones.
// 7: 4-bit linears at M < 16 read a row-tiled copy on AVX-512 VNNI (the 4-bit tile kernel).
// 8: each window's entries read from their own span with one cursor (lut_spans): 8-bit entries
//    timed from cache before; decode entries calibrated to whole-model decodes (LutOptions::calibrate);
//    the default int16-x prefill on AMX tiles.
// 9: weights on huge pages, the engine's and the timing buffer's (kernels/weight_memory.h); the decode
//    calibration's widths alternated over 5 rounds.
// 10: the engine's 8-bit (every non-tiled) matrices copied into its huge-page weight buffer too
//    (uniform 8-bit decode 1.1-1.2x faster): the decode calibration's 8-bit scale changes.
// 11: the AMX prefill kernel rebuilt (x as the A tiles, weights as B, sums in registers) and the
//    row-wise ops (RMSNorm, SwiGLU, residual add) on threads / in vector lanes: prefill entries
//    (M > 1) 1.2-1.4x faster; decode entries unchanged.
// 12: attention's inputs (split, RoPE, cache append) on threads, attention of one sequence in query
//    chunks on threads: 2-thread prefill entries faster (whole prefill 1.05-1.08x); results unchanged.
// 13: AMX prefill with integer zeros subtracted from the codes (no fp32 zero term): prefill entries
//    1.05-1.09x faster at 1 thread.
// 14: AMX prefill's tile stores after the next group's products, its scales and zeros read as
//    vectors: prefill entries ~1.1x faster at 1 thread; decode entries unchanged.
// 15: decode attention prefetches the cached keys and values (~25% faster at 1 thread); tasks of a
//    GEMM split the rows evenly where they can (units_per_task): 2-thread decode of the 576-row
//    linears ~4-8% faster.
// 16: 2- and 3-bit prefill on the integer kernels (x rounded to int16 as at 4 bits; was the fp32
//    panel): those prefill entries 2.6-2.8x faster on AMX tiles, 1.4x with VNNI alone; the AMX
//    kernel's x rounding ~1.2x faster.
// 17: AVX2: 4-bit matrices held and decoded in the row-tiled layout (decode GEMVs ~1.3-1.5x faster
//    from memory), the int16 prefill kernel on 6 weight rows (~1.2x faster).
constexpr const char* kLutKernelVersion = "runtime-ops-17";

// One linear GEMM the search space can produce: y (M, N) = x (M, K) W^T at `bits`.
// group: effective_group(K, space.group_size) for bits < 16, 0 for the dense 16-bit path.
struct LutLinearShape {
  int64_t N = 0, K = 0;
  int bits = 16;
  int group = 0;
  int64_t M = 1;
  bool operator==(const LutLinearShape& o) const {
    return N == o.N && K == o.K && bits == o.bits && group == o.group && M == o.M;
  }
  bool operator<(const LutLinearShape& o) const;
};

// Every linear shape of `space` for `model` (all layers, KV and MLP choices, bit widths) at every
// token count, deduplicated and sorted (by M, bits, N, K). Zero-width choices produce no shape.
std::vector<LutLinearShape> lut_linear_shapes(const ModelConfig& model, const SearchSpace& space,
                                              const std::vector<int64_t>& tokens);

// The attention an entry of M tokens times: M = 1 is one decode step after `context` - 1 cached
// positions (it attends over `context`); M > 1 is a prompt of M tokens from an empty cache (causal
// over M positions), as `bench`/`generate` prefill it. Before kernel version runtime-ops-3 the M > 1
// entries attended over max(context, M) positions (a chunk at the end of a long context), which
// over-predicted a 128-token prefill at context 192 by ~20%.
struct LutAttentionSpan {
  int64_t positions = 0;  // cache length after the step (T)
  int64_t past = 0;       // positions cached before it (T - M)
};
LutAttentionSpan lut_attention_span(int64_t M, int64_t context);

// Model shapes for `lut --model SPEC`: "synthetic:1b" (Llama-3.2-1B shapes: hidden 2048, MLP 8192,
// 16 layers, 32 heads, 8 KV heads, head_dim 64, vocab 128256, tied embeddings), "synthetic:tiny"
// (hidden 32, 2 layers: for tests), a Hugging Face folder (config.json only is read) or any file
// load_llama() reads (GGUF).
ModelConfig lut_model_config(const std::string& spec);

// The range of LutOptions::repeats a user may ask for (lut --repeats, a search config's
// lut_settings.repeats): fewer than 20 samples make a table's prices too noisy to search with.
constexpr int kLutMinRepeats = 20, kLutMaxRepeats = 100000;

struct LutOptions {
  std::string device = "auto";        // auto | cpu | cuda (cuda: see build_lut_json)
  std::vector<int64_t> tokens{1, 128};  // token counts M (distinct, >= 1)
  int64_t context = 512;              // KV-cache positions a decode step (M = 1) attends over
  int repeats = 25;                   // timed samples per entry (>= 1; users: kLutMinRepeats..)
  // Samples are taken in this many interleaved passes over all entries; 0 = one sample per pass
  // (`repeats` passes). Each pass meets the machine in another state (clock, caches, neighbours):
  // on a 2-core VM, 25 passes of one sample halved the build-to-build spread of 5 passes of five.
  int passes = 0;
  int threads = 0;                    // 0 = at::get_num_threads(); used by ATen and qgemm_cpu
  int64_t max_buffer_mib = 1024;      // cap of the rotating weight buffer (one copy may exceed it)
  int lm_head_bits = 16;              // lm_head as exported (export --lm-head-bits): 16 = dense fp32
  double min_sample_us = 500;         // a sample averages back-to-back calls up to this long
  // An entry's time from its samples: "auto" = the median thread CPU time at one thread, the 10th
  // percentile of wall times at more (lut_build.cpp says why); "median" = the median wall time at
  // more threads (what a whole decode meets on a machine whose speed varies from ms to ms).
  std::string statistic = "auto";
  // Scale the decode (M = 1) linear entries of each bit width every layer may take (but 16) so the
  // table predicts a whole-model decode of the uniform model of that width, measured right after
  // the entries (lut_calibrate.cpp); the scales go to "build"."calibration". Needs M = 1 in tokens.
  bool calibrate = true;
  bool progress = true;               // progress bar / log lines on stderr
  std::string model_name;             // recorded in "build" (informational)
};

// Where the calls timing the LUT's entries read their weights. Entries of one window (the bytes a
// real forward reads between two reads of the same linear: the full-width model at that bit width
// plus the lm_head) share one span of the timing buffer, `window` bytes long, and one cursor: every
// call reads the `bytes` after the previous call's of any entry of that window, kLutRegionGap on
// (never adjacent: in a forward the next op's weights lie elsewhere, so the hardware prefetcher must
// not stream from one call's weights into the next's; adjacent regions timed SmolLM2's 576 x 576
// GEMVs 11-27% faster at 2 threads, Zen 4 VM), so each byte is read again only after a window of
// that width's traffic, its reuse distance in a real forward. The spans of different windows are
// disjoint where the buffer holds them all: when every entry rotated from the buffer's start, the
// narrow widths' traffic kept the start of the wide widths' windows in cache, and on a VM with a
// ~64 MiB last-level cache 8-bit entries were timed at 42 GB/s where the model reads 22-26 (Xeon with
// AMX, 2026-12-07). Sizes round up to 64.
constexpr size_t kLutRegionGap = size_t{256} << 10;
struct LutSpan {
  size_t base = 0, size = 0, cursor = 0;
};
// The bytes a span needs for a window whose largest entry reads `bytes`: max(window, bytes) + kLutRegionGap.
size_t lut_span_bytes(size_t window, size_t bytes);
// The spans of these (window, largest entry bytes) pairs, lut_span_bytes each (at most `buffer`),
// laid one after another while they fit in `buffer`; one that does not starts at 0 (overlapping).
std::map<size_t, LutSpan> lut_spans(const std::map<size_t, size_t>& window_bytes, size_t buffer);
// The offset of a call's `bytes` in `span`'s window (from the buffer's start), advancing its cursor;
// back to the span's start where the region would pass its end.
size_t lut_next_region(LutSpan& span, size_t bytes);

// Calibration of the decode entries (LutOptions::calibrate, lut_calibrate.cpp): the factor that
// makes a prediction of predicted_us, linears_us of it from the entries being scaled, equal the
// measured_us (clamped to [0.25, 4]); and the scaling of one width's M = 1 entries of `linears`
// (the table's "linears" array; the lm_head's entries, N = vocab, are left as they are: they are
// priced with the model's fixed part).
double lut_calibration_scale(double measured_us, double predicted_us, double linears_us);
void scale_decode_entries(nlohmann::ordered_json& linears, int bits, int64_t vocab, double scale);
// The order of the calibration's timed runs: `rounds` rounds over widths 0..widths-1, each round
// starting one width later (each width in each place of a round as often as rounds allow).
std::vector<size_t> calibration_schedule(size_t widths, int rounds);
// Calibrates `lut` (the table's JSON, entries measured) in place; returns the per-width record.
nlohmann::ordered_json calibrate_lut_decode(nlohmann::ordered_json& lut, const ModelConfig& model, const SearchSpace& space,
                                    int lm_head_bits, int threads);

// An entry's time (us) from its samples (us per call; cpu: the calling thread's CPU time) by
// LutOptions::statistic: one thread: median(cpu); more: the 10th percentile of wall ("auto") or
// median(wall) ("median").
double lut_entry_us(const std::vector<double>& wall, const std::vector<double>& cpu, int threads,
                    const std::string& statistic);

// Measures everything and returns the LUT JSON text (with a trailing newline).
// device "auto" and "cpu" time on the CPU. "cuda" throws llmc::Error: "no CUDA device" when the
// kernels were built without CUDA or no device is present; with a device it also refuses for now
// (the dense 16-bit path and attention have no GPU implementation in this project yet).
std::string build_lut_json(const ModelConfig& model, const SearchSpace& space, const LutOptions& opts);

// Last-level cache size in bytes (sysconf, then /sys/devices/system/cpu/cpu0/cache; 64 MiB if unknown).
int64_t last_level_cache_bytes();
// "cpu (<model name from /proc/cpuinfo>)".
std::string cpu_device_name();

// Packed weight bytes of an architecture: quantized linears at their kernels::QLayout size (codes +
// fp16 scales + fp16 zeros, group effective_group(K, arch.group_size)), 16-bit linears at 4 bytes
// per weight (fp32 storage), plus embedding, lm_head (unless tied), and every RMSNorm weight (the
// export stores all of them): forward_plan(arch).weight_bytes() (model/plan.h). Needs no LUT.
int64_t arch_weight_bytes(const Arch& arch);
// The layer linears' part of it.
int64_t arch_linear_bytes(const Arch& arch);

// A loaded LUT. Lookups are O(1) hash-map reads; every lookup of a shape the table lacks throws
// llmc::Error naming the shape and the file.
// predict_ms split by what the runtime does in one forward step (microseconds).
struct LatencyParts {
  std::map<int, double> linears_us;  // by bit width (16: dense fp32), stacked calls counted whole
  double attention_us = 0;           // RoPE, cache append, softmax attention (every layer)
  double layer_fixed_us = 0;         // RMSNorms, SwiGLU, residual adds (every layer)
  double model_fixed_us = 0;         // embedding row, final norm, lm_head
  double total_us() const;
};

class LatencyTable {
 public:
  // Errors (llmc::Error, one line naming the file): missing file, not JSON, not a LUT, another
  // version, missing/mistyped fields, non-positive times, a hash that does not match its own
  // model + space (edited file).
  static LatencyTable load(const std::string& path);
  static LatencyTable parse(const std::string& json_text, const std::string& where);

  // Throws unless the LUT was built for exactly these model shapes and this space:
  // "<where>: LUT <file> was built for shapes hash A (...), this model + space hash to B (...)".
  void check(const ModelConfig& model, const SearchSpace& space, const std::string& where) const;

  double linear_us(int64_t N, int64_t K, int bits, int64_t M) const;
  // nullptr when absent (for callers that handle a miss themselves).
  const double* find_linear_us(int64_t N, int64_t K, int bits, int64_t M) const;
  double attention_us(int64_t kv_heads, int64_t M) const;
  double layer_fixed_us(int64_t M) const;       // attn half + mlp half
  double layer_fixed_attn_us(int64_t M) const;  // input norm + residual (skipped with 0 KV heads)
  double layer_fixed_mlp_us(int64_t M) const;   // post-attn norm, SwiGLU, residual (skipped with 0 channels)
  double model_fixed_us(int64_t M) const;

  // Predicted latency of one forward step of M tokens (M must be one of tokens()):
  //   model_fixed + sum over layers of
  //     [kv_heads > 0]   q, k, v, o at their widths and bits + attention(kv_heads) + attn half
  //     [channels > 0]   gate, up, down at their widths and bits + mlp half
  // with the calls of the forward plan (model/plan.h): q/k/v (gate/up) with equal bits are one
  // stacked matrix, as the runtime runs them.
  // Throws when arch is for another model or another group size than the LUT's space.
  double predict_ms(const Arch& arch, int64_t M) const;
  // The same prediction by part (predict_ms = predict_parts(...).total_us() / 1000).
  LatencyParts predict_parts(const Arch& arch, int64_t M) const;
  int64_t weight_bytes(const Arch& arch) const { return arch_weight_bytes(arch); }

  const std::string& where() const { return where_; }
  const std::string& device() const { return device_; }
  const std::string& kernel_version() const { return kernel_version_; }
  const std::string& hash() const { return hash_; }
  int threads() const { return threads_; }
  int64_t context() const { return context_; }
  int lm_head_bits() const { return lm_head_bits_; }
  // Whether it prices a `bits` lm_head: lm_head_bits(), or one of space().lm_head_bits (each has a
  // linear entry (vocab, hidden, bits, M 1); predict_ms adds its difference to the lm_head_bits one).
  bool times_lm_head(int bits) const;
  // What a `bits` lm_head adds to model_fixed_us, which holds the lm_head_bits() one (0 for that
  // one; may be negative); throws naming the file unless times_lm_head(bits).
  double lm_head_extra_us(int bits) const;
  const std::vector<int64_t>& tokens() const { return tokens_; }
  const ModelConfig& model() const { return model_; }
  const SearchSpace& space() const { return space_; }
  size_t num_linears() const { return linears_.size(); }

 private:
  struct Key {
    int64_t a, b, c, d;
    bool operator==(const Key& o) const { return a == o.a && b == o.b && c == o.c && d == o.d; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const;
  };
  double need(const std::unordered_map<Key, double, KeyHash>& m, const Key& k, const char* what,
              const std::string& shape) const;

  std::string where_, device_, kernel_version_, hash_;
  int threads_ = 0;
  int64_t context_ = 0;
  int lm_head_bits_ = 16;
  std::vector<int64_t> tokens_;
  ModelConfig model_;
  SearchSpace space_;
  std::unordered_map<Key, double, KeyHash> linears_;  // (N, K, bits, M)
  std::unordered_map<Key, double, KeyHash> attention_;  // (kv_heads, M, 0, 0)
  std::unordered_map<int64_t, double> fixed_attn_, fixed_mlp_, model_fixed_;  // by M
};

}  // namespace llmc
