#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "llmc/core/log.h"
#include "llmc/model/generate.h"
#include "llmc/model/load.h"
#include "llmc/runtime/open.h"

namespace llmc::cli {

namespace {
struct GenerateArgs {
  std::string model, prompt, dtype = "float32", engine = "auto";
  GenerateOptions g;
  bool json = false;
};
}  // namespace

Action add_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  app.add_option("--model", a->model, "Model folder or GGUF file")->required();
  app.add_option("--prompt", a->prompt, "Prompt text (UTF-8)")->required();
  app.add_option("--max-new-tokens", a->g.max_new_tokens, "Tokens to generate")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--temperature", a->g.temperature, "0 = greedy")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", a->g.top_p, "Nucleus sampling mass")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", a->g.seed, "Sampling seed")->capture_default_str();
  app.add_option("--dtype", a->dtype, "Compute dtype: float32 | bfloat16")->capture_default_str();
  app.add_option("--engine", a->engine,
                 "auto (runtime for float32, torch for bfloat16) | runtime (our decode engine over preallocated "
                 "buffers) | torch (the libtorch reference forward)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "runtime", "torch"}));
  app.add_flag("--allow-past-context", a->g.allow_past_context,
               "Go on past the model's context (max_position_embeddings) instead of stopping there");
  app.add_flag("--json", a->json, "Print {prompt_ids, ids, text} as JSON");
  return [a] {
    // The runtime engine decodes without per-op libtorch dispatch (logits equal the reference's to
    // ~1e-5; tests/model/test_runtime.cpp): "auto" takes it for float32, libtorch for bfloat16.
    EngineChoice engine = parse_engine(a->engine);
    if (engine == EngineChoice::kAuto && a->dtype == "float32") engine = EngineChoice::kRuntime;
    auto m = open_model(a->model, LoadOptions{a->dtype, true}, engine);
    CausalLM& run = *m;
    spdlog::debug("generate: {} engine", runs_on_runtime(*m) ? "runtime" : "torch");
    const Tokenizer& tok = m->tokenizer();
    auto prompt_ids = tok.encode(a->prompt, tok.add_bos_default());
    std::vector<int32_t> ids;
    GenerateStats st;
    std::string printed;
    std::function<void(int32_t)> on_token;
    if (!a->json) {
      std::fputs(a->prompt.c_str(), stdout);
      on_token = [&](int32_t id) {
        ids.push_back(id);
        std::string text = decode_continuation(tok, prompt_ids, ids);
        // Print only what is new, holding back a trailing incomplete UTF-8 sequence.
        if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
          std::fputs(text.substr(printed.size()).c_str(), stdout);
          std::fflush(stdout);
          printed = text;
        }
      };
    }
    auto out = generate(run, prompt_ids, a->g, on_token, &st);
    std::string text = decode_continuation(tok, prompt_ids, out);
    if (a->json) {
      // A token budget can end inside a multi-byte character (byte tokens), and a small quantized
      // model may emit bytes that never form one: such bytes print as U+FFFD.
      nlohmann::json j = {{"prompt_ids", prompt_ids}, {"ids", out}, {"text", utf8_replace_invalid(text)}};
      std::puts(j.dump().c_str());
    } else {
      std::puts("");
    }
    spdlog::info("prompt {} tokens in {:.3f} s; generated {} tokens in {:.3f} s ({:.1f} tok/s)", st.prompt_tokens,
                 st.prefill_seconds, st.new_tokens, st.decode_seconds,
                 st.decode_tokens_per_second());
    return 0;
  };
}

}  // namespace llmc::cli
