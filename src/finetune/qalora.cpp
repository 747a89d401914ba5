#include "llmc/finetune/qalora.h"
#include "llmc/finetune/dist.h"
#include "llmc/model/threads.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "llmc/core/error.h"
#include "llmc/core/log.h"
#include "llmc/finetune/train.h"
#include "llmc/model/arch.h"
#include "llmc/quant/quant.h"

namespace llmc {

namespace {

// Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), as PEFT initializes LoRA A (kaiming_uniform, a=sqrt(5)).
at::Tensor init_a(int64_t r, int64_t fan_in) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(fan_in, 1)));
  return ((at::rand({r, fan_in}, at::kFloat) * 2 - 1) * bound).set_requires_grad(true);
}

class AdapterLinear : public Linear {
 public:
  virtual std::vector<at::Tensor> params() const = 0;
  virtual std::shared_ptr<Linear> merged(MergeStats& st) const = 0;
  virtual void randomize(double stddev) = 0;
};

// QA-LoRA over a packed quantized linear (see qalora.h).
class QALoRALinear final : public AdapterLinear {
 public:
  QALoRALinear(const kernels::QMatrix& base, int64_t rank, double scale) : q_(base), scale_(scale) {
    const auto& lay = q_.layout;
    N_ = lay.N;
    K_ = lay.K;
    g_ = lay.group;
    G_ = lay.groups_per_row;
    W0_ = dequantize(q_);
    auto half = [&](const std::vector<uint16_t>& v) {
      auto t = at::empty({N_, G_}, at::kHalf);
      std::memcpy(t.data_ptr(), v.data(), v.size() * sizeof(uint16_t));
      return t.to(at::kFloat);
    };
    s_ = half(q_.scales);
    z_ = half(q_.zeros);
    A_ = init_a(rank, G_);
    B_ = at::zeros({N_, rank}, at::kFloat).set_requires_grad(true);
  }
  // Per-group weight offsets c = scale * (B A) / g, and the fp16-rounded new zero points.
  std::pair<at::Tensor, at::Tensor> offsets() const {
    auto c = at::matmul(B_, A_) * (scale_ / static_cast<double>(g_));
    auto zr = (z_ - c / s_).clamp(-65504.0, 65504.0).to(at::kHalf).to(at::kFloat);
    return {c, zr};
  }
  // Value: the per-group offset the fp16-rounded zero point realizes; gradient: that of c
  // (straight-through).
  at::Tensor group_offsets() const {
    auto [c, zr] = offsets();
    return c + (s_ * (z_ - zr) - c).detach();
  }
  at::Tensor effective_weight() const { return W0_ + group_offsets().repeat_interleave(g_, 1).narrow(1, 0, K_); }
  // x W0^T + pool(x) C^T with pool(x)_j = sum of x over group j: the same function as
  // x (W0 + C expanded over each group)^T without materializing an (N, K) weight per step.
  at::Tensor forward(const at::Tensor& x) override {
    auto xf = x.to(at::kFloat);
    auto padded = K_ == G_ * g_ ? xf : at::constant_pad_nd(xf, {0, G_ * g_ - K_});
    std::vector<int64_t> shape = xf.sizes().vec();
    shape.back() = G_;
    shape.push_back(g_);
    auto pooled = padded.reshape(shape).sum(-1);
    return at::linear(xf, W0_) + at::linear(pooled, group_offsets());
  }
  int64_t in_features() const override { return K_; }
  int64_t out_features() const override { return N_; }
  at::Tensor dense_weight() const override { return effective_weight().detach(); }
  std::vector<at::Tensor> params() const override { return {A_, B_}; }
  void randomize(double stddev) override {
    at::NoGradGuard ng;
    B_.normal_(0, stddev);
  }
  std::shared_ptr<Linear> merged(MergeStats& st) const override {
    at::NoGradGuard ng;
    auto [c, zr] = offsets();
    auto exact = z_ - c / s_;
    auto fin = exact.abs() < 65504.0;
    if (fin.any().item<bool>())
      st.max_zero_rounding =
          std::max(st.max_zero_rounding, (zr - exact).abs().masked_select(fin).max().item<double>());
    auto zh = zr.to(at::kHalf).contiguous();
    kernels::QMatrix m = q_;
    std::memcpy(m.zeros.data(), zh.data_ptr(), m.zeros.size() * sizeof(uint16_t));
    ++st.quantized;
    return std::make_shared<QuantizedLinear>(std::move(m));
  }

