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
// uses. Errors are one-line llmc::Errors naming the path.
std::unique_ptr<Llama> open_model(const std::string& path, const LoadOptions& opts = {},
                                  EngineChoice engine = EngineChoice::kAuto);

// True when `model`'s forward runs on the runtime engine.
bool runs_on_runtime(const Llama& model);

}  // namespace llmc
