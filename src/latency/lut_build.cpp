// Measuring the LUT (`llmcompress lut`): every entry times the runtime engine's own functions
// (llmc/runtime/ops.h) on weights as warm or cold as in a real forward. See lut.h for the entries.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <unistd.h>


#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/log.h"
#include "llmc/core/progress.h"
#include "llmc/core/timing.h"
#include "llmc/latency/lut.h"
#include "llmc/model/llama.h"
#include "llmc/model/plan.h"
#include "llmc/model/threads.h"
#include "llmc/runtime/ops.h"
#include "llmc/quant/quant.h"
#include "llmc_kernels/qgemm.h"
#include "llmc_kernels/qgemm_cuda.h"
#include "llmc_kernels/weight_memory.h"

namespace llmc {

using json = nlohmann::ordered_json;

int64_t last_level_cache_bytes() {
#ifdef _SC_LEVEL3_CACHE_SIZE
  long l3 = ::sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l3 > 0) return l3;
#endif
  int best_level = 0;
  int64_t best = 0;
  for (int i = 0; i < 16; ++i) {
    const std::string d = fmt::format("/sys/devices/system/cpu/cpu0/cache/index{}", i);
    std::ifstream lf(d + "/level"), sf(d + "/size");
    int level = 0;
    std::string size;
    if (!(lf >> level) || !(sf >> size) || size.empty()) continue;
    int64_t v = std::atoll(size.c_str());
    const char unit = size.back();
    if (unit == 'K') v <<= 10;
    if (unit == 'M') v <<= 20;
    if (level > best_level && v > 0) best_level = level, best = v;
  }
  return best > 0 ? best : int64_t{64} << 20;
}

std::string cpu_device_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    auto p = line.find(':');
    if (p == std::string::npos) break;
    std::string name = line.substr(p + 1);
    name.erase(0, name.find_first_not_of(" \t"));
    return "cpu (" + name + ")";
  }
  return "cpu (unknown model)";
}

LutAttentionSpan lut_attention_span(int64_t M, int64_t context) {
  LLMC_CHECK(M >= 1 && context >= 1, "lut: token count {} and context {} must be >= 1", M, context);
  const int64_t T = M == 1 ? context : M;
  return {T, T - M};
}

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kAlign = 64;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// A 64-byte aligned buffer filled with valid fp16 bit patterns of magnitude in [2^-7, 1), so every
// slice of it is a valid packed matrix (any byte is a code; every uint16 a normal fp16 scale/zero)
// and, read as fp32, only normal floats of tiny magnitude (no denormals, NaN or inf). The runtime's
// kind of memory (kernels::allocate_weight_buffer: huge pages where Linux has them), so an entry's
// weights cost the TLB what the engine's do.
class Rotation {
 public:
  explicit Rotation(size_t bytes, uint64_t seed) : size_(std::max(align_up(bytes), kAlign)) {
    try {
      buf_ = kernels::allocate_weight_buffer(size_);
    } catch (const std::bad_alloc&) {
      fail("lut: cannot allocate a {} MiB timing buffer (lower --max-buffer-mib)", size_ >> 20);
    }
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    uint64_t* w = reinterpret_cast<uint64_t*>(buf_.get());
    for (size_t i = 0; i < size_ / 8; ++i) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      uint64_t v = 0;
      for (int k = 0; k < 4; ++k) {
        const uint64_t r = s >> (16 * k);
        const uint64_t h = ((8 + (r >> 10) % 7) << 10) | (r & 0x3ff);  // exponent 8..14, random mantissa
        v |= h << (16 * k);
      }
      w[i] = v;
    }
  }
  Rotation(const Rotation&) = delete;
  Rotation& operator=(const Rotation&) = delete;
  size_t size() const { return size_; }
  uint8_t* at(size_t offset) const { return buf_.get() + offset; }

 private:
  size_t size_;
  std::shared_ptr<uint8_t> buf_;
};

double round_us(double us) { return std::round(us * 1000.0) / 1000.0; }

// Top-level keys one per line, arrays of entries one entry per line (diffable, compact).
std::string lut_text(const json& j) {
  std::string out = "{\n";
  bool first = true;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!first) out += ",\n";
    first = false;
    out += "  " + json(it.key()).dump() + ": ";
    const json& v = it.value();
    if (v.is_array() && !v.empty() && v.front().is_object()) {
      out += "[\n";
      for (size_t i = 0; i < v.size(); ++i) out += "    " + v[i].dump() + (i + 1 < v.size() ? ",\n" : "\n");
      out += "  ]";
    } else {
      out += v.dump();
    }
  }
  return out + "\n}\n";
}

