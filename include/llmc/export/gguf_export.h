#pragma once
// Writing a quantized model as a GGUF file that llama.cpp loads (`export --format gguf|both`).
//
// Tensor types, per linear, from how the linear is stored (kernels/qformat.h: w = s*(q - z) per
// group, fp16 s and z):
//   2-, 3-, 4-bit -> Q4_1 (w = q*d + m per 32 weights): the codes are copied, d = s and
//                    m = fp16(-s*z). Exact when -s*z is an fp16 value, which export's
//                    fp16-offset quantization guarantees (quant.h); otherwise m is rounded and the
//                    difference is reported. Every group size maps (a group of 64 or 128 is 2 or 4
//                    blocks with the same d and m). 2- and 3-bit codes thus cost Q4_1's 5 bits per
//                    weight in the file (Q2_K / Q3_K cannot hold our groups exactly; not written).
//   8-bit         -> Q8_0 (w = d*q, int8 q): a block whose codes q - z are integers in [-128, 127]
//                    is copied with d = s (exact; export's GGUF path quantizes 8 bits symmetrically,
//                    z = 128, so every block is); any other block (a packed folder quantized
//                    without it) is requantized from the dequantized weights (ggml's rule on the
//                    stored fp16 d) and the error reported.
//   16-bit        -> F32 (dense dtype float32) or BF16 (bfloat16), as the packed folder stores it.
//   A quantized matrix whose row length is not a multiple of 32 (a pruned MLP of 24 channels)
//   has no GGUF block layout: it is written as F32 of its dequantized weights (exact).
// Norms are F32; q/k rows are reordered to llama.cpp's adjacent-pair RoPE layout.
//
// Architecture: `llama` when every layer keeps the model's head and MLP widths, else `deci` with
// per-layer deci.attention.head_count / head_count_kv / feed_forward_length arrays (0 = that block
// is absent). Two deci cases llama.cpp's graph cannot express get an exact stand-in, recorded in
// the metadata (llmcompress.filler_attention / llmcompress.filler_ffn) and removed again by our
// reader: layer 0 without attention (llama.cpp takes the head size from layer 0) gets one zero KV
// head with a zero output projection, and a layer with attention but no MLP (llama.cpp's deci
// graph drops that layer's attention output when its FFN width is 0) gets a 32-channel zero FFN.
// Both add exactly 0 to the residual stream.
//
// Tokenizer: the tokenizer.* metadata of a GGUF source is copied; a Hugging Face folder's
// tokenizer.model (SentencePiece BPE) or tokenizer.json (byte-level BPE) is converted to
// tokenizer.ggml.* (tokenizer/gguf_vocab.h).
#include <string>

#include "llmc/io/gguf_writer.h"
#include "llmc/model/llama.h"
#include "llmc/tokenizer/gguf_vocab.h"

namespace llmc {

struct GGUFExportOptions {
  std::string tokenizer_source;         // GGUF file or HF folder (gguf_tokenizer_metadata); "" = none (tests)
  std::string dense_dtype = "float32";  // float32 | bfloat16: the embedding and 16-bit linears
  std::string name;                     // general.name ("" = none)
};

struct GGUFExport {
  GGUFWriter writer;
  std::string architecture;  // "llama" | "deci"
  // {"architecture", "tensors": [{"name", "type", "source", "exact", "max_abs_err", "rel_fro_err"
  //  [, "requantized_blocks", "note"]}], "exact", "max_rel_fro_err", "filler_attention",
  //  "filler_ffn", "tensor_bytes", "tokenizer_from", "tokenizer_model", "tokenizer_converted"};
  //  errors are of the GGUF weights against the weights the packed export computes with.
  std::string report_json;
};

// The tokenizer.* metadata of the GGUF for a model of config `c` from `source`: a GGUF file's
// tokenizer.* keys verbatim, or a Hugging Face folder's tokenizer converted (gguf_vocab.h). Throws
// llmc::Error naming the file when the source has no usable tokenizer or its size is not the
// embedding's.
GGUFMetadata gguf_tokenizer_metadata(const std::string& source, const ModelConfig& c);

// Converts `model` (float32; layers of QuantizedLinear / DenseLinear, as quantize_model leaves
// them). Throws llmc::Error, before anything is written, for what llama.cpp cannot load (rope
// scaling, a source without a convertible tokenizer, a vocabulary that disagrees with the embedding).
GGUFExport build_gguf(const Llama& model, const GGUFExportOptions& opts);

// build_gguf + an atomic write to `path`. Returns the report JSON (with "file" and "bytes").
std::string write_gguf(const Llama& model, const std::string& path, const GGUFExportOptions& opts);

// llama.cpp's row order of a q or k projection [n_heads * head_dim, in]: GGUF row h*hd + 2j + p
// is HF row h*hd + p*hd/2 + j. Returns, for every GGUF row, its HF row.
std::vector<int64_t> rope_gguf_row_order(int64_t n_heads, int64_t head_dim);

}  // namespace llmc
