#include "llmc/latency/bench.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include <fmt/ranges.h>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/log.h"
#include "llmc/core/timing.h"
#include "llmc/latency/lut.h"
#include "llmc/model/arch.h"
#include "llmc/model/plan.h"
#include "llmc/runtime/engine.h"
#include "llmc/runtime/profile.h"
#include "llmc_kernels/membw.h"
#include "llmc_kernels/qgemm.h"

namespace llmc {

namespace {

using clock_t_ = std::chrono::steady_clock;
double secs(clock_t_::time_point a, clock_t_::time_point b) { return std::chrono::duration<double>(b - a).count(); }

int64_t argmax(const float* p, int64_t n) { return std::max_element(p, p + n) - p; }

int64_t model_file_bytes(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return static_cast<int64_t>(fs::file_size(path, ec));
  int64_t total = 0;
  for (const auto& e : fs::directory_iterator(path, ec))
    if (e.is_regular_file() && e.path().extension() == ".safetensors") total += static_cast<int64_t>(e.file_size());
  return total;
}

double loadavg_1min() {
  double l1 = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l1) != 1) l1 = -1;
    std::fclose(f);
  }
  return l1;
}

// A line "key:   N kB" of /proc/self/status in bytes; -1 when unreadable (not Linux).
int64_t proc_status_bytes(const char* key) {
  int64_t out = -1;
  if (FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    const size_t n = std::strlen(key);
    while (std::fgets(line, sizeof line, f)) {
      long long kb = 0;
      if (std::strncmp(line, key, n) == 0 && line[n] == ':' && std::sscanf(line + n + 1, "%lld", &kb) == 1) {
        out = static_cast<int64_t>(kb) * 1024;
        break;
      }
    }
    std::fclose(f);
  }
  return out;
}

BenchComparison compare(double predicted, double measured) {
  BenchComparison c;
  c.predicted = predicted;
  c.measured = measured;
  c.measured_over_predicted = measured / predicted;
  return c;
}

// A prediction from an exported folder's export_report.json (the export's own LUT estimate), if any.
std::optional<BenchPrediction> report_prediction(const std::string& model_path, double pm, double dm, int64_t P,
                                                 int64_t N) {
  const std::string rep_path = path_join(model_path, "export_report.json");
  if (!dir_exists(model_path) || !file_exists(rep_path)) return std::nullopt;
  try {
    auto rep = nlohmann::json::parse(read_text_file(rep_path));
    if (!rep.contains("predicted") || !rep["predicted"].is_object()) return std::nullopt;
    const double ms = rep["predicted"].value("latency_ms", -1.0);
    const int64_t toks = rep["predicted"].value("tokens", int64_t{1});
    if (ms <= 0) return std::nullopt;
    BenchPrediction p;
    p.lut = "export_report.json";
    if (toks == 1) {
      p.decode_ms = compare(ms, 1000.0 * dm / N);
    } else {
      p.prefill_ms = compare(ms, 1000.0 * pm * toks / P);
      p.prefill_ms->tokens = toks;
    }
    return p;
  } catch (const std::exception& e) {
    spdlog::warn("{}: cannot read the LUT prediction ({})", rep_path, e.what());
  }
  return std::nullopt;
}

// c's parts from the LUT's split of its prediction (us).
void add_parts(BenchComparison& c, const LatencyParts& parts) {
  for (const auto& [bits, us] : parts.linears_us)
    c.parts_us.emplace_back(bits == 16 ? "linears 16-bit (dense)" : fmt::format("linears {}-bit", bits), us);
  c.parts_us.emplace_back("attention", parts.attention_us);
  c.parts_us.emplace_back("norms, SwiGLU, residuals", parts.layer_fixed_us);
  c.parts_us.emplace_back("embedding, final norm, lm_head", parts.model_fixed_us);
  c.parts_us.emplace_back("not in the LUT", 1000.0 * (c.measured - c.predicted));
}

nlohmann::ordered_json comparison_json(const BenchComparison& c) {
  nlohmann::ordered_json j{
      {"predicted", c.predicted}, {"measured", c.measured}, {"measured_over_predicted", c.measured_over_predicted}};
  if (c.mean_context) j["mean_context"] = *c.mean_context;
  if (c.lut_context) j["lut_context"] = *c.lut_context;
  if (c.tokens) j["tokens"] = *c.tokens;
  if (!c.parts_us.empty()) {
    nlohmann::ordered_json parts = nlohmann::ordered_json::object();
    for (const auto& [name, us] : c.parts_us) parts[name] = us;
    j["parts_us"] = parts;
  }
  return j;
}