// One measured entry: fn(region) is one call; `bytes` of weights per call (0: none), rotating
// through `window` bytes (the bytes a real forward touches before it reads these weights again)
// with the other entries of that window (lut_spans).
struct Job {
  size_t bytes = 0, window = 0;
  std::function<void(uint8_t*)> fn;
  std::string label;
  int batch = 0;  // calls per sample, calibrated in the first pass
  std::vector<double> wall, cpu;  // per sample, us per call
  std::vector<char> preempted;    // another process ran on our cores during the sample
};

long involuntary_switches() {
  rusage r{};
  ::getrusage(RUSAGE_SELF, &r);
  return r.ru_nivcsw;
}

// Times jobs in interleaved passes: each pass takes a share of every job's samples, so a burst of
// load from other processes spreads over many entries instead of ruining a few. Every call reads a
// fresh region of its job's window of the rotating buffer, so weights are exactly as cache-warm as
// their reuse distance in a real forward makes them. A sample averages `batch` back-to-back calls,
// batch chosen so a sample lasts >= min_sample_us.
//
// Other processes on the same cores preempt us and inflate wall times (by milliseconds, on a busy
// machine). Each sample therefore also records the calling thread's CPU time and whether any of our
// threads was involuntarily switched out. With one thread the estimate is the median CPU time (equal
// to the wall time when nothing preempts us; no other thread works for us). With several threads it
// is the 10th percentile of the wall times (kMultiThreadQuantile), sampling a few more when some
// were preempted: a parallel op waits for its slowest thread, and a preempted or slower (shared)
// core only ever adds time, in phases of seconds that the preemption flag does not always see.
// 2-thread builds on a 2-vCPU VM, estimators compared offline on the same dumped samples (three
// stories260K builds, two 1B builds, each pair |a-b|/a): the median of the unpreempted samples
// agreed within 10% on 221/222 entries (max 15-39%) and 250/282 (max 28%); the 10th percentile of
// all samples on 222/222 (max 7-10%) and 281/282 (max 10.7%).
constexpr double kMultiThreadQuantile = 0.1;

}  // namespace

size_t lut_span_bytes(size_t window, size_t bytes) {
  return std::max(align_up(window), align_up(std::max<size_t>(bytes, 1))) + kLutRegionGap;
}

std::map<size_t, LutSpan> lut_spans(const std::map<size_t, size_t>& window_bytes, size_t buffer) {
  std::map<size_t, LutSpan> out;
  size_t next = 0;
  for (const auto& [window, bytes] : window_bytes) {
    LutSpan sp;
    sp.size = std::min(buffer, lut_span_bytes(window, bytes));
    sp.base = next + sp.size <= buffer ? next : 0;
    next = sp.base + sp.size;
    out[window] = sp;
  }
  return out;
}

size_t lut_next_region(LutSpan& span, size_t bytes) {
  bytes = align_up(std::max<size_t>(bytes, 1));
  if (span.cursor + bytes > span.size) span.cursor = 0;
  const size_t off = span.base + span.cursor;
  span.cursor += bytes + kLutRegionGap;
  return off;
}

double lut_entry_us(const std::vector<double>& wall, const std::vector<double>& cpu, int threads,
                    const std::string& statistic) {
  if (threads == 1) return median(cpu);
  return statistic == "median" ? median(wall) : quantile(wall, kMultiThreadQuantile);
}

namespace {

class Measurer {
 public:
  // spans: lut_spans of the jobs' windows in arena_bytes.
  Measurer(size_t arena_bytes, std::map<size_t, LutSpan> spans, double min_sample_us, int threads, std::string statistic)
      : arena_(arena_bytes, 1), spans_(std::move(spans)), min_sample_us_(min_sample_us), threads_(threads),
        statistic_(std::move(statistic)) {}
  size_t arena_bytes() const { return arena_.size(); }

