#pragma once
// LoRA fine-tuning of a quantized subnet, with adapters that merge exactly.
//
// Quantized linears (QuantizedLinear, w = s (q - z) per group of g inputs) get QA-LoRA style
// group-pooled adapters: A (r, G) acts on the group-averaged input pool(x)_j = sum_{k in group j}
// x_k / g (G = K_padded / g groups; padding columns are zero), B (N, r). The update
// scale * B A pool(x) adds the constant c[n][j] = scale * (B A)[n][j] / g to every weight of group
// (n, j), i.e. w = s (q - z) + c = s (q - z'), z' = z - c / s: the adapter merges into the zero
// points. Zero points are stored as fp16, so the forward pass used in training already rounds z'
// to fp16 (straight-through gradient): the function trained is exactly the function merged, and
// the merge changes logits only by fp32 summation order (measured: FinetuneResult::merge_rel_diff).
// The raw fp16 rounding of z' (in units of the quantization step) is reported as well.
//
// 16-bit linears (DenseLinear) get plain LoRA (A (r, K), B (N, r)), merged into the dense weight.
// B starts at zero, so attaching adapters does not change the model.
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "llmc/model/llama.h"

namespace llmc {

struct FinetuneOptions {
  int64_t steps = 0;
  int64_t rank = 8;
  double alpha = 0;  // LoRA scale = alpha / rank; 0 means alpha = rank (scale 1)
  double lr = 1e-3;
  bool distill = false;  // KL(teacher || student) on logits; else next-token cross-entropy
  int64_t batch_size = 4;
  uint64_t seed = 0;
  int64_t log_every = 10;
  bool keep_adapters = false;  // FinetuneResult::adapters (tests)
};

struct MergeStats {
  int64_t quantized = 0, dense = 0;  // adapters merged of each kind
  double max_zero_rounding = 0;      // max |fp16(z - c/s) - (z - c/s)| (quantization steps)
};

struct FinetuneResult {
  std::vector<double> losses;  // one per step
  double seconds = 0;
  MergeStats merge;
  double merge_rel_diff = 0;  // max |merged - unmerged| / max |unmerged| logits on a check batch
  std::string merge_mode;     // how adapters were merged (see the header comment)
  std::vector<at::Tensor> adapters;  // the trained A and B tensors before the merge (keep_adapters)
};

// The adapters of every linear of a model's layers, attached in place (the wrapped linears
// replace the originals until merge()).
class LoRAAdapters {
 public:
  LoRAAdapters(Llama& model, int64_t rank, double alpha, uint64_t seed);
  ~LoRAAdapters();
  LoRAAdapters(const LoRAAdapters&) = delete;
  LoRAAdapters& operator=(const LoRAAdapters&) = delete;

  std::vector<at::Tensor> parameters() const;
  // Fills B with N(0, stddev) (tests: a non-zero adapter without training).
  void randomize(double stddev, uint64_t seed);
  // Replaces every wrapper by its merged linear (QuantizedLinear with new zero points, or
  // DenseLinear with W + scale B A). The adapters are unusable afterwards.
  MergeStats merge();

 private:
  struct Slot;
  Llama& model_;
  std::vector<std::unique_ptr<Slot>> slots_;
  bool merged_ = false;
};

// Fine-tunes the adapters of `model` (a quantized subnet) on `tokens` (n, T) for opts.steps Adam
// steps, logging the loss, then merges. Under a data-parallel launch (dist.h) every rank runs it
// with the same arguments; rank 0's tokens are used, and each rank computes its share of a batch.
// `teacher` (the original model) is required for distill.
FinetuneResult finetune_lora(Llama& model, Llama* teacher, const at::Tensor& tokens, const FinetuneOptions& opts);

}  // namespace llmc
