#include "llmc/finetune/train.h"

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/nll_loss.h>
#include <ATen/ops/zeros_like.h>

#include <algorithm>
#include <cmath>

#include "llmc/core/error.h"
#include "llmc/core/log.h"

namespace llmc {

Adam::Adam(std::vector<at::Tensor> params, double lr, AdamRounding rounding)
    : params_(std::move(params)), lr_(lr), rounding_(rounding) {
  for (auto& x : params_) {
    m_.push_back(at::zeros_like(x).detach());
    v_.push_back(at::zeros_like(x).detach());
  }
}

void Adam::step() {
  at::NoGradGuard ng;
  ++t_;
  const double c1 = 1 - std::pow(b1_, t_), c2 = 1 - std::pow(b2_, t_);
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    m_[i].mul_(b1_).add_(g, 1 - b1_);
    v_[i].mul_(b2_).addcmul_(g, g, 1 - b2_);
    if (sgd_) {
      params_[i].sub_(g, lr_);
    } else if (rounding_ == AdamRounding::Torch) {
      auto denom = (v_[i].sqrt() / std::sqrt(c2)).add_(eps_);
      params_[i].addcdiv_(m_[i], denom, -(lr_ / c1));
    } else {
      params_[i].sub_(lr_ * (m_[i] / c1) / ((v_[i] / c2).sqrt() + eps_));
    }
  }
}

void Adam::zero_grad() {
  for (auto& p : params_)
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
}

std::vector<std::pair<std::string, at::Tensor>> Adam::state(const std::string& prefix) const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(fmt::format("{}.m.{}", prefix, i), m_[i]);
    out.emplace_back(fmt::format("{}.v.{}", prefix, i), v_[i]);
  }
  return out;
}

at::Tensor next_token_cross_entropy(const at::Tensor& logits, const at::Tensor& tokens) {
  LLMC_CHECK(logits.dim() == 3 && tokens.dim() == 2 && logits.size(1) == tokens.size(1) && tokens.size(1) >= 2,
             "cross-entropy: logits (B, T, V) and tokens (B, T >= 2) expected");
  const int64_t V = logits.size(-1), T = tokens.size(1);
  auto lp = at::log_softmax(logits.narrow(1, 0, T - 1), -1).reshape({-1, V});
  return at::nll_loss(lp, tokens.narrow(1, 1, T - 1).reshape({-1}));
}

at::Tensor kl_to_teacher(const at::Tensor& logits, const at::Tensor& teacher_logits) {
  auto lp = at::log_softmax(logits, -1), tp = at::log_softmax(teacher_logits, -1);
  return (tp.exp() * (tp - lp)).sum(-1).mean();
}

at::Tensor task_loss(const at::Tensor& logits, const at::Tensor& tokens, const at::Tensor& teacher_logits) {
  return teacher_logits.defined() ? kl_to_teacher(logits, teacher_logits) : next_token_cross_entropy(logits, tokens);
}

double batches_perplexity(CausalLM& model, const std::vector<at::Tensor>& batches) {
  at::NoGradGuard ng;
  double nll = 0;
  int64_t n = 0;
  for (const auto& b : batches) {
    const int64_t k = b.size(0) * (b.size(1) - 1);
    nll += next_token_cross_entropy(model.forward(b), b).item<double>() * k;
    n += k;
  }
  return std::exp(nll / std::max<int64_t>(1, n));
}

}  // namespace llmc
