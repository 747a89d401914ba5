// bench: prefill and batch-1 decode throughput of a model, median over repeats.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "commands.h"
#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/log.h"
#include "llmc/export/format.h"
#include "llmc/model/load.h"
#include "llmc/runtime/engine.h"
#include "llmc_kernels/qgemm.h"

namespace llmc::cli {

namespace {

struct BenchArgs {
  std::string model, engine = "auto", output;
  int64_t prompt_tokens = 128, new_tokens = 128;
  int repeats = 5, warmup = 1;
  uint64_t seed = 0;
  bool json = false;
};

using clock_t_ = std::chrono::steady_clock;
double secs(clock_t_::time_point a, clock_t_::time_point b) { return std::chrono::duration<double>(b - a).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

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

}  // namespace

Action add_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  app.add_option("--model", a->model, "Model: exported folder, HF folder or GGUF file")->required();
  app.add_option("--prompt-tokens", a->prompt_tokens, "Prompt length for prefill")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--new-tokens", a->new_tokens, "Tokens decoded one at a time")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--repeats", a->repeats, "Measured repetitions (the median is reported)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--warmup", a->warmup, "Unmeasured repetitions first")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--engine", a->engine, "auto (runtime for exported folders, else torch) | runtime | torch")->capture_default_str();
  app.add_option("--seed", a->seed, "Seed of the random prompt")->capture_default_str();
  app.add_flag("--json", a->json, "Print JSON");
  app.add_option("--output", a->output, "Also write the JSON result to this file (atomically)");
  return [a] {
    LLMC_CHECK(a->engine == "auto" || a->engine == "runtime" || a->engine == "torch",
               "--engine: '{}' is not auto, runtime or torch", a->engine);
    LoadOptions lo;
    lo.need_tokenizer = false;
    auto model = load_llama(a->model, lo);
    const auto& cfg = model->config();
    const int64_t P = a->prompt_tokens, N = a->new_tokens, V = cfg.vocab_size;
    const int threads = at::get_num_threads();
    kernels::set_default_num_threads(threads);
    std::unique_ptr<RuntimeLlama> own_rt;
    RuntimeLlama* rt = dynamic_cast<RuntimeLlama*>(model.get());
    std::string engine = a->engine == "auto" ? (rt ? "runtime" : "torch") : a->engine;
    if (engine == "runtime" && !rt) {
      own_rt = make_runtime(*model, threads);
      rt = own_rt.get();
    }
    std::mt19937_64 rng(a->seed);
    std::vector<int64_t> prompt(static_cast<size_t>(P));
    for (auto& t : prompt) t = static_cast<int64_t>(rng() % static_cast<uint64_t>(V));
    if (cfg.bos_token_id >= 0) prompt[0] = cfg.bos_token_id;

    std::vector<double> prefill_s, decode_s;
    at::NoGradGuard ng;
    for (int r = 0; r < a->warmup + a->repeats; ++r) {
      double tp = 0, td = 0;
      if (engine == "runtime") {
        auto& eng = rt->engine();
        auto cache = eng.new_cache(1, P + N);
        auto t0 = clock_t_::now();
        const float* lg = eng.prefill(prompt.data(), P, *cache);
        auto t1 = clock_t_::now();
        int64_t next = argmax(lg, V);
        for (int64_t i = 0; i < N; ++i) next = argmax(eng.decode(next, *cache), V);
        auto t2 = clock_t_::now();
        tp = secs(t0, t1);
        td = secs(t1, t2);
      } else {
        Llama& m = *model;
        auto cache = m.Llama::new_cache(1, P + N);
        auto mask = at::ones({1, P + N}, at::kBool);
        auto tokens = at::tensor(prompt, at::kLong).view({1, P});
        auto t0 = clock_t_::now();
        auto logits = m.Llama::forward(tokens, at::arange(P, at::kLong).view({1, P}), mask.narrow(1, 0, P), cache.get());
        int64_t next = logits.select(1, P - 1).argmax(-1).item<int64_t>();
        auto t1 = clock_t_::now();
        for (int64_t i = 0; i < N; ++i) {
          const int64_t pos = cache->len;
          auto lg = m.Llama::forward(at::full({1, 1}, next, at::kLong), at::full({1, 1}, pos, at::kLong),
                                     mask.narrow(1, 0, pos + 1), cache.get());
          next = argmax(lg.contiguous().data_ptr<float>(), V);
        }
        auto t2 = clock_t_::now();
        tp = secs(t0, t1);
        td = secs(t1, t2);
      }
      if (r >= a->warmup) {
        prefill_s.push_back(tp);
        decode_s.push_back(td);
      }
      spdlog::debug("bench: repeat {}: prefill {:.4f} s, decode {:.4f} s", r, tp, td);
    }
    const double pm = median(prefill_s), dm = median(decode_s);
    nlohmann::ordered_json j;
    j["model"] = a->model;
    j["engine"] = engine;
    j["threads"] = threads;
    j["isa"] = kernels::isa_name(kernels::best_isa());
    j["prompt_tokens"] = P;
    j["new_tokens"] = N;
    j["repeats"] = a->repeats;
    j["prefill_tokens_per_s"] = P / pm;
    j["decode_tokens_per_s"] = N / dm;
    j["decode_ms_per_token"] = 1000.0 * dm / N;
    j["prefill_s"] = prefill_s;
    j["decode_s"] = decode_s;
    j["model_file_bytes"] = model_file_bytes(a->model);
    {  // the machine's load while measuring (other processes share the cores)
      double l1 = -1;
      if (FILE* f = std::fopen("/proc/loadavg", "r")) {
        if (std::fscanf(f, "%lf", &l1) != 1) l1 = -1;
        std::fclose(f);
      }
      j["loadavg_1min"] = l1;
    }
    if (rt) j["weight_bytes_per_token"] = rt->engine().bytes_per_token();
    j["predicted"] = nullptr;
    const std::string rep_path = path_join(a->model, "export_report.json");
    if (dir_exists(a->model) && file_exists(rep_path)) {
      try {
        auto rep = nlohmann::json::parse(read_text_file(rep_path));
        if (rep.contains("predicted") && rep["predicted"].is_object()) {
          const double ms = rep["predicted"].value("latency_ms", -1.0);
          const int64_t toks = rep["predicted"].value("tokens", int64_t{1});
          if (ms > 0) {
            j["predicted"] = {{"latency_ms", ms},
                              {"tokens", toks},
                              {"measured_ms", toks == 1 ? 1000.0 * dm / N : 1000.0 * pm * toks / P},
                              {"measured_over_predicted", (toks == 1 ? 1000.0 * dm / N : 1000.0 * pm * toks / P) / ms}};
          }
        }
      } catch (const std::exception& e) {
        spdlog::warn("{}: cannot read the LUT prediction ({})", rep_path, e.what());
      }
    }
    const std::string out = j.dump(2);
    if (!a->output.empty()) write_file_atomic(a->output, out + "\n");
    if (a->json) {
      std::puts(out.c_str());
    } else {
      std::printf("model     %s (%s engine, %d threads, %s, load average %.2f)\n", a->model.c_str(), engine.c_str(),
                  threads, j["isa"].get<std::string>().c_str(), j["loadavg_1min"].get<double>());
      std::printf("prefill   %lld tokens: %.1f tok/s (median of %d)\n", static_cast<long long>(P), P / pm, a->repeats);
      std::printf("decode    %lld tokens: %.1f tok/s, %.3f ms/token (median of %d)\n", static_cast<long long>(N), N / dm,
                  1000.0 * dm / N, a->repeats);
      if (!j["predicted"].is_null())
        std::printf("LUT       predicted %.3f ms for %lld token(s), measured %.3f ms (measured/predicted %.2f)\n",
                    j["predicted"]["latency_ms"].get<double>(), static_cast<long long>(j["predicted"]["tokens"].get<int64_t>()),
                    j["predicted"]["measured_ms"].get<double>(), j["predicted"]["measured_over_predicted"].get<double>());
    }
    return 0;
  };
}

}  // namespace llmc::cli
