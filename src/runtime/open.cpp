#include "llmc/runtime/open.h"

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/runtime/engine.h"
#include "llmc/runtime/folder.h"

namespace llmc {

EngineChoice parse_engine(const std::string& name, const std::string& option) {
  if (name == "auto") return EngineChoice::kAuto;
  if (name == "runtime") return EngineChoice::kRuntime;
  if (name == "torch") return EngineChoice::kTorch;
  fail("{}: '{}' is not auto, runtime or torch", option, name);
}

const char* engine_name(EngineChoice e) {
  switch (e) {
    case EngineChoice::kAuto: return "auto";
    case EngineChoice::kRuntime: return "runtime";
    case EngineChoice::kTorch: return "torch";
  }
  return "?";
}

std::unique_ptr<Llama> open_model(const std::string& path, const LoadOptions& opts, EngineChoice engine) {
  if (is_exported_folder(path)) return load_exported(path, opts, engine != EngineChoice::kTorch);
  auto model = load_llama(path, opts);
  if (engine != EngineChoice::kRuntime) return model;
  if (model->dtype() != at::kFloat) fail("{}: --engine runtime needs --dtype float32", path);
  // The runtime model shares the loaded weights (tensors and linears are reference counted) and
  // the tokenizer, so the reference Llama can go.
  return std::make_unique<RuntimeLlama>(model->config(), model->weights(), model->tokenizer_ptr());
}

bool runs_on_runtime(const Llama& model) { return dynamic_cast<const RuntimeLlama*>(&model) != nullptr; }

}  // namespace llmc