  // One untimed pass first (sizes every job's batch, touches all buffers, and lets the CPU settle
  // into its steady speed: in a build started right after a compile on a 2-core VM here, the first
  // seven passes ran a median 1.21x (p90 1.56x) slower than the rest), then `passes` timed passes.
  // 1 <= passes <= repeats (build_lut_json resolves LutOptions::passes).
  void run(std::vector<Job>& jobs, int repeats, int passes, Progress* bar) {
    for (auto& job : jobs) {
      calibrate(job);
      if (bar) bar->advance(1, job.label);
    }
    for (int p = 0; p < passes; ++p) {
      const int n = repeats * (p + 1) / passes - repeats * p / passes;
      for (auto& job : jobs) {
        measure(job, n);
        if (bar) bar->advance(1, job.label);
      }
    }
  }

  // The entry's time (us).
  double estimate(const Job& job) const { return lut_entry_us(job.wall, job.cpu, threads_, statistic_); }

 private:
  void call(Job& job) {
    if (job.bytes == 0) return job.fn(nullptr);
    size_t off = lut_next_region(spans_.at(job.window), job.bytes);
    if (off + job.bytes > arena_.size()) off = 0;  // one copy larger than its span
    job.fn(arena_.at(off));
  }

  // batch: the number of back-to-back calls that lasts >= min_sample_us (doubling from 1; up to
  // 2^20 calls, so even a 10 ns entry is timed over a whole sample, not a clock tick).
  void calibrate(Job& job) {
    call(job);
    int batch = 1;
    for (;;) {
      const auto t0 = Clock::now();
      for (int b = 0; b < batch; ++b) call(job);
      const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
      if (us >= min_sample_us_ || batch >= (1 << 20)) break;
      if (us * 4 >= min_sample_us_) {
        batch = static_cast<int>(std::ceil(batch * min_sample_us_ / std::max(us, 1e-3)));
        break;
      }
      batch *= 2;
    }
    job.batch = std::min(batch, 1 << 20);
  }

  void measure(Job& job, int n) {
    // Short calls get one warm-up call after the other jobs ran (code and inputs back in cache);
    // a call longer than a sample is its own warm-up.
    if (job.batch > 1) call(job);
    int clean = 0;
    for (int s = 0; s < 3 * n; ++s) {
      // Past n samples, only multi-threaded runs sample on, while preemption spoiled some, for
      // short samples (a long one is preempted anyway on a busy machine): with n unpreempted samples
      // the 10th percentile lies among them however many were preempted.
      if (s >= n && (threads_ == 1 || clean >= n || job.wall.back() > 20000.0)) break;
      const long sw0 = involuntary_switches();
      const double c0 = 1e6 * thread_cpu_seconds();
      const auto t0 = Clock::now();
      for (int b = 0; b < job.batch; ++b) call(job);
      const auto t1 = Clock::now();
      const double c1 = 1e6 * thread_cpu_seconds();
      const bool pre = involuntary_switches() != sw0;
      job.wall.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / job.batch);
      job.cpu.push_back((c1 - c0) / job.batch);
      job.preempted.push_back(pre);
      clean += pre ? 0 : 1;
    }
  }

  Rotation arena_;
  std::map<size_t, LutSpan> spans_;  // by window
  double min_sample_us_;
  int threads_;
  std::string statistic_;
};

// ---- setup ----

// Fails with the CLI's message on a request the LUT cannot be built for.
void check_request(const ModelConfig& model, const SearchSpace& space, const LutOptions& opts) {
  model.validate("lut model");
  LLMC_CHECK(model.num_heads % model.num_kv_heads == 0, "lut: num_heads {} is not a multiple of num_kv_heads {}",
             model.num_heads, model.num_kv_heads);
  LLMC_CHECK(!opts.tokens.empty(), "lut: --tokens is empty");
  for (int64_t M : opts.tokens) LLMC_CHECK(M >= 1, "lut: token count {} must be >= 1", M);
  LLMC_CHECK(opts.context >= 1, "lut: --context {} must be >= 1", opts.context);
  LLMC_CHECK(opts.repeats >= 1, "lut: --repeats {} must be >= 1", opts.repeats);
  LLMC_CHECK(opts.statistic == "auto" || opts.statistic == "median", "lut: --statistic {}: expected auto or median",
             opts.statistic);
  const std::string device = opts.device == "auto" ? "cpu" : opts.device;  // no GPU timing yet (see below)
  if (device == "cuda") {
    if (!kernels::cuda_available())
      fail("--device cuda: no CUDA device ({}); use --device cpu",
           kernels::cuda_compiled() ? "no usable GPU found" : "this build has no CUDA kernels");
    fail("--device cuda: this build times only CPU latency tables (the dense fp16 path and attention have no GPU "
         "code here); use --device cpu");
  }
  LLMC_CHECK(device == "cpu", "--device {}: expected auto, cpu or cuda", opts.device);
  LLMC_CHECK(valid_lm_head_bits(opts.lm_head_bits), "lut: --lm-head-bits {} (expected 16, 8 or 4, as export writes)",
             opts.lm_head_bits);
  const auto& hb = space.lm_head_bits;
  LLMC_CHECK(space.allows_lut_lm_head(opts.lm_head_bits),
             "lut: --lm-head-bits {} is not one of the space's lm_head_bits [{}] (the other widths are priced "
             "against it)",
             opts.lm_head_bits, fmt::join(hb, ", "));
}

