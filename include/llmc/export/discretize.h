#pragma once
// Discretization after the search: permute every layer's KV heads and MLP channels by the
// importance orders of an Arch, keep the first kv_heads / mlp_channels, and (optionally) replace
// every linear by its fake-quantized dense version.
#include <memory>

#include "llmc/model/llama.h"
#include "llmc/model/arch.h"

namespace llmc {

// Permutes each layer's KV heads (q/k/v rows by head, o columns; KV head h carries query heads
// h*g .. h*g+g-1, g = num_heads/num_kv_heads) and MLP channels (gate/up rows, down columns) by
// arch.layers[l].kv_order / mlp_order (empty = identity), then keeps the first kv_heads /
// mlp_channels. A layer with 0 KV heads (0 channels) keeps empty (0 x in) linears for that
// sub-block, which Llama::hidden_states skips.
// Returns a float32 Llama of DenseLinear layers whose config has layer_kv_heads /
// layer_intermediate set. The embedding, norms, lm_head and tokenizer are shared with `model`,
// which must outlive the result. Throws llmc::Error when the arch does not fit the model.
std::unique_ptr<Llama> discretize(const Llama& model, const Arch& arch);

// The discretized subnet with every linear at b < 16 bits replaced by
// DenseLinear(fake_quantize(w, b, effective_group(in_features, arch.group_size))): the exact
// weights the packed RTN export computes with.
std::unique_ptr<Llama> fake_quant_subnet(const Llama& model, const Arch& arch);

}  // namespace llmc