 private:
  kernels::QMatrix q_;
  double scale_;
  int64_t N_ = 0, K_ = 0, g_ = 0, G_ = 0;
  at::Tensor W0_, s_, z_, A_, B_;
};

// Plain LoRA over a dense linear.
class DenseLoRALinear final : public AdapterLinear {
 public:
  DenseLoRALinear(const Linear& base, int64_t rank, double scale)
      : W_(base.dense_weight().to(at::kFloat).detach()), scale_(scale) {
    A_ = init_a(rank, W_.size(1));
    B_ = at::zeros({W_.size(0), rank}, at::kFloat).set_requires_grad(true);
  }
  at::Tensor forward(const at::Tensor& x) override {
    auto xf = x.to(at::kFloat);
    return at::linear(xf, W_) + at::linear(at::linear(xf, A_), B_) * scale_;
  }
  int64_t in_features() const override { return W_.size(1); }
  int64_t out_features() const override { return W_.size(0); }
  at::Tensor dense_weight() const override { return (W_ + at::matmul(B_, A_) * scale_).detach(); }
  std::vector<at::Tensor> params() const override { return {A_, B_}; }
  void randomize(double stddev) override {
    at::NoGradGuard ng;
    B_.normal_(0, stddev);
  }
  std::shared_ptr<Linear> merged(MergeStats& st) const override {
    ++st.dense;
    return std::make_shared<DenseLinear>(dense_weight().contiguous());
  }

 private:
  at::Tensor W_, A_, B_;
  double scale_;
};

}  // namespace

struct LoRAAdapters::Slot {
  std::shared_ptr<Linear>* where;
  std::shared_ptr<AdapterLinear> adapter;
};

LoRAAdapters::LoRAAdapters(Llama& model, int64_t rank, double alpha, uint64_t seed) : model_(model) {
  LLMC_CHECK(rank >= 1, "--lora-rank must be >= 1 (got {})", rank);
  const double scale = (alpha > 0 ? alpha : static_cast<double>(rank)) / static_cast<double>(rank);
  at::manual_seed(seed);
  for (auto& L : model.weights().layers) {
    for (int k = 0; k < kNumLinears; ++k) {
      auto& lin = layer_linear(L, k);
      if (linear_dropped(*lin)) continue;  // dropped sub-block
      std::shared_ptr<AdapterLinear> a;
      if (const kernels::QMatrix* q = lin->packed_matrix())
        a = std::make_shared<QALoRALinear>(*q, rank, scale);
      else
        a = std::make_shared<DenseLoRALinear>(*lin, rank, scale);
      lin = a;
      slots_.push_back(std::make_unique<Slot>(Slot{&lin, a}));
    }
  }
}

LoRAAdapters::~LoRAAdapters() = default;

std::vector<at::Tensor> LoRAAdapters::parameters() const {
  std::vector<at::Tensor> p;
  for (const auto& s : slots_)
    for (auto& t : s->adapter->params()) p.push_back(t);
  return p;
}

void LoRAAdapters::randomize(double stddev, uint64_t seed) {
  at::manual_seed(seed);
  for (auto& s : slots_) s->adapter->randomize(stddev);
}

MergeStats LoRAAdapters::merge() {
  LLMC_CHECK(!merged_, "LoRA adapters were already merged");
  MergeStats st;
  for (auto& s : slots_) *s->where = s->adapter->merged(st);
  merged_ = true;
  return st;
}

