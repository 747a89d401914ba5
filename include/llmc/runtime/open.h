#pragma once
// One entry point for every model a user can name (`--model`): a Hugging Face folder, a GGUF file
// or a folder written by `llmcompress export`, on the engine asked for. It sits above model/
// (which loads HF and GGUF checkpoints) and runtime/ (which reads exported folders and runs the
// lean engine), so neither needs the other's loader.
#include <memory>
#include <string>

#include "llmc/model/llama.h"
#include "llmc/model/load.h"

namespace llmc {

enum class EngineChoice {
  kAuto,     // exported folders on the runtime engine, HF / GGUF checkpoints on libtorch
  kRuntime,  // the lean engine (runtime/engine.h); needs float32
  kTorch,    // the libtorch reference forward
};
// "auto" | "runtime" | "torch"; anything else is an llmc::Error naming `option`.
EngineChoice parse_engine(const std::string& name, const std::string& option = "--engine");
const char* engine_name(EngineChoice e);

// Loads `path` and returns a model whose forward runs on `engine`. The result owns everything it
// uses. Errors are one-line llmc::Errors naming the path; with opts.check_logits (the default) a
// model whose first forward gives a NaN or Inf logit is one (check_first_forward).
std::unique_ptr<Llama> open_model(const std::string& path, const LoadOptions& opts = {},
                                  EngineChoice engine = EngineChoice::kAuto);

// Runs `model` on a few tokens (BOS, then ids 0, 1, ...; at most 8 and the context) and throws
// "PATH: the model's first forward gives non-finite logits ..." naming the first weight tensor
// with a NaN or Inf value, when it finds one (else the values overflow in the forward).
void check_first_forward(Llama& model, const std::string& path);

// True when `model`'s forward runs on the runtime engine.
bool runs_on_runtime(const Llama& model);

}  // namespace llmc