// Where linear_at places a packed matrix in the rotation buffer: codes, scales, zeros, each aligned.
struct PackedOffsets {
  size_t scales = 0, zeros = 0, end = 0;
};
PackedOffsets packed_offsets(int bits, int group, int64_t N, int64_t K) {
  const kernels::QLayout lay = kernels::make_layout(bits, group, static_cast<int>(N), static_cast<int>(K));
  const size_t cb = align_up(lay.code_bytes), sb = align_up(lay.scale_bytes);
  return {cb, cb + sb, cb + 2 * sb};
}

// Rotation-buffer bytes of one linear: the plan's stored bytes, plus the alignment of the packed
// parts; where the runtime also keeps a row-tiled copy (2/3 bits on AVX-512, 4 on VNNI) the same bytes serve
// as either layout (every byte is a valid code / fp16), so the larger of the two is reserved.
size_t rotation_linear_bytes(LinearShape s, int bits, int group_size) {
  if (bits == 16) return static_cast<size_t>(linear_stored_bytes(s, bits, group_size, sizeof(float)));
  const int group = effective_group(static_cast<int>(s.K), group_size);
  size_t b = packed_offsets(bits, group, s.N, s.K).end;
  if (kernels::tiled_faster(bits))
    b = std::max(b, kernels::make_tiled_layout(bits, group, static_cast<int>(s.N), static_cast<int>(s.K)).total_bytes);
  return b;
}

// A linear as the runtime runs it, its weights at p.
rt::LinearOp linear_at(uint8_t* p, int64_t N, int64_t K, int bits, int group) {
  rt::LinearOp op;
  op.N = N, op.K = K, op.quant = bits != 16;
  if (op.quant) {
    const PackedOffsets at = packed_offsets(bits, group, N, K);
    op.q = kernels::QMatrixView{bits, group, static_cast<int>(N), static_cast<int>(K), p,
                                reinterpret_cast<const uint16_t*>(p + at.scales),
                                reinterpret_cast<const uint16_t*>(p + at.zeros)};
    if (kernels::tiled_faster(bits)) op.tiled = kernels::QTiledView{bits, group, static_cast<int>(N), static_cast<int>(K), p};
  } else {
    op.w = reinterpret_cast<const float*>(p);
  }
  return op;
}

