#include "llmc/nas/importance.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>

#include "llmc/core/error.h"

namespace llmc {

namespace {

// Passes through to the wrapped linear and accumulates per-input-feature statistics of x.
class RecordingLinear final : public Linear {
 public:
  explicit RecordingLinear(std::shared_ptr<Linear> inner) : inner_(std::move(inner)) {
    abs_sum_ = at::zeros({inner_->in_features()}, at::kDouble);
    sq_sum_ = at::zeros({inner_->in_features()}, at::kDouble);
  }
  at::Tensor forward(const at::Tensor& x) override {
    auto flat = x.detach().reshape({-1, x.size(-1)}).to(at::kDouble);
    abs_sum_ += flat.abs().sum(0);
    sq_sum_ += flat.pow(2).sum(0);
    count_ += flat.size(0);
    return inner_->forward(x);
  }
  int64_t in_features() const override { return inner_->in_features(); }
  int64_t out_features() const override { return inner_->out_features(); }
  at::Tensor dense_weight() const override { return inner_->dense_weight(); }
  std::shared_ptr<Linear> inner_;
  at::Tensor abs_sum_, sq_sum_;
  int64_t count_ = 0;
};

std::vector<int64_t> order_by(const std::vector<double>& score) {
  std::vector<int64_t> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return score[a] > score[b]; });
  return idx;
}

}  // namespace

std::vector<int64_t> q_rows_for(const std::vector<int64_t>& kv_order, int64_t group, int64_t head_dim) {
  std::vector<int64_t> rows;
  for (int64_t h : kv_order)
    for (int64_t j = 0; j < group * head_dim; ++j) rows.push_back(h * group * head_dim + j);
  return rows;
}

Importance compute_importance(Llama& model, const std::vector<at::Tensor>& batches) {
  const auto& c = model.config();
  auto& layers = model.weights().layers;
  std::vector<std::shared_ptr<RecordingLinear>> o_rec, down_rec;
  for (auto& L : layers) {
    o_rec.push_back(std::make_shared<RecordingLinear>(L.o));
    down_rec.push_back(std::make_shared<RecordingLinear>(L.down));
    L.o = o_rec.back();
    L.down = down_rec.back();
  }
  {
    at::NoGradGuard ng;
    for (const auto& b : batches) model.forward(b);
  }
  Importance imp;
  for (size_t l = 0; l < layers.size(); ++l) {
    layers[l].o = o_rec[l]->inner_;
    layers[l].down = down_rec[l]->inner_;
    const double n = std::max<int64_t>(1, down_rec[l]->count_);
    auto mlp = (down_rec[l]->abs_sum_ / n).contiguous();
    std::vector<double> ms(mlp.data_ptr<double>(), mlp.data_ptr<double>() + mlp.numel());
    const int64_t nkv = c.kv_heads(l), g = c.num_heads / c.num_kv_heads, hd = c.head_dim;
    auto per_q = o_rec[l]->sq_sum_.view({nkv, g * hd}).sum(1) / (n * g * hd);
    std::vector<double> ks(nkv);
    for (int64_t h = 0; h < nkv; ++h) ks[h] = std::sqrt(per_q[h].item<double>());
    imp.mlp_order.push_back(order_by(ms));
    imp.kv_order.push_back(order_by(ks));
    imp.mlp_score.push_back(ms);
    imp.kv_score.push_back(ks);
  }
  return imp;
}

void permute_model(Llama& model, const Importance& imp) {
  const auto& c = model.config();
  auto& layers = model.weights().layers;
  LLMC_CHECK(imp.kv_order.size() == layers.size() && imp.mlp_order.size() == layers.size(),
             "permute_model: importance has {} layers, model {}", imp.kv_order.size(), layers.size());
  const int64_t g = c.num_heads / c.num_kv_heads, hd = c.head_dim;
  for (size_t l = 0; l < layers.size(); ++l) {
    auto& L = layers[l];
    auto kv = at::tensor(q_rows_for(imp.kv_order[l], 1, hd), at::kLong);
    auto qrows = at::tensor(q_rows_for(imp.kv_order[l], g, hd), at::kLong);
    auto mlp = at::tensor(imp.mlp_order[l], at::kLong);
    auto rows = [](const std::shared_ptr<Linear>& lin, const at::Tensor& idx) {
      return std::make_shared<DenseLinear>(lin->dense_weight().index_select(0, idx).contiguous());
    };
    auto cols = [](const std::shared_ptr<Linear>& lin, const at::Tensor& idx) {
      return std::make_shared<DenseLinear>(lin->dense_weight().index_select(1, idx).contiguous());
    };
    L.q = rows(L.q, qrows);
    L.k = rows(L.k, kv);
    L.v = rows(L.v, kv);
    L.o = cols(L.o, qrows);
    L.gate = rows(L.gate, mlp);
    L.up = rows(L.up, mlp);
    L.down = cols(L.down, mlp);
  }
}

}  // namespace llmc
