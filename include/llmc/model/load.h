#pragma once
// Loading checkpoints: a Hugging Face Llama-family folder (config.json + model.safetensors or a sharded
// model.safetensors.index.json; F32/F16/BF16) or a GGUF file. Every problem a user can cause is a
// one-line llmc::Error naming the file.
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>

#include "llmc/model/llama.h"

namespace llmc {

struct LoadOptions {
  std::string dtype = "float32";  // compute dtype: float32 | bfloat16
  bool need_tokenizer = true;     // false: load weights even when no tokenizer files exist
  // open_model (runtime/open.h): run a first forward of a few tokens and refuse non-finite logits
  // (corrupt weights) with an error naming the file. Off only where a broken model is still
  // worth describing (info).
  bool check_logits = true;
};

std::unique_ptr<Llama> load_llama(const std::string& path, const LoadOptions& opts = {});

// Looks up a float32 tensor by its HF name; returns an undefined tensor when absent.
using TensorSource = std::function<at::Tensor(const std::string& name)>;

// Assembles a Llama from HF-named tensors, checking every shape against `config`.
// `where` names the source in errors.
std::unique_ptr<Llama> build_llama(const ModelConfig& config, const TensorSource& source,
                                   std::shared_ptr<const Tokenizer> tokenizer, at::ScalarType dtype,
                                   const std::string& where);

// Tokenizer of an HF folder: tokenizer.model (SentencePiece) or tokenizer.json (byte-level BPE);
// BOS/EOS from config.json, add_bos from tokenizer_config.json. nullptr when none is present.
std::shared_ptr<const Tokenizer> load_folder_tokenizer(const std::string& dir, const ModelConfig& config);

// Writes config.json + model.safetensors (float32) for `model` into `dir` (created if missing).
void save_hf_folder(const Llama& model, const std::string& dir);

at::ScalarType parse_dtype(const std::string& name);
// The inverse, as --dtype spells it: "float32" | "bfloat16".
const char* dtype_option_name(at::ScalarType t);

// True when `path` is a file starting with the GGUF magic.
bool looks_like_gguf(const std::string& path);

}  // namespace llmc