// printf-style append: the text output keeps printf's number formatting byte for byte.
void appendf(std::string& out, const char* format, ...) {
  va_list ap, ap2;
  va_start(ap, format);
  va_copy(ap2, ap);
  const int n = std::vsnprintf(nullptr, 0, format, ap);
  va_end(ap);
  if (n > 0) {
    std::string buf(static_cast<size_t>(n) + 1, '\0');
    std::vsnprintf(buf.data(), buf.size(), format, ap2);
    out.append(buf.data(), static_cast<size_t>(n));
  }
  va_end(ap2);
}

// The rows of a profile `prof` gathered over `units` forwards of M tokens each in `wall` seconds, per
// forward (us): linears by decreasing time (with their weight GB/s at M = 1), the LUT's parts, then
// "outside the ops"; each next to `lut`'s time where it has M-token entries.
std::vector<ProfileRow> profile_rows(const rt::OpProfile& prof, int64_t units, int64_t M, double wall,
                                     const LatencyTable* lut, const Arch& arch) {
  const double per = 1e6 / static_cast<double>(units);  // seconds in total -> us per forward
  if (lut && std::find(lut->tokens().begin(), lut->tokens().end(), M) == lut->tokens().end()) lut = nullptr;
  double timed = 0;
  std::vector<ProfileRow> rows;
  for (const auto& [key, t] : prof.linears) {
    const auto [N, K, bits, group] = key;
    ProfileRow r{fmt::format("linear N={} K={} {}", N, K, bits == 16 ? "dense" : fmt::format("{}-bit", bits)),
                 t.calls / static_cast<double>(units), t.seconds * per, std::nullopt, std::nullopt};
    const double bytes = static_cast<double>(linear_stored_bytes({N, K}, bits, group, sizeof(float)));
    if (r.us > 0 && M == 1) r.gbps = bytes * r.calls / r.us / 1e3;  // bytes per us = MB/s
    if (lut)
      if (const double* us = lut->find_linear_us(N, K, bits, M)) r.lut_us = *us * r.calls;
    rows.push_back(r);
    timed += t.seconds;
  }
  std::sort(rows.begin(), rows.end(), [](const ProfileRow& a, const ProfileRow& b) { return a.us > b.us; });
  const std::optional<LatencyParts> parts = lut ? std::optional(lut->predict_parts(arch, M)) : std::nullopt;
  const std::pair<const char*, double LatencyParts::*> groups[] = {{rt::OpProfile::kAttention, &LatencyParts::attention_us},
                                                                    {rt::OpProfile::kLayerFixed, &LatencyParts::layer_fixed_us},
                                                                    {rt::OpProfile::kModelFixed, &LatencyParts::model_fixed_us}};
  for (const auto& [g, part] : groups) {
    const rt::OpTime t = prof.groups.count(g) ? prof.groups.at(g) : rt::OpTime{};
    ProfileRow r{g, t.calls / static_cast<double>(units), t.seconds * per, std::nullopt, std::nullopt};
    if (parts) r.lut_us = (*parts).*part;
    rows.push_back(r);
    timed += t.seconds;
  }
  rows.push_back({"outside the ops", 0, (wall - timed) * per, std::nullopt, std::nullopt});
  return rows;
}

