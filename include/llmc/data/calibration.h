#pragma once
// Calibration token batches for GPTQ Hessians and LoRA fine-tuning.
//   text:FILE   documents as eval's text:FILE task reads them (data/text_docs.h), each tokenized
//               with BOS (EOS when the model has none) in front (token_stream.h: StartEach), cut into
//               `samples` sequences of `seq_len` tokens (fewer when the text is short).
//   generate    (default) data-free, as LLM-QAT: the model samples `samples` sequences itself
//               from BOS at temperature 1 (top-p 1), seeded.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "llmc/model/causal_lm.h"

namespace llmc {

struct CalibOptions {
  std::string source = "generate";  // "generate" | "text:FILE"
  int64_t samples = 32;
  int64_t seq_len = 128;
  uint64_t seed = 0;
};

// (samples', seq_len) int64 tokens, samples' <= samples. Throws llmc::Error for a bad source or a
// text too short for one sequence.
at::Tensor calibration_tokens(CausalLM& model, const CalibOptions& opts);

}  // namespace llmc