FinetuneResult finetune_lora(Llama& model, Llama* teacher, const at::Tensor& tokens, const FinetuneOptions& o) {
  LLMC_CHECK(o.steps >= 0, "--finetune-steps must be >= 0");
  LLMC_CHECK(o.lr > 0, "--lr must be positive");
  LLMC_CHECK(o.batch_size >= 1, "fine-tune batch size must be >= 1");
  LLMC_CHECK(!o.distill || teacher != nullptr, "--distill needs the original model");
  LLMC_CHECK(tokens.dim() == 2 && tokens.size(0) >= 1 && tokens.size(1) >= 2, "fine-tune: tokens must be (n, T>=2)");
  LLMC_CHECK(model.dtype() == at::kFloat, "fine-tune: the model must be float32");
  FinetuneResult res;
  // libgomp's default (active) wait policy keeps idle OpenMP workers spinning between parallel
  // regions; on a machine whose cores are shared that made a SmolLM2 step ~20x slower with 2
  // threads than with 1 (208 s vs 9 s for 3 steps). With OMP_WAIT_POLICY=PASSIVE set, all threads
  // are used.
  if (omp_workers_spin() && at::get_num_threads() > 1)
    spdlog::info("finetune: 1 torch thread (set OMP_WAIT_POLICY=PASSIVE to use {})", at::get_num_threads());
  ScopedTorchThreads threads(omp_workers_spin() ? 1 : 0);
  const auto t0 = std::chrono::steady_clock::now();
  auto& W = model.weights();
  // A packed lm_head has no autograd: train through its dequantized copy, restore afterwards.
  auto lm_head = W.lm_head;
  if (lm_head->is_packed()) W.lm_head = std::make_shared<DenseLinear>(lm_head->dense_weight());

  LoRAAdapters adapters(model, o.rank, o.alpha, o.seed);
  auto params = adapters.parameters();
  // Data parallel (dist.h): the same tokens and initial adapters on every rank (rank 0's), each
  // rank's share of every batch, gradients summed over ranks before the identical Adam step.
  DataParallel& dp = DataParallel::get();
  at::Tensor data = tokens;
  if (dp.active()) {
    data = tokens.to(at::kLong).contiguous().clone();
    dp.broadcast(data, "the fine-tune tokens");
    dp.broadcast(params, "the initial LoRA adapters");
  }
  int64_t nparams = 0;
  for (auto& p : params) nparams += p.numel();
  spdlog::info("finetune: {} adapter tensors ({} parameters, rank {}), {} steps, batch {}, lr {}, loss {}",
               params.size(), nparams, o.rank, o.steps, o.batch_size, o.lr, o.distill ? "KL to original" : "cross-entropy");
  Adam opt(params, o.lr, AdamRounding::Torch);
  const int64_t n = data.size(0), bs = std::min(o.batch_size, n);
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(o.seed);
  size_t cursor = n;
  for (int64_t step = 0; step < o.steps; ++step) {
    std::vector<int64_t> idx;
    while (static_cast<int64_t>(idx.size()) < bs) {
      if (cursor >= order.size()) {
        std::shuffle(order.begin(), order.end(), rng);
        cursor = 0;
      }
      idx.push_back(order[cursor++]);
    }
    double share = 1;
    auto batch = dp.shard_rows(data.index_select(0, at::tensor(idx, at::kLong)), &share, "a fine-tune batch");
    auto logits = model.forward(batch);  // (this rank's rows of bs, T, V)
    at::Tensor teacher_logits;
    if (o.distill) {
      at::NoGradGuard ng;
      teacher_logits = teacher->forward(batch);
    }
    auto loss = task_loss(logits, batch, teacher_logits);
    opt.zero_grad();
    if (dp.active()) (share * loss).backward();
    else loss.backward();
    dp.all_reduce_grads(params, "the LoRA gradients");
    opt.step();
    res.losses.push_back(dp.active() ? dp.all_reduce_sum({share * loss.item<double>()}, "the fine-tune loss")[0]
                                     : loss.item<double>());
    if ((step + 1) % std::max<int64_t>(1, o.log_every) == 0 || step == 0 || step + 1 == o.steps)
      spdlog::info("finetune: step {}/{} loss {:.4f}", step + 1, o.steps, res.losses.back());
  }
  if (o.keep_adapters)
    for (const auto& p : params) res.adapters.push_back(p.detach().clone());
  // Merge, and measure what the merge changed on one calibration sequence.
  {
    at::NoGradGuard ng;
    auto check = data.narrow(0, 0, 1);
    auto before = model.forward(check);
    res.merge = adapters.merge();
    W.lm_head = lm_head;
    // Compare with the same lm_head the adapters saw.
    auto saved = W.lm_head;
    if (saved->is_packed()) W.lm_head = std::make_shared<DenseLinear>(saved->dense_weight());
    auto after = model.forward(check);
    W.lm_head = saved;
    const double denom = std::max(before.abs().max().item<double>(), 1e-30);
    res.merge_rel_diff = (after - before).abs().max().item<double>() / denom;
  }
  res.merge_mode =
      "exact: QA-LoRA adapters of quantized linears merged into the fp16 zero points (trained with the fp16-rounded "
      "zero point, straight-through), LoRA of 16-bit linears merged into the dense weights; no side path";
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("finetune: {} steps in {:.1f} s; merged {} quantized + {} dense adapters, max merged-vs-unmerged "
               "logit difference {:.2e} (relative), max fp16 zero-point rounding {:.2e} steps",
               o.steps, res.seconds, res.merge.quantized, res.merge.dense, res.merge_rel_diff,
               res.merge.max_zero_rounding);
  return res;
}

}  // namespace llmc