// BenchOptions::profile: five more prefills of `prompt`, each timed op by op, then n tokens decoded
// after the last of them, every op timed; res.prefill_profile is the prefill of median wall time (a
// VM's stalls hit single prefills: one of three took 1.4x the others, 2 threads), res.profile per
// token, next to `lut` (may be null) for `arch`.
void profile_forwards(RuntimeEngine& eng, const std::vector<int64_t>& prompt, int64_t n, const LatencyTable* lut,
                      const Arch& arch, BenchResult& res) {
  const int64_t P = static_cast<int64_t>(prompt.size()), V = eng.config().vocab_size;
  constexpr int kPrefills = 5;
  std::vector<std::pair<double, rt::OpProfile>> runs(kPrefills);
  std::unique_ptr<KVCache> cache;
  int64_t next = 0;
  for (auto& [wall, prof] : runs) {
    cache = eng.new_cache(1, P + n);
    eng.set_profile(&prof);
    const auto t0 = clock_t_::now();
    next = argmax(eng.prefill(prompt.data(), P, *cache), V);
    wall = secs(t0, clock_t_::now());
    eng.set_profile(nullptr);
  }
  std::sort(runs.begin(), runs.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  const auto& [wall_med, prof_med] = runs[kPrefills / 2];
  res.prefill_profile = profile_rows(prof_med, 1, P, wall_med, lut, arch);
  res.profile_prefill_ms = wall_med * 1e3;

  rt::OpProfile prof;
  eng.set_profile(&prof);
  const auto t0 = clock_t_::now();
  for (int64_t i = 0; i < n; ++i) next = argmax(eng.decode(next, *cache), V);
  const double wall = secs(t0, clock_t_::now());
  eng.set_profile(nullptr);
  res.profile = profile_rows(prof, n, 1, wall, lut, arch);
  res.profile_decode_ms = wall * 1e3 / static_cast<double>(n);
}

void check_counts(const BenchOptions& opts) {
  LLMC_CHECK(opts.prompt_tokens >= 1 && opts.new_tokens >= 1, "bench: prompt and new token counts must be >= 1");
  LLMC_CHECK(opts.repeats >= 1 && opts.warmup >= 0, "bench: repeats must be >= 1 and warmup >= 0");
}

// The timed prompt: P tokens below `vocab` from `seed`, BOS first where bos >= 0.
std::vector<int64_t> random_prompt(int64_t P, int64_t vocab, int64_t bos, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> prompt(static_cast<size_t>(P));
  for (auto& t : prompt) t = static_cast<int64_t>(rng() % static_cast<uint64_t>(vocab));
  if (bos >= 0) prompt[0] = bos;
  return prompt;
}

// Medians and ratios of a versus result from its per-repeat times.
void finish_versus(BenchVersusResult& r) {
  r.decode_ratios.clear();
  r.prefill_ratios.clear();
  for (size_t i = 0; i < r.a_decode_s.size(); ++i) {
    r.decode_ratios.push_back(r.a_decode_s[i] / r.b_decode_s[i]);
    r.prefill_ratios.push_back(r.a_prefill_s[i] / r.b_prefill_s[i]);
  }
  r.a_decode_ms_per_token = 1000.0 * median(r.a_decode_s) / r.new_tokens;
  r.b_decode_ms_per_token = 1000.0 * median(r.b_decode_s) / r.new_tokens;
  r.a_prefill_tokens_per_s = r.prompt_tokens / median(r.a_prefill_s);
  r.b_prefill_tokens_per_s = r.prompt_tokens / median(r.b_prefill_s);
  r.decode_ratio = median(r.decode_ratios);
  r.prefill_ratio = median(r.prefill_ratios);
}

}  // namespace

