#pragma once
// Writing the exported folder (its format: runtime/folder.h, which also reads it back).
#include <functional>
#include <memory>
#include <string>

#include "llmc/model/llama.h"

namespace llmc {

struct ExportWriteOptions {
  int group_size = 128;
  std::string dense_dtype = "float32";  // float32 | bfloat16: embedding and 16-bit linears
  std::string tokenizer_source;         // HF folder or GGUF file to take the tokenizer from ("" = none)
  std::string report_json;              // export_report.json content ("" = none)
  std::string arch_json;                // arch.json content ("" = none)
  // Writes further files into the folder before it is published (called with the temporary
  // folder's path; `export --format both` puts model.gguf there). Listed in the report's "files".
  std::function<void(const std::string& dir)> extra_files;
};

// Bytes of every module of a (quantized) model as it is stored, and the bit accounting.
struct SizeReport {
  int64_t embedding = 0, lm_head = 0, norms = 0, attention = 0, mlp = 0;
  int64_t linear_params = 0;       // weights of the layer linears
  double linear_code_bits = 0;     // sum of params * bits (nominal)
  int64_t linear_bytes = 0;        // codes + scales + zeros (+ dense weights) of the layer linears
  int64_t total() const { return embedding + lm_head + norms + attention + mlp; }
  double avg_bits_per_weight() const { return linear_params ? 8.0 * linear_bytes / linear_params : 0; }
  double avg_code_bits() const { return linear_params ? linear_code_bits / linear_params : 0; }
  std::string to_json() const;  // {"bytes": {...}, "avg_bits_per_weight", "avg_code_bits", ...}
};
SizeReport size_report(const Llama& model, const std::string& dense_dtype = "float32");

// Writes `model` (layers of QuantizedLinear / DenseLinear, float32) as an exported folder at
// `dir`. Replaces an existing exported folder or empty directory; refuses any other existing path.
void write_export_folder(const Llama& model, const std::string& dir, const ExportWriteOptions& opts);

// Writes a GGUF file with no tensors that holds the tokenizer.* (and general.architecture)
// metadata of `gguf_path`, so tokenizer_from_gguf() can rebuild the tokenizer from it.
void write_tokenizer_gguf(const std::string& gguf_path, const std::string& out_path);

}  // namespace llmc