// n floats in [-1, 1) (at least one), shared by the closures of the jobs that read them.
std::shared_ptr<std::vector<float>> random_floats(int64_t n, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(std::max<int64_t>(n, 1)));
  uint64_t st = seed * 0x9e3779b97f4a7c15ull + 7;
  for (auto& x : v) {
    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
    x = static_cast<float>(static_cast<double>(st >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  }
  return std::make_shared<std::vector<float>>(std::move(v));
}

// What the entry kinds share: the request, the entries to time and the rotating buffer's geometry.
struct Setup {
  Setup(const ModelConfig& m, const SearchSpace& sp, const LutOptions& o, int t)
      : model(m), space(sp), opts(o), threads(t) {}
  const ModelConfig& model;
  const SearchSpace& space;
  const LutOptions& opts;
  int threads;
  std::vector<int64_t> tokens;         // sorted, distinct
  std::vector<LutLinearShape> shapes;  // the linears entries
  std::set<int64_t> kv_counts;         // KV-group counts any layer can choose
  size_t lm_head_bytes = 0;            // rotation_linear_bytes of the lm_head
  size_t fixed_window = 0;             // fixed-cost entries see the model at the space's median bit width
  std::shared_ptr<std::vector<float>> norm_w;  // RMSNorm weight (layer and model entries)

  // The weights a forward reads between two reads of the same linear: the full-width model at
  // that bit width plus the lm_head (the reuse distance the rotating window reproduces).
  size_t window(int bits) const {
    return static_cast<size_t>(arch_linear_bytes(uniform_arch(model, bits, space.group_size))) + lm_head_bytes;
  }
};

Setup make_setup(const ModelConfig& model, const SearchSpace& space, const LutOptions& opts, int threads) {
  Setup s(model, space, opts, threads);
  s.tokens = opts.tokens;
  std::sort(s.tokens.begin(), s.tokens.end());
  s.tokens.erase(std::unique(s.tokens.begin(), s.tokens.end()), s.tokens.end());
  s.shapes = lut_linear_shapes(model, space, s.tokens);
  for (int64_t l = 0; l < model.num_layers; ++l)
    for (int64_t h : space.kv_choices(model, l))
      if (h > 0) s.kv_counts.insert(h);
  s.lm_head_bytes = rotation_linear_bytes({model.vocab_size, model.hidden_size}, opts.lm_head_bits, space.group_size);
  std::set<int> all_bits;
  for (int64_t l = 0; l < model.num_layers; ++l)
    for (int b : space.bit_choices(l)) all_bits.insert(b);
  s.fixed_window = s.window(*std::next(all_bits.begin(), static_cast<long>(all_bits.size() / 2)));
  s.norm_w = random_floats(model.hidden_size, 99);
  return s;
}

// ---- jobs, one function per entry kind, added in the order of the file ----

// linears: rt::linear on every shape, weights rotating through the model's bytes at its bit width.
void add_linear_jobs(const Setup& s, std::vector<Job>& jobs) {
  const int threads = s.threads;
  std::map<std::pair<int64_t, int64_t>, std::shared_ptr<std::vector<float>>> inputs;  // (M, K) -> x
  for (const auto& sh : s.shapes) {
    auto& xr = inputs[{sh.M, sh.K}];
    if (!xr) xr = random_floats(sh.M * sh.K, static_cast<uint64_t>(sh.M * 131 + sh.K));
    auto x = xr;
    auto y = std::make_shared<std::vector<float>>(static_cast<size_t>(sh.M * sh.N));
    Job job;
    job.label = fmt::format("N={} K={} b={} M={}", sh.N, sh.K, sh.bits, sh.M);
    job.bytes = rotation_linear_bytes({sh.N, sh.K}, sh.bits, s.space.group_size);
    job.window = s.window(sh.bits);
    job.fn = [=](uint8_t* p) {
      rt::linear(linear_at(p, sh.N, sh.K, sh.bits, sh.group), x->data(), sh.M, y->data(), threads);
    };
    jobs.push_back(std::move(job));
  }
}

// attention per token count M, then KV-group count h (the order attention_json reads them back):
// split of q|k|v, RoPE, cache append, causal attention.
void add_attention_jobs(const Setup& s, std::vector<Job>& jobs) {
  const int threads = s.threads;
  const int64_t hd = s.model.head_dim, g = s.model.num_heads / s.model.num_kv_heads;
  const at::Tensor inv_freq_t = rope_inv_freq(s.model);
  const auto inv_freq = std::make_shared<std::vector<float>>(inv_freq_t.data_ptr<float>(),
                                                             inv_freq_t.data_ptr<float>() + inv_freq_t.numel());
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  for (int64_t M : s.tokens) {
    const LutAttentionSpan span = lut_attention_span(M, s.opts.context);
    const int64_t T = span.positions, past = span.past, half = hd / 2;
    // RoPE tables for positions [0, T), as the runtime's.
    auto cos = std::make_shared<std::vector<float>>(), sin = std::make_shared<std::vector<float>>();
    rt::rope_tables(inv_freq->data(), half, T, cos.get(), sin.get());
    auto positions = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; ++m) (*positions)[m] = past + m;
    auto mask = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(T), 1);
    for (int64_t h : s.kv_counts) {
      const int64_t nq = h * g;
      auto qkv = random_floats(M * (nq + 2 * h) * hd, static_cast<uint64_t>(h * 7 + M));
      auto q = std::make_shared<std::vector<float>>(static_cast<size_t>(M * nq * hd));
      auto k = std::make_shared<std::vector<float>>(static_cast<size_t>(M * h * hd));
      auto v = std::make_shared<std::vector<float>>(static_cast<size_t>(M * h * hd));
      auto out = std::make_shared<std::vector<float>>(static_cast<size_t>(M * nq * hd));
      const size_t cache_bytes = align_up(static_cast<size_t>(h * T * hd * 4));
      Job job;
      job.label = fmt::format("attention h={} M={}", h, M);
      job.bytes = 2 * cache_bytes;  // this layer's K and V caches (read from the rotating buffer: finite floats)
      job.window = s.fixed_window;
      job.fn = [=](uint8_t* p) {
        float* kc = reinterpret_cast<float*>(p);
        float* vc = reinterpret_cast<float*>(p + cache_bytes);
        rt::AttentionInputs in;  // as the engine runs them
        in.qkv = qkv->data(), in.q = q->data(), in.k = k->data(), in.v = v->data();
        in.B = 1, in.T = M, in.nq = nq, in.nkv = h, in.hd = hd;
        in.positions = positions->data(), in.cos = cos->data(), in.sin = sin->data(), in.inv_freq = inv_freq->data();
        in.max_pos = T, in.past = past, in.max_len = T, in.kcache = kc, in.vcache = vc;
        rt::attention_inputs(in, threads);
        rt::AttentionArgs a;
        a.q = q->data(), a.k = kc, a.v = vc, a.mask = reinterpret_cast<const bool*>(mask->data());
        a.out = out->data();
        a.B = 1, a.T = M, a.past = past, a.nq = nq, a.nkv = h, a.hd = hd, a.max_len = T, a.scale = scale;
        rt::attention(a, threads);
      };
      jobs.push_back(std::move(job));
    }
  }
}