BenchResult run_bench(Llama& model, const BenchOptions& opts) {
  check_counts(opts);
  const auto& cfg = model.config();
  const int64_t P = opts.prompt_tokens, N = opts.new_tokens, V = cfg.vocab_size;
  const int threads = at::get_num_threads();
  kernels::set_default_num_threads(threads);
  RuntimeLlama* rt = dynamic_cast<RuntimeLlama*>(&model);  // the engine's prefill/decode, not the generic forward
  BenchResult res;
  res.model = opts.model_path;
  res.engine = rt ? "runtime" : "torch";
  res.threads = threads;
  res.isa = kernels::isa_name(kernels::best_isa());
  res.prefill_x_bits = kernels::prefill_x_bits_here();
  res.prompt_tokens = P;
  res.new_tokens = N;
  res.repeats = opts.repeats;

  // The LUT and what it predicts are checked before minutes of measuring, not after.
  std::unique_ptr<LatencyTable> lut;
  Arch arch;
  bool lut_decode = false, lut_prefill = false;
  if (!opts.lut_path.empty()) {
    lut = std::make_unique<LatencyTable>(LatencyTable::load(opts.lut_path));
    LLMC_CHECK(rt, "--lut: the LUT times the runtime engine; use --engine runtime (or auto on an exported folder)");
    const int lm_bits = rt->engine().lm_head_bits();
    if (!lut->times_lm_head(lm_bits))
      fail("--lut {}: timed a {}-bit lm_head, this model's is {}-bit (rebuild with `lut --lm-head-bits {}`)",
           opts.lut_path, lut->lm_head_bits(), lm_bits, lm_bits);
    const auto& toks = lut->tokens();
    lut_decode = std::find(toks.begin(), toks.end(), 1) != toks.end();
    lut_prefill = std::find(toks.begin(), toks.end(), P) != toks.end();
    if (!lut_decode && !lut_prefill)
      fail("--lut {}: has token counts [{}], neither 1 (decode) nor --prompt-tokens {}", opts.lut_path,
           fmt::join(toks, ", "), P);
    // The exported folder's architecture, else the model as it is (all widths, 16 bits).
    const std::string arch_path = path_join(opts.model_path, "arch.json");
    arch = dir_exists(opts.model_path) && file_exists(arch_path) ? read_arch(arch_path)
                                                                 : uniform_arch(cfg, 16, lut->space().group_size);
    arch.lm_head_bits = lm_bits;  // the model's own lm_head, whatever the arch file says
    (void)lut->predict_ms(arch, lut_decode ? 1 : P);  // an arch of another model or group size fails here
    if (lut->threads() != threads)
      spdlog::warn("--lut {}: measured with {} threads, this run uses {}", opts.lut_path, lut->threads(), threads);
  }

  const std::vector<int64_t> prompt = random_prompt(P, V, cfg.bos_token_id, opts.seed);

  at::NoGradGuard ng;
  for (int r = 0; r < opts.warmup + opts.repeats; ++r) {
    double tp = 0, td = 0, cp = 0, cd = 0;
    if (rt) {
      auto& eng = rt->engine();
      auto cache = eng.new_cache(1, P + N);
      const double c0 = thread_cpu_seconds();
      auto t0 = clock_t_::now();
      const float* lg = eng.prefill(prompt.data(), P, *cache);
      auto t1 = clock_t_::now();
      const double c1 = thread_cpu_seconds();
      int64_t next = argmax(lg, V);
      for (int64_t i = 0; i < N; ++i) next = argmax(eng.decode(next, *cache), V);
      auto t2 = clock_t_::now();
      const double c2 = thread_cpu_seconds();
      tp = secs(t0, t1);
      td = secs(t1, t2);
      cp = c1 - c0;
      cd = c2 - c1;
    } else {
      // Llama:: explicitly: the libtorch reference forward, whatever a subclass overrides.
      auto cache = model.Llama::new_cache(1, P + N);
      auto mask = at::ones({1, P + N}, at::kBool);
      auto tokens = at::tensor(prompt, at::kLong).view({1, P});
      auto t0 = clock_t_::now();
      auto logits =
          model.Llama::forward(tokens, at::arange(P, at::kLong).view({1, P}), mask.narrow(1, 0, P), cache.get());
      int64_t next = logits.select(1, P - 1).argmax(-1).item<int64_t>();
      auto t1 = clock_t_::now();
      for (int64_t i = 0; i < N; ++i) {
        const int64_t pos = cache->len;
        auto lg = model.Llama::forward(at::full({1, 1}, next, at::kLong), at::full({1, 1}, pos, at::kLong),
                                       mask.narrow(1, 0, pos + 1), cache.get());
        next = argmax(lg.contiguous().data_ptr<float>(), V);
      }
      auto t2 = clock_t_::now();
      tp = secs(t0, t1);
      td = secs(t1, t2);
    }
    if (r >= opts.warmup) {
      res.prefill_s.push_back(tp);
      res.decode_s.push_back(td);
      res.prefill_cpu_s.push_back(cp);
      res.decode_cpu_s.push_back(cd);
    }
    spdlog::debug("bench: repeat {}: prefill {:.4f} s, decode {:.4f} s", r, tp, td);
  }
  if (opts.profile) {
    LLMC_CHECK(rt, "bench --profile: times the runtime engine's ops; use --engine runtime (or auto on an exported folder)");
    profile_forwards(rt->engine(), prompt, N, lut.get(), arch, res);
  }
  const double pm = median(res.prefill_s), dm = median(res.decode_s);
  res.prefill_tokens_per_s = P / pm;
  res.decode_tokens_per_s = N / dm;
  res.decode_ms_per_token = 1000.0 * dm / N;
  res.model_file_bytes = model_file_bytes(opts.model_path);
  res.loadavg_1min = loadavg_1min();  // other processes share the cores
  res.rss_bytes = proc_status_bytes("VmRSS");       // resident now: the loaded model, caches freed
  res.peak_rss_bytes = proc_status_bytes("VmHWM");  // the most it held, loading included
  if (rt) {
    res.weight_bytes_per_token = rt->engine().bytes_per_token();
    res.huge_page_bytes = rt->engine().huge_page_bytes();
    res.tiled_copy_bytes = rt->engine().tiled_bytes();  // the matrices held in the row-tiled layout (tiled_faster widths)
  }
  if (opts.bandwidth) {
    const size_t bytes = static_cast<size_t>(std::max<int64_t>(4 * last_level_cache_bytes(), int64_t{256} << 20));
    const kernels::ReadBandwidth bw = kernels::read_bandwidth(bytes, threads, 10);
    BenchBandwidth b;
    b.read_gbps = bw.best_gbps;
    b.read_median_gbps = bw.median_gbps;
    b.probe_bytes = static_cast<int64_t>(bw.bytes);
    const int64_t wb = rt ? res.weight_bytes_per_token : res.model_file_bytes;  // torch: the file's bytes
    b.decode_weight_gbps = static_cast<double>(wb) * res.decode_tokens_per_s / 1e9;
    b.decode_pct_of_read = 100.0 * b.decode_weight_gbps / b.read_gbps;
    res.bandwidth = b;
  }
  if (lut) {
    // Decode (M = 1, attention over the LUT's context) and prefill (M = prompt tokens). One
    // thread: compared on the LUT's clock (thread CPU time), immune to other processes.
    const bool cpu_clock = threads == 1 && lut->threads() == 1;
    const double pm_c = cpu_clock ? median(res.prefill_cpu_s) : pm, dm_c = cpu_clock ? median(res.decode_cpu_s) : dm;
    BenchPrediction p;
    p.lut = opts.lut_path;
    p.clock = cpu_clock ? "thread cpu time" : "wall time";
    p.lut_threads = lut->threads();
    if (lut_decode) {
      p.decode_ms = compare(lut->predict_ms(arch, 1), 1000.0 * dm_c / N);
      add_parts(*p.decode_ms, lut->predict_parts(arch, 1));
      // Decode step i attends over P + i + 1 positions; the LUT's decode entries over its context.
      p.decode_ms->mean_context = static_cast<double>(P) + static_cast<double>(N + 1) / 2.0;
      p.decode_ms->lut_context = lut->context();
    }
    if (lut_prefill) {
      p.prefill_ms = compare(lut->predict_ms(arch, P), 1000.0 * pm_c);
      add_parts(*p.prefill_ms, lut->predict_parts(arch, P));
    }
    res.predicted = std::move(p);
  } else {
    res.predicted = report_prediction(opts.model_path, pm, dm, P, N);
  }
  return res;
}

