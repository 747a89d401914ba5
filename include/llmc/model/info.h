#pragma once
#include <string>

#include "llmc/model/llama.h"

namespace llmc {

// {"architecture", "config": {...}, "parameters": {"embedding", "attention", "mlp", "norms",
//  "lm_head", "total"}, "dtype", "tokenizer": {"type", "vocab_size", "bos_id", "eos_id"}}
std::string model_info_json(const Llama& model, const std::string& path);
// The same as aligned text lines for a terminal.
std::string model_info_text(const Llama& model, const std::string& path);

}  // namespace llmc