// layer_fixed per M: two jobs, the attention half then the MLP half.
void add_layer_fixed_jobs(const Setup& s, std::vector<Job>& jobs) {
  const int64_t H = s.model.hidden_size, I = s.model.intermediate_size;
  const double eps = s.model.rms_norm_eps;
  const auto norm_w = s.norm_w;
  for (int64_t M : s.tokens) {
    auto x = random_floats(M * H, static_cast<uint64_t>(M + 1)), add = random_floats(M * H, static_cast<uint64_t>(M + 2));
    auto gate_up = random_floats(M * 2 * I, static_cast<uint64_t>(M + 3));
    auto xn = std::make_shared<std::vector<float>>(static_cast<size_t>(M * H));
    auto act = std::make_shared<std::vector<float>>(static_cast<size_t>(M * I));
    Job attn;
    attn.label = fmt::format("layer fixed (attn) M={}", M);
    attn.fn = [=](uint8_t*) {
      rt::rms_norm_rows(x->data(), norm_w->data(), M, H, eps, xn->data());
      rt::add_inplace(xn->data(), add->data(), M * H);
    };
    jobs.push_back(std::move(attn));
    Job mlp;
    mlp.label = fmt::format("layer fixed (mlp) M={}", M);
    mlp.fn = [=](uint8_t*) {
      rt::rms_norm_rows(x->data(), norm_w->data(), M, H, eps, xn->data());
      rt::swiglu_fused(gate_up->data(), M, I, act->data());
      rt::add_inplace(xn->data(), add->data(), M * H);
    };
    jobs.push_back(std::move(mlp));
  }
}

// model_fixed per M: embedding rows, final norm and lm_head of the last position.
void add_model_fixed_jobs(const Setup& s, std::vector<Job>& jobs) {
  const int threads = s.threads;
  const int64_t H = s.model.hidden_size, V = s.model.vocab_size;
  const double eps = s.model.rms_norm_eps;
  const auto norm_w = s.norm_w;
  const size_t table_bytes = align_up(static_cast<size_t>(V * H * 4));
  const int lm_bits = s.opts.lm_head_bits;
  const int lm_group = lm_bits == 16 ? 0 : effective_group(static_cast<int>(H), s.space.group_size);
  for (int64_t M : s.tokens) {
    std::vector<int64_t> ids_v(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; ++m) ids_v[m] = (m * 7919) % V;
    auto ids = std::make_shared<std::vector<int64_t>>(std::move(ids_v));
    auto x = std::make_shared<std::vector<float>>(static_cast<size_t>(M * H));
    auto xn = std::make_shared<std::vector<float>>(static_cast<size_t>(H));
    auto logits = std::make_shared<std::vector<float>>(static_cast<size_t>(V));
    Job job;
    job.label = fmt::format("model fixed M={}", M);
    job.bytes = table_bytes + s.lm_head_bytes;
    job.window = s.fixed_window;
    job.fn = [=](uint8_t* p) {
      const float* embed = reinterpret_cast<const float*>(p);
      for (int64_t m = 0; m < M; ++m) std::copy(embed + (*ids)[m] * H, embed + ((*ids)[m] + 1) * H, x->data() + m * H);
      rt::rms_norm_rows(x->data() + (M - 1) * H, norm_w->data(), 1, H, eps, xn->data());
      rt::linear(linear_at(p + table_bytes, V, H, lm_bits, lm_group), xn->data(), 1, logits->data(), threads);
    };
    jobs.push_back(std::move(job));
  }
}

