#pragma once
// The training toolkit shared by the search (nas/search.cpp) and LoRA fine-tuning (qalora.cpp):
// Adam with its state exposed (a search checkpoint saves and restores it exactly), the task
// losses, and the perplexity of token batches. Token streams are built in data/token_stream.h.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "llmc/model/causal_lm.h"

namespace llmc {

// Two roundings of the same Adam update (bias-corrected moments m/c1, v/c2; c = 1 - beta^t):
//  Torch:  d = sqrt(v) / sqrt(c2) + eps; p -= (lr / c1) * m / d, as torch::optim::Adam (libtorch
//          1.13) computes it. Fine-tuning uses it (it ran on torch::optim::Adam before).
//  Search: p -= lr * (m / c1) / (sqrt(v / c2) + eps). The search's form since its first version:
//          kept so that its checkpoints resume and its results reproduce bit for bit.
enum class AdamRounding { Torch, Search };

class Adam {
 public:
  Adam(std::vector<at::Tensor> params, double lr, AdamRounding rounding = AdamRounding::Torch);
  // One update of every parameter that has a gradient (others, and their moments, are left alone).
  void step();
  // Drops the gradients (undefined, not zero-filled: the next backward starts from nothing).
  void zero_grad();

  const std::vector<at::Tensor>& params() const { return params_; }
  int64_t steps() const { return t_; }  // updates made (t of the bias correction)
  void set_steps(int64_t t) { t_ = t; }
  // Plain gradient descent, p -= lr * g (the moments are still kept, so checkpoints keep one form).
  // Adam's per-parameter normalization moves every architecture logit at about lr per step whatever
  // its gradient's size; plain descent keeps the sizes (how much latency and loss each option moves).
  void set_plain_sgd(bool on) { sgd_ = on; }
  // The moment tensors by name, "<prefix>.m.<i>" and "<prefix>.v.<i>" (i = parameter index), in
  // that order per parameter. They alias the optimizer's state: copy_ into them to restore.
  std::vector<std::pair<std::string, at::Tensor>> state(const std::string& prefix) const;

 private:
  std::vector<at::Tensor> params_, m_, v_;
  double lr_, b1_ = 0.9, b2_ = 0.999, eps_ = 1e-8;
  int64_t t_ = 0;
  AdamRounding rounding_;
  bool sgd_ = false;
};

// Mean next-token cross-entropy: logits (B, T, V) at position t predict tokens (B, T) at t + 1
// (B * (T - 1) predictions).
at::Tensor next_token_cross_entropy(const at::Tensor& logits, const at::Tensor& tokens);
// KL(teacher || student) summed over the vocabulary, mean over the B * T positions; both (B, T, V).
at::Tensor kl_to_teacher(const at::Tensor& logits, const at::Tensor& teacher_logits);
// kl_to_teacher when teacher_logits is defined (distillation), else next_token_cross_entropy.
at::Tensor task_loss(const at::Tensor& logits, const at::Tensor& tokens, const at::Tensor& teacher_logits);

// exp(mean next-token cross-entropy) over (B, T) token batches, every prediction weighted the
// same (no BOS added, a batch's first token is not predicted). Not eval's evaluate_perplexity: that
// tokenizes documents into its own windows; this scores the training batches as they are.
double batches_perplexity(CausalLM& model, const std::vector<at::Tensor>& batches);

}  // namespace llmc
