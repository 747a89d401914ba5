#pragma once
// The exported folder: what `llmcompress export` writes (export/format.h) and
// load_exported() / open_model() read back.
//
//   config.json          HF-style config (per-layer widths as llmc_layer_kv_heads /
//                        llmc_layer_intermediate) plus
//                        "llmc_format": {"version": 1, "group_size": G, "dense_dtype": "float32",
//                                        "lm_head_bits": 16, "embedding": "model.embed_tokens.weight",
//                                        "layers": [{"kv_heads", "mlp_channels",
//                                                    "bits": {"q", "k", "v", "o", "gate", "up", "down"}}]}
//   model.safetensors    written by llmc::write_safetensors:
//       model.embed_tokens.weight, model.norm.weight, model.layers.N.{input,post_attention}_layernorm.weight
//                        F32 (embedding: dense_dtype, F32 or BF16)
//       <linear>.qweight U8 [N, K_padded * bits / 8]  packed codes (kernels/include/llmc_kernels/qformat.h)
//       <linear>.scales  F16 [N, K_padded / g]         raw fp16 bit patterns
//       <linear>.zeros   F16 [N, K_padded / g]
//       <linear>.weight  dense_dtype [N, K]            16-bit linears
//     with <linear> = model.layers.N.self_attn.{q,k,v,o}_proj | model.layers.N.mlp.{gate,up,down}_proj,
//     g = effective_group(K, group_size) (quant.h), K_padded = round_up(K, g); lm_head.* when
//     lm_head_bits < 16 (packed) or the embedding is not tied. A tied embedding with a packed
//     lm_head is not stored: "embedding": "lm_head" says it is the dequantized lm_head table (the
//     export quantized it so; the loader dequantizes it to fp32). A layer with kv_heads 0
//     (mlp_channels 0) has no attention (MLP) linears.
//   tokenizer.model / tokenizer.json / tokenizer_config.json / special_tokens_map.json /
//   generation_config.json   copied from an HF source folder; tokenizer.gguf (a GGUF file with
//                        no tensors holding the source's tokenizer.* metadata) for a GGUF source.
//   export_report.json   bytes per module, bits per weight, quantization, fine-tune losses, merge
//                        mode, LUT prediction.
//   arch.json            the architecture exported (nas/arch.h format).
// The folder is written next to its destination under a temporary name and renamed into place.
#include <memory>
#include <string>

#include "llmc/model/llama.h"
#include "llmc/model/load.h"

namespace llmc {

// Version of config.json's "llmc_format" that this build writes and reads.
constexpr int kExportFormatVersion = 1;

// "model.layers.L.self_attn.q_proj" ... for linear kind k (model/arch.h order) of layer L.
std::string export_linear_name(int64_t layer, int kind);

// True when `dir` holds a config.json with an "llmc_format" key.
bool is_exported_folder(const std::string& dir);

// Loads an exported folder: packed linears become QuantizedLinear, 16-bit ones DenseLinear.
// runtime: return a RuntimeLlama (forward runs the lean engine, runtime/engine.h); else a plain
// Llama (libtorch forward). Corrupt or inconsistent folders throw a one-line llmc::Error.
std::unique_ptr<Llama> load_exported(const std::string& dir, const LoadOptions& opts, bool runtime = true);

}  // namespace llmc