// ---- JSON, one function per entry kind, reading the times back in the order the jobs were added ----

// The measured jobs in order, and the sample tallies "build" reports.
class Results {
 public:
  Results(const std::vector<Job>& jobs, const Measurer& measurer) : jobs_(jobs), measurer_(measurer) {}
  double next_us() {
    const Job& job = jobs_.at(next_++);
    const size_t pre = static_cast<size_t>(std::count(job.preempted.begin(), job.preempted.end(), char{1}));
    noisy += pre * 2 > job.wall.size() ? 1 : 0;  // mostly preempted: a busy machine
    samples += job.wall.size();
    preempted += pre;
    return round_us(measurer_.estimate(job));
  }
  size_t noisy = 0, samples = 0, preempted = 0;

 private:
  const std::vector<Job>& jobs_;
  const Measurer& measurer_;
  size_t next_ = 0;
};

json linears_json(const Setup& s, Results& r) {
  json out = json::array();
  for (const auto& sh : s.shapes)
    out.push_back({{"N", sh.N}, {"K", sh.K}, {"bits", sh.bits}, {"group", sh.group}, {"M", sh.M}, {"us", r.next_us()}});
  return out;
}

json attention_json(const Setup& s, Results& r) {
  json out = json::array();
  for (int64_t M : s.tokens)
    for (int64_t h : s.kv_counts) out.push_back({{"kv_heads", h}, {"M", M}, {"us", r.next_us()}});
  return out;
}

json layer_fixed_json(const Setup& s, Results& r) {
  json out = json::array();
  for (int64_t M : s.tokens) {
    const double a = r.next_us(), m = r.next_us();
    out.push_back({{"M", M}, {"us", round_us(a + m)}, {"attn_us", a}, {"mlp_us", m}});
  }
  return out;
}

json model_fixed_json(const Setup& s, Results& r) {
  json out = json::array();
  for (int64_t M : s.tokens) out.push_back({{"M", M}, {"us", r.next_us()}});
  return out;
}

// "build": how the times were taken (informational).
json build_json(const Setup& s, const std::vector<Job>& jobs, const Results& r, int passes, size_t rotation_bytes,
                double wall_s) {
  int min_batch = 1 << 30, max_batch = 0;
  for (const auto& job : jobs) min_batch = std::min(min_batch, job.batch), max_batch = std::max(max_batch, job.batch);
  return {{"model", s.opts.model_name},
          {"statistic", s.threads == 1 ? "median" : s.opts.statistic == "median" ? "median wall" : "p10"},
          {"repeats", s.opts.repeats},
          {"passes", passes},
          {"min_sample_us", s.opts.min_sample_us},
          {"calls_per_sample", {{"min", min_batch}, {"max", max_batch}}},
          {"rotation_bytes", rotation_bytes},
          {"ops", "llmc::rt (runtime engine)"},
          {"clock", s.threads == 1 ? "thread cpu time" : "wall time"},
          {"samples", r.samples},
          {"preempted_samples", r.preempted},
          {"entries_mostly_preempted", r.noisy},
          {"wall_s", std::round(wall_s * 10) / 10}};
}

