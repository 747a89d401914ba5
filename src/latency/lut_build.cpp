// Measuring the LUT (`llmcompress lut`): linears with the real kernels on cold weights, attention
// core and elementwise costs with the reference model's ATen ops. See lut.h for what each entry is.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <unistd.h>

#include <ctime>

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
#include "llmc/latency/lut.h"
#include "llmc/model/llama.h"
#include "llmc/quant/quant.h"
#include "llmc_kernels/qgemm.h"
#include "llmc_kernels/qgemm_cuda.h"

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

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kAlign = 64;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// A 64-byte aligned buffer filled with valid fp16 bit patterns of magnitude in [2^-7, 1), so every
// slice of it is a valid packed matrix (any byte is a code; every uint16 a normal fp16 scale/zero)
// and, read as fp32, only normal floats of tiny magnitude (no denormals, NaN or inf).
class Rotation {
 public:
  explicit Rotation(size_t bytes, uint64_t seed) : size_(std::max(align_up(bytes), kAlign)) {
    p_ = static_cast<uint8_t*>(std::aligned_alloc(kAlign, size_));
    if (!p_) fail("lut: cannot allocate a {} MiB timing buffer (lower --max-buffer-mib)", size_ >> 20);
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    uint64_t* w = reinterpret_cast<uint64_t*>(p_);
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
  ~Rotation() { std::free(p_); }
  Rotation(const Rotation&) = delete;
  Rotation& operator=(const Rotation&) = delete;
  size_t size() const { return size_; }
  // The next `bytes` (aligned) of the buffer, wrapping around: a region is reused only after the
  // whole buffer has been touched.
  uint8_t* next(size_t bytes) {
    bytes = align_up(bytes);
    if (cursor_ + bytes > size_) cursor_ = 0;
    uint8_t* r = p_ + cursor_;
    cursor_ += bytes;
    return r;
  }

 private:
  size_t size_, cursor_ = 0;
  uint8_t* p_ = nullptr;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

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

// One measured entry: fn(region) is one call; `bytes` of weights per call (0: none).
struct Job {
  size_t bytes = 0;
  std::function<void(uint8_t*)> fn;
  std::string label;
  int batch = 0;  // calls per sample, calibrated in the first pass
  std::vector<double> wall, cpu;  // per sample, us per call
  std::vector<char> preempted;    // another process ran on our cores during the sample
};

double thread_cpu_us() {
  timespec t{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_nsec) * 1e-3;
}

long involuntary_switches() {
  rusage r{};
  ::getrusage(RUSAGE_SELF, &r);
  return r.ru_nivcsw;
}

// Times jobs in interleaved passes: each pass takes a share of every job's samples, so a burst of
// load from other processes spreads over many entries instead of ruining a few. Every call gets a
// fresh region of a buffer larger than the LLC (weights cold). A sample averages `batch`
// back-to-back calls, batch chosen so a sample lasts >= min_sample_us.
//
// Other processes on the same cores preempt us and inflate wall times (by milliseconds, on a busy
// machine). Each sample therefore also records the calling thread's CPU time and whether any of our
// threads was involuntarily switched out. With one thread the estimate is the median CPU time (equal
// to the wall time when nothing preempts us; no other thread works for us). With several threads it
// is the median wall time of the samples that were not preempted, sampling a few more when needed.
class Measurer {
 public:
  Measurer(size_t arena_bytes, int64_t llc, size_t cap, double min_sample_us, int threads)
      : arena_(arena_bytes, 1), llc_(llc), cap_(cap), min_sample_us_(min_sample_us), threads_(threads) {}
  size_t arena_bytes() const { return arena_.size(); }

  void run(std::vector<Job>& jobs, int repeats, int passes, Progress* bar) {
    passes = std::max(1, std::min(passes, repeats));
    for (int p = 0; p < passes; ++p) {
      const int n = repeats * (p + 1) / passes - repeats * p / passes;
      for (auto& job : jobs) {
        measure(job, n);
        if (bar) bar->advance(1, job.label);
      }
    }
    dedicated_.reset();
  }

  // The entry's time (us) and whether it had to fall back to preempted samples.
  std::pair<double, bool> estimate(const Job& job) const {
    if (threads_ == 1) return {median(job.cpu), false};
    std::vector<double> clean;
    for (size_t i = 0; i < job.wall.size(); ++i)
      if (!job.preempted[i]) clean.push_back(job.wall[i]);
    if (clean.size() * 2 >= job.wall.size() || clean.size() >= 10) return {median(clean), false};
    return {median(job.wall), true};
  }

 private:
  Rotation* source(size_t bytes) {
    if (bytes == 0 || align_up(bytes) <= arena_.size() / 4) return &arena_;
    // Too big to rotate in the shared buffer: a dedicated one of enough copies to exceed the LLC
    // (at least one copy, however big), kept while jobs of the same size follow.
    const size_t b = align_up(bytes);
    size_t copies = static_cast<size_t>(std::ceil(1.25 * static_cast<double>(llc_) / static_cast<double>(b)));
    copies = std::max<size_t>(1, std::min(copies, cap_ / b));
    if (!dedicated_ || dedicated_->size() != copies * b) {
      dedicated_.reset();
      dedicated_ = std::make_unique<Rotation>(copies * b, 2);
    }
    return dedicated_.get();
  }

  void measure(Job& job, int n) {
    Rotation* r = source(job.bytes);
    auto call = [&] { job.fn(job.bytes > 0 ? r->next(job.bytes) : nullptr); };
    call();
    call();
    if (job.batch == 0) {
      auto t0 = Clock::now();
      call();
      const double one = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
      job.batch = static_cast<int>(std::clamp(std::ceil(min_sample_us_ / std::max(one, 1e-3)), 1.0, 256.0));
    }
    int clean = 0;
    for (int s = 0; s < 3 * n; ++s) {
      // Past n samples, only multi-threaded runs sample on, while preemption spoiled some, for
      // short samples (a long one is preempted anyway on a busy machine).
      if (s >= n && (threads_ == 1 || clean >= n || job.wall.back() > 20000.0)) break;
      const long sw0 = involuntary_switches();
      const double c0 = thread_cpu_us();
      const auto t0 = Clock::now();
      for (int b = 0; b < job.batch; ++b) call();
      const auto t1 = Clock::now();
      const double c1 = thread_cpu_us();
      const bool pre = involuntary_switches() != sw0;
      job.wall.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / job.batch);
      job.cpu.push_back((c1 - c0) / job.batch);
      job.preempted.push_back(pre);
      clean += pre ? 0 : 1;
    }
  }

  Rotation arena_;
  std::unique_ptr<Rotation> dedicated_;
  int64_t llc_;
  size_t cap_;
  double min_sample_us_;
  int threads_;
};

// Same ops as the reference model (src/model/llama.cpp).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return x * cos + at::cat({-x2, x1}, -1) * sin;
}

