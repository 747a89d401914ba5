#pragma once
// Grouped-query attention of the libtorch Llama (and of export's layer-by-layer calibration pass).
//   q:    (B, nkv, g, T, hd)  the g query heads of each KV head
//   k, v: (B, nkv, S, hd)     may be strided views of a KV cache
//   bias: (B or 1, 1, 1, T, S) float32, 0 where key s is visible to query t, -1e30 elsewhere
// returns (B, nkv, g, T, hd) in q's dtype; scores and softmax are computed in float32.
#include <ATen/core/Tensor.h>

namespace llmc {

// The bias for a visibility mask `allowed` (bool, any shape): 0 where allowed, -1e30 elsewhere; a
// large finite negative rather than -inf, so fully masked rows (queries at pad slots) stay finite.
at::Tensor attention_bias(const at::Tensor& allowed);

// attention_reference when autograd has to see it (search, fine-tuning), else attention_blocked.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                     double scale);

// Materializes every score (B, nkv, g, T, S) at once; differentiable.
at::Tensor attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                               double scale);

// The same numbers for inference (no autograd): one batch row and a block of queries at a time, so
// the scores of a block stay ~2 MB (in cache) instead of hundreds of MB per layer for long contexts
// (MMLU's 5-shot prompts: 8 rows x 400 queries x 3300 keys x 9 heads = 380 MB), and K/V are not
// copied per query head. Problems whose scores fit in `block_bytes` whole (decode steps, short
// contexts) run as one batched call instead of a loop of small ones (~10 us dispatch each).
at::Tensor attention_blocked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                             double scale, int64_t block_bytes = 2 << 20);

}  // namespace llmc
