#pragma once
// Importance ordering (method: "Weight sharing"): so that "keep k" always means "keep the first k",
// MLP channels and KV groups are reordered by a calibration statistic, with a permutation that
// leaves the model's function unchanged.
#include <ATen/core/Tensor.h>

#include <vector>

#include "llmc/model/llama.h"

namespace llmc {

struct Importance {
  std::vector<std::vector<int64_t>> kv_order;   // per layer: original KV head indices, most important first
  std::vector<std::vector<int64_t>> mlp_order;  // per layer: original MLP channel indices
  std::vector<std::vector<double>> kv_score, mlp_score;
};

// MLP channel i of layer l: mean |a_i| over calibration tokens, a = silu(gate(x)) * up(x) (the
// input of down_proj). KV group h: root mean square of the attention outputs of its query heads
// (the slice of o_proj's input that group produces). batches: (B, T) int64 token ids.
Importance compute_importance(Llama& model, const std::vector<at::Tensor>& batches);

// Reorders q/k/v rows and o columns by KV group, gate/up rows and down columns by channel, in place.
// The model must hold dense linears.
void permute_model(Llama& model, const Importance& imp);

// The row indices of q_proj (or columns of o_proj) for KV heads in `kv_order`: each KV head h
// owns query heads h*g .. h*g+g-1, each head_dim rows.
std::vector<int64_t> q_rows_for(const std::vector<int64_t>& kv_order, int64_t group, int64_t head_dim);

}  // namespace llmc