BenchVersusResult run_bench_versus(Llama& a, Llama& b, const std::string& b_path, const BenchOptions& opts) {
  check_counts(opts);
  LLMC_CHECK(opts.lut_path.empty() && !opts.profile && !opts.bandwidth,
             "bench --versus: times two models against each other; --lut, --profile and --bandwidth are for one");
  RuntimeLlama* ra = dynamic_cast<RuntimeLlama*>(&a);
  RuntimeLlama* rb = dynamic_cast<RuntimeLlama*>(&b);
  if (!ra || !rb)
    fail("bench --versus: {} runs on the torch engine; both models must run on the runtime engine (exported "
         "folders, or --engine runtime)",
         !ra ? opts.model_path : b_path);
  const int64_t P = opts.prompt_tokens, N = opts.new_tokens;
  const int threads = at::get_num_threads();
  kernels::set_default_num_threads(threads);
  BenchVersusResult res;
  res.a = opts.model_path;
  res.b = b_path;
  res.threads = threads;
  res.isa = kernels::isa_name(kernels::best_isa());
  res.prefill_x_bits = kernels::prefill_x_bits_here();
  res.prompt_tokens = P;
  res.new_tokens = N;
  res.repeats = opts.repeats;

  // One prompt for both: tokens both vocabularies hold, BOS where both have the same.
  const int64_t bos = a.config().bos_token_id == b.config().bos_token_id ? a.config().bos_token_id : -1;
  const std::vector<int64_t> prompt =
      random_prompt(P, std::min(a.config().vocab_size, b.config().vocab_size), bos, opts.seed);

  struct Side {
    RuntimeEngine* eng;
    int64_t vocab;
    std::unique_ptr<KVCache> cache;
    int64_t next = 0;
    double prefill = 0, decode = 0;
  };
  Side side[2] = {{&ra->engine(), a.config().vocab_size, nullptr}, {&rb->engine(), b.config().vocab_size, nullptr}};
  at::NoGradGuard ng;
  for (int r = 0; r < opts.warmup + opts.repeats; ++r) {
    const int first = r % 2;  // who goes first alternates
    for (Side& s : side) {
      s.cache = s.eng->new_cache(1, P + N);
      s.prefill = s.decode = 0;
    }
    for (int k = 0; k < 2; ++k) {
      Side& s = side[(first + k) % 2];
      const auto t0 = clock_t_::now();
      s.next = argmax(s.eng->prefill(prompt.data(), P, *s.cache), s.vocab);
      s.prefill = secs(t0, clock_t_::now());
    }
    for (int64_t i = 0; i < N; ++i) {
      for (int k = 0; k < 2; ++k) {
        Side& s = side[(first + k) % 2];
        const auto t0 = clock_t_::now();
        s.next = argmax(s.eng->decode(s.next, *s.cache), s.vocab);
        s.decode += secs(t0, clock_t_::now());
      }
    }
    if (r < opts.warmup) continue;
    res.a_prefill_s.push_back(side[0].prefill);
    res.b_prefill_s.push_back(side[1].prefill);
    res.a_decode_s.push_back(side[0].decode);
    res.b_decode_s.push_back(side[1].decode);
  }
  finish_versus(res);
  res.loadavg_1min = loadavg_1min();
  return res;
}