at::Tensor weight_view(uint8_t* p, int64_t N, int64_t K) {
  return at::from_blob(p, {N, K}, at::TensorOptions().dtype(at::kFloat));
}

}  // namespace

std::string build_lut_json(const ModelConfig& model, const SearchSpace& space, const LutOptions& opts) {
  const auto wall0 = Clock::now();
  model.validate("lut model");
  LLMC_CHECK(model.num_heads % model.num_kv_heads == 0, "lut: num_heads {} is not a multiple of num_kv_heads {}",
             model.num_heads, model.num_kv_heads);
  LLMC_CHECK(!opts.tokens.empty(), "lut: --tokens is empty");
  for (int64_t M : opts.tokens) LLMC_CHECK(M >= 1, "lut: token count {} must be >= 1", M);
  LLMC_CHECK(opts.context >= 1, "lut: --context {} must be >= 1", opts.context);
  LLMC_CHECK(opts.repeats >= 1, "lut: --repeats {} must be >= 1", opts.repeats);
  std::vector<int64_t> tokens = opts.tokens;
  std::sort(tokens.begin(), tokens.end());
  tokens.erase(std::unique(tokens.begin(), tokens.end()), tokens.end());

  std::string device = opts.device;
  if (device == "auto") device = "cpu";  // GPU timing does not exist yet (see below)
  if (device == "cuda") {
    if (!kernels::cuda_available())
      fail("--device cuda: no CUDA device ({}); use --device cpu",
           kernels::cuda_compiled() ? "no usable GPU found" : "this build has no CUDA kernels");
    fail("--device cuda: this build times only CPU latency tables (the dense fp16 path and attention have no GPU "
         "code here); use --device cpu");
  }
  LLMC_CHECK(device == "cpu", "--device {}: expected auto, cpu or cuda", opts.device);

  const int prev_threads = at::get_num_threads();
  const int threads = opts.threads > 0 ? opts.threads : prev_threads;
  at::set_num_threads(threads);
  struct Restore {
    int n;
    ~Restore() { at::set_num_threads(n); }
  } restore{prev_threads};

  const auto shapes = lut_linear_shapes(model, space, tokens);
  // KV-group counts any layer can choose.
  std::set<int64_t> kv_counts;
  for (int64_t l = 0; l < model.num_layers; ++l)
    for (int64_t h : space.kv_choices(model, l))
      if (h > 0) kv_counts.insert(h);

  const int64_t llc = last_level_cache_bytes();
  const size_t cap = static_cast<size_t>(std::max<int64_t>(opts.max_buffer_mib, 16)) << 20;
  const size_t arena_bytes =
      std::min(cap, std::max<size_t>(static_cast<size_t>(1.25 * static_cast<double>(llc)), size_t{64} << 20));
  const std::string isa = kernels::isa_name(kernels::best_isa());
  spdlog::info("lut: {} linear entries, {} attention entries, {} token counts; threads {}, kernels {}; LLC {} MiB, "
               "rotating buffer {} MiB",
               shapes.size(), kv_counts.size() * tokens.size(), tokens.size(), threads, isa, llc >> 20,
               arena_bytes >> 20);
  if (static_cast<int64_t>(arena_bytes) < llc)
    spdlog::warn("lut: rotating buffer ({} MiB) is smaller than the LLC ({} MiB): small weights may be timed warm",
                 arena_bytes >> 20, llc >> 20);

  Measurer measurer(arena_bytes, llc, cap, opts.min_sample_us, threads);
  const int64_t H = model.hidden_size, hd = model.head_dim, g = model.num_heads / model.num_kv_heads;
  const int64_t I = model.intermediate_size, V = model.vocab_size;
  const double eps = model.rms_norm_eps;
  std::vector<Job> jobs;

  // ---- linears ----
  std::map<std::pair<int64_t, int64_t>, at::Tensor> inputs;  // (M, K) -> x, shared by the bit widths
  for (const auto& s : shapes) {
    at::Tensor& xr = inputs[{s.M, s.K}];
    if (!xr.defined()) xr = at::randn({s.M, s.K});
    const at::Tensor x = xr;
    Job job;
    job.label = fmt::format("N={} K={} b={} M={}", s.N, s.K, s.bits, s.M);
    if (s.bits == 16) {
      job.bytes = static_cast<size_t>(s.N * s.K * 4);
      job.fn = [x, N = s.N, K = s.K](uint8_t* p) { auto y = at::linear(x, weight_view(p, N, K)); };
    } else {
      const int M = static_cast<int>(s.M), N = static_cast<int>(s.N), K = static_cast<int>(s.K), bits = s.bits,
                group = s.group;
      const kernels::QLayout lay = kernels::make_layout(bits, group, N, K);
      const size_t cb = align_up(lay.code_bytes), sb = align_up(lay.scale_bytes);
      job.bytes = cb + 2 * sb;
      job.fn = [=](uint8_t* p) {
        const kernels::QMatrixView w{bits, group, N, K, p, reinterpret_cast<const uint16_t*>(p + cb),
                                     reinterpret_cast<const uint16_t*>(p + cb + sb)};
        auto y = at::empty({M, N}, at::kFloat);
        kernels::qgemm_cpu(x.data_ptr<float>(), M, w, nullptr, y.data_ptr<float>(), threads);
      };
    }
    jobs.push_back(std::move(job));
  }

  // ---- attention core per KV-group count (RoPE, cache append, scores, masked softmax, weighted sum) ----
  const at::Tensor inv_freq = rope_inv_freq(model);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  std::vector<std::pair<int64_t, int64_t>> attention_keys;  // (h, M)
  for (int64_t M : tokens) {
    const int64_t T = std::max(opts.context, M), past = T - M;
    auto freqs = at::arange(past, T, at::kLong).to(at::kFloat).unsqueeze(-1) * inv_freq;  // (M, hd/2)
    auto emb = at::cat({freqs, freqs}, -1).view({1, 1, M, hd});
    const at::Tensor cos = emb.cos(), sin = emb.sin();
    auto allowed = at::arange(T, at::kLong).view({1, T}) <= at::arange(past, T, at::kLong).view({M, 1});
    const at::Tensor bias =
        at::zeros({1, 1, 1, M, T}, at::kFloat).masked_fill(allowed.logical_not().view({1, 1, 1, M, T}), -1e30f);
    for (int64_t h : kv_counts) {
      const int64_t nq = h * g;
      const at::Tensor q_in = at::randn({1, M, nq * hd}), k_in = at::randn({1, M, h * hd}),
                       v_in = at::randn({1, M, h * hd});
      const size_t cache_bytes = align_up(static_cast<size_t>(h * T * hd * 4));
      Job job;
      job.label = fmt::format("attention h={} M={}", h, M);
      job.bytes = 2 * cache_bytes;
      job.fn = [=](uint8_t* p) {
        auto kc = at::from_blob(p, {1, h, T, hd}, at::kFloat);
        auto vc = at::from_blob(p + cache_bytes, {1, h, T, hd}, at::kFloat);
        auto q = apply_rope(q_in.view({1, M, nq, hd}).transpose(1, 2), cos, sin);
        auto k = apply_rope(k_in.view({1, M, h, hd}).transpose(1, 2), cos, sin);
        auto v = v_in.view({1, M, h, hd}).transpose(1, 2);
        kc.narrow(2, past, M).copy_(k);
        vc.narrow(2, past, M).copy_(v);
        auto qg = q.reshape({1, h, g, M, hd});
        auto scores = at::matmul(qg, kc.unsqueeze(2).transpose(-1, -2)) * scale;  // (1, h, g, M, T)
        auto probs = at::softmax(scores + bias, -1);
        auto out = at::matmul(probs, vc.unsqueeze(2));
        out = out.reshape({1, nq, M, hd}).transpose(1, 2).reshape({1, M, nq * hd});
      };
      jobs.push_back(std::move(job));
      attention_keys.emplace_back(h, M);
    }
  }

  // ---- per-layer elementwise costs (attn half, mlp half) ----
  const at::Tensor norm_w = at::ones({H}) + 0.01 * at::randn({H});
  for (int64_t M : tokens) {
    const at::Tensor x = at::randn({1, M, H}), attn_out = at::randn({1, M, H});
    const at::Tensor gate = at::randn({1, M, I}), up = at::randn({1, M, I});
    Job attn;
    attn.label = fmt::format("layer fixed (attn) M={}", M);
    attn.fn = [=](uint8_t*) {
      auto h = rms_norm(x, norm_w, eps);
      auto r = x + attn_out;
    };
    jobs.push_back(std::move(attn));
    Job mlp;
    mlp.label = fmt::format("layer fixed (mlp) M={}", M);
    mlp.fn = [=](uint8_t*) {
      auto h = rms_norm(x, norm_w, eps);
      auto a = at::silu(gate) * up;
      auto r = x + attn_out;
    };
    jobs.push_back(std::move(mlp));
  }

  // ---- model-level costs: embedding, RoPE tables and mask, final norm, lm_head ----
  const size_t table_bytes = align_up(static_cast<size_t>(V * H * 4));
  const bool tied = model.tie_word_embeddings;
  for (int64_t M : tokens) {
    const at::Tensor ids = at::randint(V, {1, M}, at::kLong);
    const int64_t T = std::max(opts.context, M), past = T - M;
    const at::Tensor positions = at::arange(past, T, at::kLong).view({1, M});
    Job job;
    job.label = fmt::format("model fixed M={}", M);
    job.bytes = tied ? table_bytes : 2 * table_bytes;
    job.fn = [=](uint8_t* p) {
      auto embed = weight_view(p, V, H);
      auto head = tied ? embed : weight_view(p + table_bytes, V, H);
      auto x = at::embedding(embed, ids);
      auto freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;
      auto emb = at::cat({freqs, freqs}, -1).unsqueeze(1);
      auto cos = emb.cos(), sin = emb.sin();
      auto allowed = at::arange(T, at::kLong).view({1, T}) <= at::arange(past, T, at::kLong).view({M, 1});
      auto bias =
          at::zeros({1, 1, 1, M, T}, at::kFloat).masked_fill(allowed.logical_not().view({1, 1, 1, M, T}), -1e30f);
      auto y = at::linear(rms_norm(x, norm_w, eps), head);
    };
    jobs.push_back(std::move(job));
  }

  const int passes = std::min(opts.passes, opts.repeats);
  {
    std::unique_ptr<Progress> bar;
    if (opts.progress) bar = std::make_unique<Progress>("lut", static_cast<int64_t>(jobs.size()) * passes, "entries");
    measurer.run(jobs, opts.repeats, passes, bar.get());
  }

  size_t next = 0, noisy = 0, samples = 0, preempted = 0;
  auto us_of = [&] {
    const Job& job = jobs[next++];
    auto [us, fallback] = measurer.estimate(job);
    noisy += fallback ? 1 : 0;
    samples += job.wall.size();
    for (char p : job.preempted) preempted += p ? 1 : 0;
    return round_us(us);
  };
  json linears = json::array();
  for (const auto& s : shapes)
    linears.push_back({{"N", s.N}, {"K", s.K}, {"bits", s.bits}, {"group", s.group}, {"M", s.M}, {"us", us_of()}});
  json attention = json::array();
  for (auto [h, M] : attention_keys) attention.push_back({{"kv_heads", h}, {"M", M}, {"us", us_of()}});
  json layer_fixed = json::array();
  for (int64_t M : tokens) {
    const double a = us_of(), m = us_of();
    layer_fixed.push_back({{"M", M}, {"us", round_us(a + m)}, {"attn_us", a}, {"mlp_us", m}});
  }
  json model_fixed = json::array();
  for (int64_t M : tokens) model_fixed.push_back({{"M", M}, {"us", us_of()}});

  const double wall_s = std::chrono::duration<double>(Clock::now() - wall0).count();
  json j;
  j["format"] = kLutFormat;
  j["version"] = kLutVersion;
  j["device"] = cpu_device_name();
  j["threads"] = threads;
  j["kernel_version"] = std::string(kLutKernelVersion) + " " + isa;
  j["shapes_hash"] = shapes_hash(model, space);
  j["model"] = {{"hidden_size", model.hidden_size},   {"intermediate_size", model.intermediate_size},
                {"num_layers", model.num_layers},     {"num_heads", model.num_heads},
                {"num_kv_heads", model.num_kv_heads}, {"head_dim", model.head_dim},
                {"vocab_size", model.vocab_size},     {"tie_word_embeddings", model.tie_word_embeddings}};
  j["space"] = json::parse(space.canonical_json());
  j["tokens"] = tokens;
  j["context"] = opts.context;
  j["linears"] = std::move(linears);
  j["attention"] = std::move(attention);
  j["layer_fixed"] = std::move(layer_fixed);
  j["model_fixed"] = std::move(model_fixed);
  j["build"] = {{"model", opts.model_name},
                {"statistic", "median"},
                {"repeats", opts.repeats},
                {"passes", passes},
                {"min_sample_us", opts.min_sample_us},
                {"llc_bytes", llc},
                {"rotation_bytes", arena_bytes},
                {"dense_path", "at::linear fp32"},
                {"clock", threads == 1 ? "thread cpu time" : "wall time of samples not preempted"},
                {"samples", samples},
                {"preempted_samples", preempted},
                {"entries_mostly_preempted", noisy},
                {"wall_s", std::round(wall_s * 10) / 10}};
  spdlog::info("lut: {} entries in {:.1f} s; {} of {} samples were preempted by other processes", jobs.size(), wall_s,
               preempted, samples);
  if (noisy > 0)
    spdlog::warn("lut: {} entries were preempted in most samples (busy machine): their times include waiting for "
                 "the CPU; rebuild on an idle machine or with --threads 1",
                 noisy);
  return lut_text(j);
}

}  // namespace llmc
