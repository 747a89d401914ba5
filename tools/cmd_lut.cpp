// llmcompress lut: measure the latency lookup table of a model's search space.
#include <cstdio>
#include <memory>
#include <sstream>

#include "commands.h"
#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/log.h"
#include "llmc/latency/lut.h"

namespace llmc::cli {

namespace {
struct LutArgs {
  std::string model, space, out, tokens = "1,128";
  LutOptions o;
};

std::vector<int64_t> parse_tokens(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (...) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 1)
      fail("--tokens: '{}' is not a token count >= 1 (expected a comma list such as 1,128)", item);
    out.push_back(v);
  }
  if (out.empty()) fail("--tokens: empty (expected a comma list such as 1,128)");
  return out;
}
}  // namespace

Action add_lut(CLI::App& app) {
  auto a = std::make_shared<LutArgs>();
  app.add_option("--model", a->model, "Model folder, GGUF file, or synthetic:1b / synthetic:tiny (shapes only)")
      ->required();
  app.add_option("--space", a->space, "Search space JSON (configs/README.md); default: the built-in defaults");
  app.add_option("--device", a->o.device, "auto | cpu | cuda")->capture_default_str()->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--tokens", a->tokens, "Comma list of token counts M per forward step")->capture_default_str();
  app.add_option("--context", a->o.context, "KV-cache positions a decode step (M = 1) attends over; M > 1 is a prompt from an empty cache")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--repeats", a->o.repeats, "Timed samples per entry, one per pass (median at 1 thread, 10th percentile at more; >= 20)")
      ->capture_default_str()
      ->check(CLI::Range(kLutMinRepeats, kLutMaxRepeats));
  app.add_option("--statistic", a->o.statistic,
                 "An entry's time: auto (median CPU time at 1 thread, 10th percentile of wall times at more) | "
                 "median (median wall time at more threads)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "median"}));
  app.add_option("--max-buffer-mib", a->o.max_buffer_mib, "Cap of the rotating weight buffer (MiB)")
      ->capture_default_str()
      ->check(CLI::Range(16, 1 << 20));
  app.add_option("--lm-head-bits", a->o.lm_head_bits,
                 "lm_head as it will be exported (export --lm-head-bits): 16 = dense fp32, 8/4 = packed")
      ->capture_default_str()
      ->check(CLI::IsMember({16, 8, 4}));
  app.add_flag("--no-calibrate", [a](int64_t) { a->o.calibrate = false; },
               "Keep the decode entries as timed alone (default: scaled per bit width to whole-model decodes of "
               "the uniform models, timed after them)");
  app.add_option("--out", a->out, "Output LUT JSON (written atomically)")->required();
  return [a] {
    a->o.tokens = parse_tokens(a->tokens);
    a->o.model_name = a->model;
    const std::string dir = parent_dir(a->out);  // fail before minutes of timing, not after
    if (!dir.empty() && !dir_exists(dir)) fail("--out: folder {} does not exist", dir);
    const SearchSpace space = a->space.empty() ? parse_search_space("{}", "default space") : load_search_space(a->space);
    const ModelConfig model = lut_model_config(a->model);
    const std::string text = build_lut_json(model, space, a->o);
    write_file_atomic(a->out, text);
    spdlog::info("lut: wrote {}", a->out);
    std::printf("%s\n", a->out.c_str());
    return 0;
  };
}

}  // namespace llmc::cli