BenchVersusResult merge_load_orders(const BenchVersusResult& ab, const BenchVersusResult& ba) {
  LLMC_CHECK(ab.a == ba.b && ab.b == ba.a && ab.new_tokens == ba.new_tokens && ab.prompt_tokens == ba.prompt_tokens,
             "bench --versus: the two load orders must time the same models with the same tokens");
  BenchVersusResult r = ab;
  auto join = [](std::vector<double>& to, const std::vector<double>& from) { to.insert(to.end(), from.begin(), from.end()); };
  join(r.a_decode_s, ba.b_decode_s);
  join(r.b_decode_s, ba.a_decode_s);
  join(r.a_prefill_s, ba.b_prefill_s);
  join(r.b_prefill_s, ba.a_prefill_s);
  r.repeats = ab.repeats + ba.repeats;
  r.loadavg_1min = ba.loadavg_1min;
  finish_versus(r);
  return r;
}

std::string bench_versus_to_json(const BenchVersusResult& r) {
  nlohmann::ordered_json j;
  j["a"] = r.a;
  j["b"] = r.b;
  j["engine"] = "runtime";
  j["threads"] = r.threads;
  j["isa"] = r.isa;
  j["prefill_x_bits"] = r.prefill_x_bits;
  j["prompt_tokens"] = r.prompt_tokens;
  j["new_tokens"] = r.new_tokens;
  j["repeats"] = r.repeats;
  j["decode_ratio"] = r.decode_ratio;
  j["decode_ratios"] = r.decode_ratios;
  j["prefill_ratio"] = r.prefill_ratio;
  j["prefill_ratios"] = r.prefill_ratios;
  j["a_decode_ms_per_token"] = r.a_decode_ms_per_token;
  j["b_decode_ms_per_token"] = r.b_decode_ms_per_token;
  j["a_prefill_tokens_per_s"] = r.a_prefill_tokens_per_s;
  j["b_prefill_tokens_per_s"] = r.b_prefill_tokens_per_s;
  j["a_decode_s"] = r.a_decode_s;
  j["b_decode_s"] = r.b_decode_s;
  j["a_prefill_s"] = r.a_prefill_s;
  j["b_prefill_s"] = r.b_prefill_s;
  j["loadavg_1min"] = r.loadavg_1min;
  return j.dump(2);
}

