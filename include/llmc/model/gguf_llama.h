#pragma once
// A Llama-architecture GGUF file as a model: llama.* (or deci.*) metadata -> ModelConfig, tensors
// renamed to the Hugging Face layout and dequantized (io/gguf.h reads the file; this is the
// model-level meaning). `deci` is llama.cpp's architecture for NAS-pruned Llamas: head_count,
// head_count_kv and feed_forward_length are per-layer arrays, 0 meaning the block is absent (no
// tensors); it loads as a ModelConfig with layer_kv_heads / layer_intermediate (base widths =
// the largest layer's). Blocks that our GGUF export filled in for llama.cpp
// (llmcompress.filler_attention / filler_ffn, export/gguf_export.h) are dropped again.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "llmc/io/gguf.h"
#include "llmc/model/config.h"

namespace llmc {

// A dense fp32 tensor, row-major.
struct FloatTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  int64_t numel() const;
};

// A Llama-architecture GGUF converted to the Hugging Face LlamaForCausalLM layout.
struct GGUFLlama {
  ModelConfig config;
  // HF names (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight, ...), in file
  // order; fp32, shapes as in HF checkpoints ([out, in] for linears). q_proj/k_proj rows are in
  // the HF rotate_half order (llama.cpp's adjacent-pair permutation undone).
  std::vector<std::pair<std::string, FloatTensor>> tensors;
  std::string tokenizer_model;                      // tokenizer.ggml.model: "llama" (SPM) or "gpt2" (BPE)
  std::string name;                                 // general.name ("" when absent)
  std::map<std::string, std::string> source_types;  // HF name -> ggml type name as stored ("Q4_1")
};

// Reads llama.* metadata into a ModelConfig (no tensor data is touched): hidden_size from
// llama.embedding_length, intermediate_size llama.feed_forward_length, num_layers llama.block_count,
// heads llama.attention.head_count(_kv), rms eps llama.attention.layer_norm_rms_epsilon, rope_theta
// llama.rope.freq_base (default 10000), max_position_embeddings llama.context_length, vocab size
// from the token list, head_dim llama.attention.key_length or hidden/heads, tie_word_embeddings =
// no output.weight tensor, BOS/EOS from tokenizer.ggml.{bos,eos}_token_id (deci: the same keys
// under deci.*, widths per layer). Throws llmc::Error for a general.architecture other than
// "llama" / "deci", for per-layer query-group ratios that differ, and for missing or inconsistent
// values.
ModelConfig gguf_llama_config(const GGUFFile& file);

// The full conversion: config, every tensor dequantized, renamed and checked against the config;
// an absent block's linears come back with 0 rows / inputs and its norm as ones.
GGUFLlama read_gguf_llama(const std::string& path);
GGUFLlama read_gguf_llama(const GGUFFile& file);

// HF name for a llama.cpp tensor name ("blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight");
// "" when the name is not a Llama weight.
std::string gguf_llama_hf_name(const std::string& gguf_name);

// Reorders the rows of a [n_heads * head_dim, in] q or k projection from llama.cpp's adjacent-pair
// RoPE layout to HF's rotate_half layout: in every head, HF row j = GGUF row 2j and HF row
// j + head_dim/2 = GGUF row 2j+1. Throws llmc::Error (prefixed with `where`) on a bad shape.
void unpermute_rope_rows(FloatTensor& w, int64_t n_heads, const std::string& where);

}  // namespace llmc