// The header keys, then the entries (lut.h's file format).
json lut_header(const Setup& s, const std::string& isa) {
  const ModelConfig& m = s.model;
  json j;
  j["format"] = kLutFormat;
  j["version"] = kLutVersion;
  j["device"] = cpu_device_name();
  j["threads"] = s.threads;
  j["kernel_version"] = std::string(kLutKernelVersion) + " " + isa;
  j["shapes_hash"] = shapes_hash(m, s.space);
  j["model"] = {{"hidden_size", m.hidden_size},   {"intermediate_size", m.intermediate_size},
                {"num_layers", m.num_layers},     {"num_heads", m.num_heads},
                {"num_kv_heads", m.num_kv_heads}, {"head_dim", m.head_dim},
                {"vocab_size", m.vocab_size},     {"tie_word_embeddings", m.tie_word_embeddings}};
  j["space"] = json::parse(s.space.canonical_json());
  j["tokens"] = s.tokens;
  j["context"] = s.opts.context;
  j["lm_head_bits"] = s.opts.lm_head_bits;
  return j;
}

}  // namespace

std::string build_lut_json(const ModelConfig& model, const SearchSpace& space, const LutOptions& opts) {
  const auto wall0 = Clock::now();
  check_request(model, space, opts);
  const int threads = opts.threads > 0 ? opts.threads : at::get_num_threads();
  ScopedTorchThreads scoped_threads(threads);
  const Setup s = make_setup(model, space, opts, threads);
  const std::string isa = kernels::isa_name(kernels::best_isa());
  std::vector<Job> jobs;
  add_linear_jobs(s, jobs);
  add_attention_jobs(s, jobs);
  add_layer_fixed_jobs(s, jobs);
  add_model_fixed_jobs(s, jobs);

  // The timing buffer: a span per window (lut_spans), up to --max-buffer-mib; one copy may exceed it.
  std::map<size_t, size_t> window_bytes;
  size_t largest = 0;
  for (const auto& job : jobs) {
    if (job.bytes == 0) continue;
    window_bytes[job.window] = std::max(window_bytes[job.window], job.bytes);
    largest = std::max(largest, align_up(job.bytes));
  }
  const size_t cap = static_cast<size_t>(std::max<int64_t>(opts.max_buffer_mib, 16)) << 20;
  size_t want = 0;
  for (const auto& [window, bytes] : window_bytes) want += lut_span_bytes(window, bytes);
  const size_t rotation_bytes = std::max(std::min(want, cap), largest);
  std::map<size_t, LutSpan> spans = lut_spans(window_bytes, rotation_bytes);
  spdlog::info("lut: {} linear entries, {} attention entries, {} token counts; threads {}, kernels {}; weights rotate "
               "through the model's bytes at each bit width ({} windows in {} MiB{})",
               s.shapes.size(), s.kv_counts.size() * s.tokens.size(), s.tokens.size(), s.threads, isa, spans.size(),
               rotation_bytes >> 20, want > rotation_bytes ? ", overlapping: raise --max-buffer-mib to keep them apart" : "");
  Measurer measurer(rotation_bytes, std::move(spans), opts.min_sample_us, s.threads, opts.statistic);
  const int passes = opts.passes > 0 ? std::min(opts.passes, opts.repeats) : opts.repeats;
  {
    std::unique_ptr<Progress> bar;
    if (opts.progress) bar = std::make_unique<Progress>("lut", static_cast<int64_t>(jobs.size()) * (passes + 1), "entries");
    measurer.run(jobs, opts.repeats, passes, bar.get());
  }

  Results r(jobs, measurer);
  json linears = linears_json(s, r), attention = attention_json(s, r);
  json layer_fixed = layer_fixed_json(s, r), model_fixed = model_fixed_json(s, r);
  const double wall_s = std::chrono::duration<double>(Clock::now() - wall0).count();
  json j = lut_header(s, isa);
  j["linears"] = std::move(linears);
  j["attention"] = std::move(attention);
  j["layer_fixed"] = std::move(layer_fixed);
  j["model_fixed"] = std::move(model_fixed);
  j["build"] = build_json(s, jobs, r, passes, rotation_bytes, wall_s);
  if (opts.calibrate && std::find(s.tokens.begin(), s.tokens.end(), 1) != s.tokens.end())
    j["build"]["calibration"] = calibrate_lut_decode(j, model, space, opts.lm_head_bits, s.threads);
  spdlog::info("lut: {} entries in {:.1f} s; {} of {} samples were preempted by other processes", jobs.size(), wall_s,
               r.preempted, r.samples);
  if (r.noisy > 0)
    spdlog::warn("lut: {} entries were preempted in most samples (busy machine): their 10th-percentile times may "
                 "still include waiting for the CPU; rebuild on an idle machine or with --threads 1",
                 r.noisy);
  return lut_text(j);
}

}  // namespace llmc