std::string bench_versus_to_text(const BenchVersusResult& r) {
  std::string out;
  appendf(out, "a         %s\nb         %s\n", r.a.c_str(), r.b.c_str());
  appendf(out, "          runtime engine, %d threads, %s, load average %.2f; token by token in turn\n", r.threads,
          r.isa.c_str(), r.loadavg_1min);
  const auto [dlo, dhi] = std::minmax_element(r.decode_ratios.begin(), r.decode_ratios.end());
  appendf(out, "decode    %lld tokens: a %.3f ms/token, b %.3f ms/token; a / b %.3f (median of %d repeats; %.3f-%.3f)\n",
          static_cast<long long>(r.new_tokens), r.a_decode_ms_per_token, r.b_decode_ms_per_token, r.decode_ratio,
          r.repeats, *dlo, *dhi);
  const auto [plo, phi] = std::minmax_element(r.prefill_ratios.begin(), r.prefill_ratios.end());
  appendf(out, "prefill   %lld tokens: a %.1f tok/s, b %.1f tok/s; a / b time %.3f (%.3f-%.3f)\n",
          static_cast<long long>(r.prompt_tokens), r.a_prefill_tokens_per_s, r.b_prefill_tokens_per_s, r.prefill_ratio,
          *plo, *phi);
  return out;
}

std::string bench_to_json(const BenchResult& r) {
  nlohmann::ordered_json j;
  j["model"] = r.model;
  j["engine"] = r.engine;
  j["threads"] = r.threads;
  j["isa"] = r.isa;
  j["prefill_x_bits"] = r.prefill_x_bits;
  j["prompt_tokens"] = r.prompt_tokens;
  j["new_tokens"] = r.new_tokens;
  j["repeats"] = r.repeats;
  j["prefill_tokens_per_s"] = r.prefill_tokens_per_s;
  j["decode_tokens_per_s"] = r.decode_tokens_per_s;
  j["decode_ms_per_token"] = r.decode_ms_per_token;
  j["prefill_s"] = r.prefill_s;
  j["decode_s"] = r.decode_s;
  const bool runtime = r.engine == "runtime";
  if (runtime && r.threads == 1) {  // the calling thread does all the work
    j["prefill_cpu_s"] = r.prefill_cpu_s;
    j["decode_cpu_s"] = r.decode_cpu_s;
  }
  j["model_file_bytes"] = r.model_file_bytes;
  j["loadavg_1min"] = r.loadavg_1min;
  j["rss_bytes"] = r.rss_bytes;
  j["peak_rss_bytes"] = r.peak_rss_bytes;
  if (runtime) {
    j["weight_bytes_per_token"] = r.weight_bytes_per_token;
    j["tiled_copy_bytes"] = r.tiled_copy_bytes;
    j["huge_page_bytes"] = r.huge_page_bytes;
  }
  if (r.bandwidth) {
    const BenchBandwidth& b = *r.bandwidth;
    j["bandwidth"] = {{"read_gbps", b.read_gbps},
                      {"read_median_gbps", b.read_median_gbps},
                      {"probe_bytes", b.probe_bytes},
                      {"decode_weight_gbps", b.decode_weight_gbps},
                      {"decode_pct_of_read", b.decode_pct_of_read}};
  }
  if (!r.profile.empty()) {
    auto rows_json = [](const std::vector<ProfileRow>& rows) {
      nlohmann::ordered_json a = nlohmann::ordered_json::array();
      for (const ProfileRow& p : rows) {
        nlohmann::ordered_json row{{"op", p.op}, {"calls", p.calls}, {"us", p.us}};
        if (p.lut_us) row["lut_us"] = *p.lut_us;
        if (p.gbps) row["gbps"] = *p.gbps;
        a.push_back(row);
      }
      return a;
    };
    j["profile"] = {{"decode_ms_per_token", r.profile_decode_ms},
                    {"per_token", rows_json(r.profile)},
                    {"prefill_ms", r.profile_prefill_ms},
                    {"per_prefill", rows_json(r.prefill_profile)}};
  }
  j["predicted"] = nullptr;
  if (r.predicted) {
    const auto& p = *r.predicted;
    nlohmann::ordered_json pj;
    pj["lut"] = p.lut;
    if (p.clock) pj["clock"] = *p.clock;
    if (p.lut_threads) pj["lut_threads"] = *p.lut_threads;
    if (p.decode_ms) pj["decode_ms"] = comparison_json(*p.decode_ms);
    if (p.prefill_ms) pj["prefill_ms"] = comparison_json(*p.prefill_ms);
    j["predicted"] = pj;
  }
  return j.dump(2);
}

