// Measuring the LUT (`llmcompress lut`): linears with the real kernels on cold weights, attention
// core and elementwise costs with the reference model's ATen ops. See lut.h for what each entry is.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
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

struct Timer {
  Rotation* arena;
  int64_t llc;
  size_t cap;
  int repeats;
  double min_sample_us;
  uint64_t seed = 1;

  // Median time (us) of fn(region), each call on a fresh `bytes` region of a buffer larger than the
  // LLC (bytes 0: no weights, region nullptr). A sample averages `batch` back-to-back calls, batch
  // chosen so a sample lasts >= min_sample_us (short kernels would otherwise be clock noise).
  double time(size_t bytes, const std::function<void(uint8_t*)>& fn) {
    std::unique_ptr<Rotation> own;
    Rotation* r = arena;
    if (bytes > 0 && align_up(bytes) > arena->size() / 4) {
      // Too big to rotate in the shared buffer: a dedicated one of enough copies to exceed the LLC
      // (at least one copy, however big).
      const size_t b = align_up(bytes);
      size_t copies = static_cast<size_t>(std::ceil(1.25 * static_cast<double>(llc) / static_cast<double>(b)));
      copies = std::max<size_t>(1, std::min(copies, cap / b));
      own = std::make_unique<Rotation>(copies * b, ++seed);
      r = own.get();
    }
    auto call = [&] { fn(bytes > 0 ? r->next(bytes) : nullptr); };
    call();
    call();
    auto t0 = Clock::now();
    call();
    const double one = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    const int batch = static_cast<int>(std::clamp(std::ceil(min_sample_us / std::max(one, 1e-3)), 1.0, 256.0));
    std::vector<double> samples;
    samples.reserve(repeats);
    for (int s = 0; s < repeats; ++s) {
      t0 = Clock::now();
      for (int b = 0; b < batch; ++b) call();
      samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / batch);
    }
    return median(std::move(samples));
  }
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
    fail("--device cuda: GPU latency tables are not implemented yet (the dense fp16 path and attention have no GPU "
         "implementation in this build); use --device cpu");
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

  Rotation arena(arena_bytes, 1);
  Timer timer{&arena, llc, cap, opts.repeats, opts.min_sample_us};
  const int64_t total = static_cast<int64_t>(shapes.size() + kv_counts.size() * tokens.size() + 2 * tokens.size());
  std::unique_ptr<Progress> bar;
  if (opts.progress) bar = std::make_unique<Progress>("lut", total, "entries");

  const int64_t H = model.hidden_size, hd = model.head_dim, g = model.num_heads / model.num_kv_heads;
  const double eps = model.rms_norm_eps;

  // ---- linears ----
  json linears = json::array();
  for (const auto& s : shapes) {
    const int M = static_cast<int>(s.M), N = static_cast<int>(s.N), K = static_cast<int>(s.K);
    auto x = at::randn({s.M, s.K});
    double us;
    if (s.bits == 16) {
      us = timer.time(static_cast<size_t>(s.N * s.K * 4), [&](uint8_t* p) {
        auto y = at::linear(x, weight_view(p, s.N, s.K));
        (void)y;
      });
    } else {
      const kernels::QLayout lay = kernels::make_layout(s.bits, s.group, N, K);
      const size_t cb = align_up(lay.code_bytes), sb = align_up(lay.scale_bytes);
      us = timer.time(cb + 2 * sb, [&](uint8_t* p) {
        const kernels::QMatrixView w{s.bits, s.group, N, K, p, reinterpret_cast<const uint16_t*>(p + cb),
                                     reinterpret_cast<const uint16_t*>(p + cb + sb)};
        auto y = at::empty({s.M, s.N}, at::kFloat);
        kernels::qgemm_cpu(x.data_ptr<float>(), M, w, nullptr, y.data_ptr<float>(), threads);
      });
    }
    linears.push_back({{"N", s.N}, {"K", s.K}, {"bits", s.bits}, {"group", s.group}, {"M", s.M}, {"us", round_us(us)}});
    if (bar) bar->advance(1, fmt::format("N={} K={} b={} M={}", s.N, s.K, s.bits, s.M));
  }

  // ---- attention core per KV-group count (RoPE, cache append, scores, masked softmax, weighted sum) ----
  const at::Tensor inv_freq = rope_inv_freq(model);
  json attention = json::array();
  for (int64_t M : tokens) {
    const int64_t T = std::max(opts.context, M), past = T - M;
    auto freqs = at::arange(past, T, at::kLong).to(at::kFloat).unsqueeze(-1) * inv_freq;  // (M, hd/2)
    auto emb = at::cat({freqs, freqs}, -1).view({1, 1, M, hd});
    auto cos = emb.cos(), sin = emb.sin();
    auto allowed = at::arange(T, at::kLong).view({1, T}) <= at::arange(past, T, at::kLong).view({M, 1});
    auto bias = at::zeros({1, 1, 1, M, T}, at::kFloat).masked_fill(allowed.logical_not().view({1, 1, 1, M, T}), -1e30f);
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    for (int64_t h : kv_counts) {
      const int64_t nq = h * g;
      auto q_in = at::randn({1, M, nq * hd}), k_in = at::randn({1, M, h * hd}), v_in = at::randn({1, M, h * hd});
      const size_t cache_bytes = static_cast<size_t>(h * T * hd * 4);
      double us = timer.time(2 * align_up(cache_bytes), [&](uint8_t* p) {
        auto kc = at::from_blob(p, {1, h, T, hd}, at::kFloat);
        auto vc = at::from_blob(p + align_up(cache_bytes), {1, h, T, hd}, at::kFloat);
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
      });
      attention.push_back({{"kv_heads", h}, {"M", M}, {"us", round_us(us)}});
      if (bar) bar->advance(1, fmt::format("attention h={} M={}", h, M));
    }
  }

  // ---- per-layer elementwise costs ----
  json layer_fixed = json::array();
  const int64_t I = model.intermediate_size;
  auto norm_w = at::ones({H}) + 0.01 * at::randn({H});
  for (int64_t M : tokens) {
    auto x = at::randn({1, M, H}), attn_out = at::randn({1, M, H});
    auto gate = at::randn({1, M, I}), up = at::randn({1, M, I});
    double attn_us = timer.time(0, [&](uint8_t*) {
      auto h = rms_norm(x, norm_w, eps);
      auto r = x + attn_out;
      (void)h;
    });
    double mlp_us = timer.time(0, [&](uint8_t*) {
      auto h = rms_norm(x, norm_w, eps);
      auto a = at::silu(gate) * up;
      auto r = x + attn_out;
      (void)h;
    });
    layer_fixed.push_back(
        {{"M", M}, {"us", round_us(round_us(attn_us) + round_us(mlp_us))}, {"attn_us", round_us(attn_us)}, {"mlp_us", round_us(mlp_us)}});
    if (bar) bar->advance(1, fmt::format("layer fixed M={}", M));
  }

  // ---- model-level costs: embedding, RoPE tables and mask, final norm, lm_head ----
  json model_fixed = json::array();
  const int64_t V = model.vocab_size;
  const size_t table_bytes = align_up(static_cast<size_t>(V * H * 4));
  for (int64_t M : tokens) {
    auto ids = at::randint(V, {1, M}, at::kLong);
    const int64_t T = std::max(opts.context, M), past = T - M;
    auto positions = at::arange(past, T, at::kLong).view({1, M});
    const size_t bytes = model.tie_word_embeddings ? table_bytes : 2 * table_bytes;
    double us = timer.time(bytes, [&](uint8_t* p) {
      auto embed = weight_view(p, V, H);
      auto head = model.tie_word_embeddings ? embed : weight_view(p + table_bytes, V, H);
      auto x = at::embedding(embed, ids);
      auto freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;
      auto emb = at::cat({freqs, freqs}, -1).unsqueeze(1);
      auto cos = emb.cos(), sin = emb.sin();
      auto q_slot = at::arange(past, T, at::kLong).view({M, 1});
      auto allowed = at::arange(T, at::kLong).view({1, T}) <= q_slot;
      auto bias = at::zeros({1, 1, 1, M, T}, at::kFloat).masked_fill(allowed.logical_not().view({1, 1, 1, M, T}), -1e30f);
      auto y = at::linear(rms_norm(x, norm_w, eps), head);
    });
    model_fixed.push_back({{"M", M}, {"us", round_us(us)}});
    if (bar) bar->advance(1, fmt::format("model fixed M={}", M));
  }
  if (bar) bar->finish();

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
                {"min_sample_us", opts.min_sample_us},
                {"llc_bytes", llc},
                {"rotation_bytes", arena_bytes},
                {"dense_path", "at::linear fp32"},
                {"wall_s", std::round(wall_s * 10) / 10}};
  spdlog::info("lut: {} entries in {:.1f} s", total, wall_s);
  return lut_text(j);
}

}  // namespace llmc
