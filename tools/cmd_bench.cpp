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

#include <fmt/ranges.h>

#include "commands.h"
#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/log.h"
#include "llmc/core/timing.h"
#include "llmc/latency/lut.h"
#include "llmc/nas/arch.h"
#include "llmc/model/load.h"
#include "llmc/runtime/engine.h"
#include "llmc/runtime/open.h"
#include "llmc_kernels/qgemm.h"

namespace llmc::cli {

namespace {

struct BenchArgs {
  std::string model, engine = "auto", output, lut;
  int64_t prompt_tokens = 128, new_tokens = 128;
  int repeats = 5, warmup = 1;
  uint64_t seed = 0;
  bool json = false;
};

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
  app.add_option("--lut", a->lut,
                 "Latency table of the model's original shapes: print its prediction for this model (the "
                 "exported folder's arch.json, else all widths full at 16 bits) next to the measurement");
  return [a] {
    const EngineChoice choice = parse_engine(a->engine);
    LoadOptions lo;
    lo.need_tokenizer = false;
    auto model = open_model(a->model, lo, choice);
    const auto& cfg = model->config();
    const int64_t P = a->prompt_tokens, N = a->new_tokens, V = cfg.vocab_size;
    const int threads = at::get_num_threads();
    kernels::set_default_num_threads(threads);
    RuntimeLlama* rt = dynamic_cast<RuntimeLlama*>(model.get());
    const std::string engine = rt ? "runtime" : "torch";
    // The LUT and what it predicts are checked before minutes of measuring, not after.
    std::unique_ptr<LatencyTable> lut;
    Arch arch;
    bool lut_decode = false, lut_prefill = false;
    if (!a->lut.empty()) {
      lut = std::make_unique<LatencyTable>(LatencyTable::load(a->lut));
      LLMC_CHECK(engine == "runtime", "--lut: the LUT times the runtime engine; use --engine runtime (or auto on an "
                                      "exported folder)");
      const int lm_bits = rt->engine().lm_head_bits();
      if (lm_bits != lut->lm_head_bits())
        fail("--lut {}: timed a {}-bit lm_head, this model's is {}-bit (rebuild with `lut --lm-head-bits {}`)", a->lut,
             lut->lm_head_bits(), lm_bits, lm_bits);
      const auto& toks = lut->tokens();
      lut_decode = std::find(toks.begin(), toks.end(), 1) != toks.end();
      lut_prefill = std::find(toks.begin(), toks.end(), P) != toks.end();
      if (!lut_decode && !lut_prefill)
        fail("--lut {}: has token counts [{}], neither 1 (decode) nor --prompt-tokens {}", a->lut,
             fmt::join(toks, ", "), P);
      // The exported folder's architecture, else the model as it is (all widths, 16 bits).
      const std::string arch_path = path_join(a->model, "arch.json");
      arch = dir_exists(a->model) && file_exists(arch_path) ? read_arch(arch_path)
                                                            : uniform_arch(cfg, 16, lut->space().group_size);
      (void)lut->predict_ms(arch, lut_decode ? 1 : P);  // an arch of another model or group size fails here
      if (lut->threads() != threads)
        spdlog::warn("--lut {}: measured with {} threads, this run uses {}", a->lut, lut->threads(), threads);
    }
    std::mt19937_64 rng(a->seed);
    std::vector<int64_t> prompt(static_cast<size_t>(P));
    for (auto& t : prompt) t = static_cast<int64_t>(rng() % static_cast<uint64_t>(V));
    if (cfg.bos_token_id >= 0) prompt[0] = cfg.bos_token_id;

    std::vector<double> prefill_s, decode_s, prefill_cpu_s, decode_cpu_s;
    at::NoGradGuard ng;
    for (int r = 0; r < a->warmup + a->repeats; ++r) {
      double tp = 0, td = 0, cp = 0, cd = 0;
      if (engine == "runtime") {
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
        prefill_cpu_s.push_back(cp);
        decode_cpu_s.push_back(cd);
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
    if (engine == "runtime" && threads == 1) {  // the calling thread does all the work
      j["prefill_cpu_s"] = prefill_cpu_s;
      j["decode_cpu_s"] = decode_cpu_s;
    }
    j["model_file_bytes"] = model_file_bytes(a->model);
    {  // the machine's load while measuring (other processes share the cores)
      double l1 = -1;
      if (FILE* f = std::fopen("/proc/loadavg", "r")) {
        if (std::fscanf(f, "%lf", &l1) != 1) l1 = -1;
        std::fclose(f);
      }
      j["loadavg_1min"] = l1;
    }
    if (rt) {
      j["weight_bytes_per_token"] = rt->engine().bytes_per_token();
      j["tiled_copy_bytes"] = rt->engine().tiled_bytes();  // memory of the 2/3-bit row-tiled copies
    }
    j["predicted"] = nullptr;
    // {predicted, measured, ratio} of one LUT comparison.
    auto compare = [](double predicted, double measured) {
      return nlohmann::ordered_json{
          {"predicted", predicted}, {"measured", measured}, {"measured_over_predicted", measured / predicted}};
    };
    if (lut) {
      // Decode (M = 1, attention over the LUT's context) and prefill (M = prompt tokens). One
      // thread: compared on the LUT's clock (thread CPU time), immune to other processes.
      const bool cpu_clock = threads == 1 && lut->threads() == 1;
      const double pm_c = cpu_clock ? median(prefill_cpu_s) : pm, dm_c = cpu_clock ? median(decode_cpu_s) : dm;
      nlohmann::ordered_json p;
      p["lut"] = a->lut;
      p["clock"] = cpu_clock ? "thread cpu time" : "wall time";
      p["lut_threads"] = lut->threads();
      if (lut_decode) {
        p["decode_ms"] = compare(lut->predict_ms(arch, 1), 1000.0 * dm_c / N);
        // Decode step i attends over P + i + 1 positions; the LUT's decode entries over its context.
        p["decode_ms"]["mean_context"] = static_cast<double>(P) + static_cast<double>(N + 1) / 2.0;
        p["decode_ms"]["lut_context"] = lut->context();
      }
      if (lut_prefill) p["prefill_ms"] = compare(lut->predict_ms(arch, P), 1000.0 * pm_c);
      j["predicted"] = p;
    } else {
      const std::string rep_path = path_join(a->model, "export_report.json");
      if (dir_exists(a->model) && file_exists(rep_path)) {
        try {
          auto rep = nlohmann::json::parse(read_text_file(rep_path));
          if (rep.contains("predicted") && rep["predicted"].is_object()) {
            const double ms = rep["predicted"].value("latency_ms", -1.0);
            const int64_t toks = rep["predicted"].value("tokens", int64_t{1});
            if (ms > 0) {
              nlohmann::ordered_json p;
              p["lut"] = "export_report.json";
              p[toks == 1 ? "decode_ms" : "prefill_ms"] =
                  compare(ms, toks == 1 ? 1000.0 * dm / N : 1000.0 * pm * toks / P);
              if (toks != 1) p["prefill_ms"]["tokens"] = toks;
              j["predicted"] = p;
            }
          }
        } catch (const std::exception& e) {
          spdlog::warn("{}: cannot read the LUT prediction ({})", rep_path, e.what());
        }
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
        for (const char* k : {"decode_ms", "prefill_ms"}) {
          if (!j["predicted"].contains(k)) continue;
          const auto& e = j["predicted"][k];
          std::string ctx;
          if (e.contains("lut_context"))
            ctx = fmt::format("; LUT context {}, this decode's mean context {:g}", e["lut_context"].get<int64_t>(),
                              e["mean_context"].get<double>());
          std::printf("LUT       %s: predicted %.3f ms, measured %.3f ms (measured/predicted %.2f; %s, %s%s)\n",
                      std::string(k).substr(0, std::string(k).find('_')).c_str(), e["predicted"].get<double>(),
                      e["measured"].get<double>(), e["measured_over_predicted"].get<double>(),
                      j["predicted"]["lut"].get<std::string>().c_str(),
                      j["predicted"].value("clock", std::string("wall time")).c_str(), ctx.c_str());
        }
    }
    return 0;
  };
}

}  // namespace llmc::cli