std::string bench_to_text(const BenchResult& r) {
  std::string out;
  appendf(out, "model     %s (%s engine, %d threads, %s, load average %.2f)\n", r.model.c_str(), r.engine.c_str(),
          r.threads, r.isa.c_str(), r.loadavg_1min);
  appendf(out, "prefill   %lld tokens: %.1f tok/s (median of %d)\n", static_cast<long long>(r.prompt_tokens),
          r.prefill_tokens_per_s, r.repeats);
  appendf(out, "decode    %lld tokens: %.1f tok/s, %.3f ms/token (median of %d)\n",
          static_cast<long long>(r.new_tokens), r.decode_tokens_per_s, r.decode_ms_per_token, r.repeats);
  if (r.rss_bytes >= 0)
    appendf(out, "resident  %.1f MB after the runs (peak %.1f MB)\n", r.rss_bytes / 1e6, r.peak_rss_bytes / 1e6);
  if (r.bandwidth) {
    const BenchBandwidth& b = *r.bandwidth;
    appendf(out, "memory    read-only probe %.1f GB/s (best of 10; median %.1f; %lld MiB buffer, %d threads); decode "
            "reads weights at %.1f GB/s = %.0f%% of it\n",
            b.read_gbps, b.read_median_gbps, static_cast<long long>(b.probe_bytes >> 20), r.threads,
            b.decode_weight_gbps, b.decode_pct_of_read);
  }
  auto print_rows = [&](const std::vector<ProfileRow>& rows) {
    for (const ProfileRow& p : rows) {
      std::string extra;
      if (p.gbps) {
        extra += fmt::format("  {:5.1f} GB/s", *p.gbps);
        if (r.bandwidth) extra += fmt::format(" ({:.0f}% of read)", 100.0 * *p.gbps / r.bandwidth->read_gbps);
      }
      if (p.lut_us) extra += fmt::format("  LUT {:8.1f} us  measured/LUT {:.2f}", *p.lut_us, p.us / *p.lut_us);
      appendf(out, "          %-34s %5.1f calls %8.1f us%s\n", p.op.c_str(), p.calls, p.us, extra.c_str());
    }
  };
  if (!r.profile.empty()) {
    appendf(out, "profile   one more decode, every op timed: %.3f ms/token; per token:\n", r.profile_decode_ms);
    print_rows(r.profile);
    appendf(out, "profile   prefills of %lld tokens, every op timed, the median of 5: %.3f ms (%.1f tok/s):\n",
            static_cast<long long>(r.prompt_tokens), r.profile_prefill_ms,
            1e3 * static_cast<double>(r.prompt_tokens) / r.profile_prefill_ms);
    print_rows(r.prefill_profile);
  }
  if (!r.predicted) return out;
  const auto& p = *r.predicted;
  for (const auto& [name, e] : {std::pair{"decode", &p.decode_ms}, std::pair{"prefill", &p.prefill_ms}}) {
    if (!*e) continue;
    const BenchComparison& c = **e;
    std::string ctx;
    if (c.lut_context)
      ctx = fmt::format("; LUT context {}, this decode's mean context {:g}", *c.lut_context,
                        c.mean_context.value_or(0));
    appendf(out, "LUT       %s: predicted %.3f ms, measured %.3f ms (measured/predicted %.2f; %s, %s%s)\n", name,
            c.predicted, c.measured, c.measured_over_predicted, p.lut.c_str(), p.clock.value_or("wall time").c_str(),
            ctx.c_str());
    if (c.parts_us.empty()) continue;
    std::string parts;
    for (const auto& [part, us] : c.parts_us)
      parts += fmt::format("{}{} {:.3f} ms ({:.0f}%)", parts.empty() ? "" : ", ", part, us / 1000.0,
                           100.0 * us / (1000.0 * c.measured));
    appendf(out, "          %s by part, of the measured time: %s\n", name, parts.c_str());
  }
  return out;
}

}  // namespace llmc
