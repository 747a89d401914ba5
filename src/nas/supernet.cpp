#include "llmc/nas/supernet.h"

#include <ATen/ATen.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/quant/quant.h"

namespace llmc {

namespace {

// Weights of one choice: sampled (Gumbel) or fixed; read by the mixed linears at forward time.
struct ChoiceWeights {
  at::Tensor alpha;  // (n) leaf, requires_grad when n > 1
  at::Tensor w;      // (n) current mixture weights
};

// A linear whose weight is coeff @ stack, stack: (n_options, N*K) constant fake-quantized weights.
class MixedLinear final : public Linear {
 public:
  MixedLinear(at::Tensor stack, int64_t N, int64_t K, std::function<at::Tensor()> coeff, int64_t lora_rank,
              at::Tensor dense)
      : stack_(std::move(stack)), N_(N), K_(K), coeff_(std::move(coeff)), dense_(std::move(dense)) {
    if (lora_rank > 0) {
      A_ = (at::randn({lora_rank, K}) / std::sqrt(static_cast<double>(K))).set_requires_grad(true);
      B_ = at::zeros({N, lora_rank}).set_requires_grad(true);
    }
  }
  at::Tensor forward(const at::Tensor& x) override {
    auto W = at::matmul(coeff_(), stack_).view({N_, K_});
    auto y = at::linear(x, W);
    if (A_.defined()) y = y + at::linear(at::linear(x, A_), B_);
    return y;
  }
  int64_t in_features() const override { return K_; }
  int64_t out_features() const override { return N_; }
  at::Tensor dense_weight() const override { return dense_; }
  at::Tensor A_, B_;

 private:
  at::Tensor stack_;
  int64_t N_, K_;
  std::function<at::Tensor()> coeff_;
  at::Tensor dense_;
};

at::Tensor pad_cols(const at::Tensor& w, int64_t K) {
  if (w.size(1) == K) return w;
  return at::cat({w, at::zeros({w.size(0), K - w.size(1)}, w.options())}, 1);
}

}  // namespace

struct Supernet::Layer {
  ChoiceWeights kv, mlp;
  std::array<ChoiceWeights, kNumLinears> bits;
  std::array<at::Tensor, kNumLinears> lat;  // (n_width, n_bits) microseconds
  // Stacked calls (model/plan.h): where q, k, v (gate, up) have equal bits the runtime makes one
  // call; these hold stacked - sum of the parts, (n_width, n_bits) microseconds.
  at::Tensor qkv_saving, gate_up_saving;
  at::Tensor att;                           // (n_kv) microseconds: attention core + attn half of the fixed cost
  at::Tensor mlp_fixed;                     // (n_mlp) microseconds: mlp half of the fixed cost
  double fixed_us = 0;
  std::array<std::shared_ptr<MixedLinear>, kNumLinears> lin;
};

std::vector<LayerChoices> make_choices(const ModelConfig& m, const SearchSpace& s, bool widths, bool bits) {
  std::vector<LayerChoices> out;
  for (int64_t l = 0; l < m.num_layers; ++l) {
    LayerChoices c;
    c.kv = widths ? s.kv_choices(m, l) : std::vector<int64_t>{m.num_kv_heads};
    c.mlp = widths ? s.mlp_choices(m, l) : std::vector<int64_t>{m.intermediate_size};
    c.bits = bits ? s.bit_choices(l) : std::vector<int>{16};
    out.push_back(c);
  }
  return out;
}

static ChoiceWeights make_choice(int64_t n) {
  ChoiceWeights c;
  c.alpha = at::zeros({n}, at::kFloat);
  if (n > 1) c.alpha.set_requires_grad(true);
  c.w = at::ones({n}, at::kFloat) / n;
  return c;
}

Supernet::Supernet(Llama& model, std::vector<LayerChoices> choices, const LatencyLookup& lat, int group_size,
                   int64_t lora_rank, uint64_t seed, bool install)
    : choices_(std::move(choices)), lat_(lat) {
  const auto& c = model.config();
  LLMC_CHECK(static_cast<int64_t>(choices_.size()) == c.num_layers, "supernet: choices for {} layers, model has {}",
             choices_.size(), c.num_layers);
  at::manual_seed(seed);
  at::NoGradGuard ng;
  const int64_t g = c.num_heads / c.num_kv_heads, hd = c.head_dim;
  model_fixed_ms_ = lat.model_fixed_us / 1000.0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const auto& ch = choices_[l];
    auto L = std::make_shared<Layer>();
    L->kv = make_choice(ch.kv.size());
    L->mlp = make_choice(ch.mlp.size());
    for (auto& b : L->bits) b = make_choice(ch.bits.size());
    auto& W = model.weights().layers[l];
    const int64_t nb = ch.bits.size();
    Layer* raw = L.get();
    for (int j = 0; j < kNumLinears; ++j) {
      std::shared_ptr<Linear>& slot = j == kQ ? W.q : j == kK ? W.k : j == kV ? W.v : j == kO ? W.o
                                    : j == kGate ? W.gate : j == kUp ? W.up : W.down;
      at::Tensor dense = slot->dense_weight().to(at::kFloat).contiguous();
      const int64_t N = dense.size(0), K = dense.size(1);
      const bool col_mixed = j == kO || j == kDown;
      const auto& widths = (j <= kO) ? ch.kv : ch.mlp;
      std::vector<at::Tensor> stack;
      std::function<at::Tensor()> coeff;
      if (!install) {
        // latency tables only
      } else if (col_mixed) {
        for (int64_t w : widths) {
          const int64_t cols = j == kO ? w * g * hd : w;
          for (int b : ch.bits) {
            if (cols == 0) {
              stack.push_back(at::zeros({N * K}));
              continue;
            }
            auto slice = dense.narrow(1, 0, cols).contiguous();
            auto q = b >= 16 ? slice : fake_quantize(slice, b, effective_group(static_cast<int>(cols), group_size));
            stack.push_back(pad_cols(q, K).reshape({-1}));
          }
        }
        ChoiceWeights* wc = (j == kO) ? &raw->kv : &raw->mlp;
        ChoiceWeights* bc = &raw->bits[j];
        coeff = [wc, bc] { return at::outer(wc->w, bc->w).reshape({-1}); };
      } else {
        for (int b : ch.bits) {
          auto q = b >= 16 ? dense : fake_quantize(dense, b, effective_group(static_cast<int>(K), group_size));
          stack.push_back(q.reshape({-1}));
        }
        ChoiceWeights* bc = &raw->bits[j];
        coeff = [bc] { return bc->w; };
      }
      if (install) {
        L->lin[j] = std::make_shared<MixedLinear>(at::stack(stack), N, K, coeff, lora_rank, dense);
        slot = L->lin[j];
      }
      // LUT latency of each (width, bits) option of this linear, at the forward plan's shapes.
      auto T = at::zeros({static_cast<int64_t>(widths.size()), nb}, at::kFloat);
      for (size_t k = 0; k < widths.size(); ++k) {
        const LinearShape s = linear_shape(c, j, widths[k], widths[k]);
        for (int64_t b = 0; b < nb; ++b) T[k][b] = (s.N == 0 || s.K == 0) ? 0.0 : lat.linear_us(s.N, s.K, ch.bits[b]);
      }
      L->lat[j] = T;
    }
    // What stacking saves, per width and (common) bits: stacked call - the parts alone.
    auto saving = [&](const auto& parts, const std::vector<int64_t>& widths) {
      auto S = at::zeros({static_cast<int64_t>(widths.size()), nb}, at::kFloat);
      for (size_t k = 0; k < widths.size(); ++k) {
        const LinearShape s = stacked_shape(c, parts, widths[k], widths[k]);
        if (s.N == 0 || s.K == 0) continue;
        for (int64_t b = 0; b < nb; ++b) {
          double parts_us = 0;
          for (int p : parts) parts_us += L->lat[p][k][b].item<double>();
          S[k][b] = lat.linear_us(s.N, s.K, ch.bits[b]) - parts_us;
        }
      }
      return S;
    };
    L->qkv_saving = saving(kQkvStack, ch.kv);
    L->gate_up_saving = saving(kGateUpStack, ch.mlp);
    L->att = at::zeros({static_cast<int64_t>(ch.kv.size())}, at::kFloat);
    for (size_t k = 0; k < ch.kv.size(); ++k)
      L->att[k] = ch.kv[k] == 0 ? 0.0 : lat.attention_us(ch.kv[k]) + lat.layer_fixed_attn_us;
    L->mlp_fixed = at::zeros({static_cast<int64_t>(ch.mlp.size())}, at::kFloat);
    for (size_t k = 0; k < ch.mlp.size(); ++k) L->mlp_fixed[k] = ch.mlp[k] == 0 ? 0.0 : lat.layer_fixed_mlp_us;
    L->fixed_us = lat.layer_fixed_us;
    layers_.push_back(L);
  }
}

std::vector<at::Tensor> Supernet::arch_parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& L : layers_) {
    if (L->kv.alpha.requires_grad()) out.push_back(L->kv.alpha);
    if (L->mlp.alpha.requires_grad()) out.push_back(L->mlp.alpha);
    for (const auto& b : L->bits)
      if (b.alpha.requires_grad()) out.push_back(b.alpha);
  }
  return out;
}

std::vector<at::Tensor> Supernet::weight_parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& L : layers_)
    for (const auto& lin : L->lin)
      if (lin && lin->A_.defined()) {
        out.push_back(lin->A_);
        out.push_back(lin->B_);
      }
  return out;
}

namespace {
void draw(ChoiceWeights& c, double tau, bool hard, std::mt19937_64& rng) {
  const int64_t n = c.alpha.numel();
  if (n == 1) {
    c.w = at::ones({1});
    return;
  }
  std::uniform_real_distribution<double> U(1e-12, 1.0);
  std::vector<float> gum(n);
  for (auto& x : gum) x = static_cast<float>(-std::log(-std::log(U(rng))));
  auto y = at::softmax((c.alpha + at::tensor(gum)) / tau, 0);
  if (hard) {
    auto one = at::zeros_like(y);
    one[y.argmax().item<int64_t>()] = 1.0;
    y = one - y.detach() + y;
  }
  c.w = y;
}
void fix(ChoiceWeights& c, int64_t i) {
  c.w = at::zeros({c.alpha.numel()});
  c.w[i] = 1.0;
}
}  // namespace

void Supernet::sample(double tau, bool hard, std::mt19937_64& rng) {
  for (auto& L : layers_) {
    draw(L->kv, tau, hard, rng);
    draw(L->mlp, tau, hard, rng);
    for (auto& b : L->bits) draw(b, tau, hard, rng);
  }
}

void Supernet::set_alphas(const std::vector<ChoiceLogProbs>& a) {
  LLMC_CHECK(a.size() == layers_.size(), "supernet: logits for {} layers, {} layers", a.size(), layers_.size());
  at::NoGradGuard ng;
  auto set = [](ChoiceWeights& c, const std::vector<double>& v) {
    LLMC_CHECK(static_cast<int64_t>(v.size()) == c.alpha.numel(), "supernet: {} logits for {} options", v.size(),
               c.alpha.numel());
    for (size_t i = 0; i < v.size(); ++i) c.alpha[static_cast<int64_t>(i)] = v[i];
  };
  for (size_t l = 0; l < layers_.size(); ++l) {
    set(layers_[l]->kv, a[l].kv);
    set(layers_[l]->mlp, a[l].mlp);
    for (int j = 0; j < kNumLinears; ++j) set(layers_[l]->bits[j], a[l].bits[j]);
  }
}

void Supernet::set_fixed(const std::vector<ChoiceIndex>& idx) {
  LLMC_CHECK(idx.size() == layers_.size(), "supernet: {} choices for {} layers", idx.size(), layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    fix(layers_[l]->kv, idx[l].kv);
    fix(layers_[l]->mlp, idx[l].mlp);
    for (int j = 0; j < kNumLinears; ++j) fix(layers_[l]->bits[j], idx[l].bits[j]);
  }
}

at::Tensor Supernet::expected_latency_ms() const {
  at::Tensor total = at::zeros({}, at::kFloat);
  for (const auto& L : layers_) {
    auto pkv = at::softmax(L->kv.alpha, 0), pmlp = at::softmax(L->mlp.alpha, 0);
    total = total + at::dot(pkv, L->att) + at::dot(pmlp, L->mlp_fixed) + L->fixed_us;
    std::array<at::Tensor, kNumLinears> pb;
    for (int j = 0; j < kNumLinears; ++j) {
      pb[j] = at::softmax(L->bits[j].alpha, 0);
      auto pw = j <= kO ? pkv : pmlp;
      total = total + at::dot(pw, at::mv(L->lat[j], pb[j]));
    }
    // Stacked calls: with independent choices, P(q, k, v all at bits b) = pq(b) pk(b) pv(b), and
    // then the stacked call replaces the three. Exact for one-hot choices (= predict_ms).
    total = total + at::dot(pkv, at::mv(L->qkv_saving, pb[kQ] * pb[kK] * pb[kV]));
    total = total + at::dot(pmlp, at::mv(L->gate_up_saving, pb[kGate] * pb[kUp]));
  }
  return total / 1000.0 + model_fixed_ms_;
}

double Supernet::latency_ms(const std::vector<ChoiceIndex>& idx) const {
  double us = 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const auto& L = layers_[l];
    const ChoiceIndex& c = idx[l];
    us += L->att[c.kv].item<double>() + L->mlp_fixed[c.mlp].item<double>() + L->fixed_us;
    for (int j = 0; j < kNumLinears; ++j) us += L->lat[j][j <= kO ? c.kv : c.mlp][c.bits[j]].item<double>();
    if (c.bits[kQ] == c.bits[kK] && c.bits[kQ] == c.bits[kV]) us += L->qkv_saving[c.kv][c.bits[kQ]].item<double>();
    if (c.bits[kGate] == c.bits[kUp]) us += L->gate_up_saving[c.mlp][c.bits[kGate]].item<double>();
  }
  return us / 1000.0 + model_fixed_ms_;
}

std::vector<ChoiceIndex> Supernet::argmax() const {
  std::vector<ChoiceIndex> out;
  for (const auto& L : layers_) {
    ChoiceIndex c;
    c.kv = L->kv.alpha.argmax().item<int64_t>();
    c.mlp = L->mlp.alpha.argmax().item<int64_t>();
    for (int j = 0; j < kNumLinears; ++j) c.bits[j] = L->bits[j].alpha.argmax().item<int64_t>();
    out.push_back(c);
  }
  return out;
}

std::vector<ChoiceLogProbs> Supernet::log_probs() const {
  at::NoGradGuard ng;
  auto lp = [](const at::Tensor& alpha) {
    auto t = at::log_softmax(alpha.detach().to(at::kDouble), 0).contiguous();
    return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  };
  std::vector<ChoiceLogProbs> out;
  for (const auto& L : layers_) {
    ChoiceLogProbs c;
    c.kv = lp(L->kv.alpha);
    c.mlp = lp(L->mlp.alpha);
    for (int j = 0; j < kNumLinears; ++j) c.bits[j] = lp(L->bits[j].alpha);
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<ChoiceIndex> Supernet::fastest() const {
  // Latency is separable into the attention block (kv width + q/k/v/o bits) and the MLP block
  // (channels + gate/up/down bits); each is searched exhaustively, stacked calls included.
  std::vector<ChoiceIndex> out;
  for (const auto& L : layers_) {
    ChoiceIndex best;
    const int64_t nb = L->lat[kQ].size(1);
    auto T = [&](int j, int64_t k, int64_t b) { return L->lat[j][k][b].item<double>(); };
    double best_att = 1e300, best_mlp = 1e300;
    for (int64_t k = 0; k < L->att.numel(); ++k) {
      int64_t bo = 0;
      for (int64_t b = 1; b < nb; ++b)
        if (T(kO, k, b) < T(kO, k, bo)) bo = b;
      for (int64_t bq = 0; bq < nb; ++bq)
        for (int64_t bk = 0; bk < nb; ++bk)
          for (int64_t bv = 0; bv < nb; ++bv) {
            double t = L->att[k].item<double>() + T(kQ, k, bq) + T(kK, k, bk) + T(kV, k, bv) + T(kO, k, bo);
            if (bq == bk && bq == bv) t += L->qkv_saving[k][bq].item<double>();
            if (t < best_att) {
              best_att = t;
              best.kv = k;
              best.bits[kQ] = bq;
              best.bits[kK] = bk;
              best.bits[kV] = bv;
              best.bits[kO] = bo;
            }
          }
    }
    for (int64_t k = 0; k < L->mlp_fixed.numel(); ++k) {
      int64_t bd = 0;
      for (int64_t b = 1; b < nb; ++b)
        if (T(kDown, k, b) < T(kDown, k, bd)) bd = b;
      for (int64_t bg = 0; bg < nb; ++bg)
        for (int64_t bu = 0; bu < nb; ++bu) {
          double t = L->mlp_fixed[k].item<double>() + T(kGate, k, bg) + T(kUp, k, bu) + T(kDown, k, bd);
          if (bg == bu) t += L->gate_up_saving[k][bg].item<double>();
          if (t < best_mlp) {
            best_mlp = t;
            best.mlp = k;
            best.bits[kGate] = bg;
            best.bits[kUp] = bu;
            best.bits[kDown] = bd;
          }
        }
    }
    out.push_back(best);
  }
  return out;
}

std::vector<ChoiceIndex> Supernet::widest() const {
  std::vector<ChoiceIndex> out;
  for (const auto& L : layers_) {
    ChoiceIndex c;
    c.kv = 0;
    c.mlp = 0;
    for (int j = 0; j < kNumLinears; ++j) c.bits[j] = L->bits[j].alpha.numel() - 1;
    out.push_back(c);
  }
  return out;
}

double Supernet::mean_entropy() const {
  double sum = 0;
  int n = 0;
  auto ent = [&](const at::Tensor& a) {
    if (a.numel() < 2) return;
    auto p = at::softmax(a.detach(), 0);
    sum += -(p * at::log(p.clamp_min(1e-12))).sum().item<double>();
    ++n;
  };
  for (const auto& L : layers_) {
    ent(L->kv.alpha);
    ent(L->mlp.alpha);
    for (const auto& b : L->bits) ent(b.alpha);
  }
  return n ? sum / n : 0.0;
}

Arch arch_of_choices(const std::vector<ChoiceIndex>& idx, const std::vector<LayerChoices>& ch,
                     const ModelConfig& base) {
  Arch a;
  a.base = base;
  for (size_t l = 0; l < idx.size(); ++l) {
    LayerArch la;
    la.kv_heads = ch[l].kv[idx[l].kv];
    la.mlp_channels = ch[l].mlp[idx[l].mlp];
    for (int j = 0; j < kNumLinears; ++j) la.bits[j] = ch[l].bits[idx[l].bits[j]];
    a.layers.push_back(la);
  }
  return a;
}

Arch Supernet::to_arch(const std::vector<ChoiceIndex>& idx, const Importance& imp, const ModelConfig& base) const {
  Arch a = arch_of_choices(idx, choices_, base);
  for (size_t l = 0; l < a.layers.size(); ++l) {
    if (l < imp.kv_order.size()) a.layers[l].kv_order = imp.kv_order[l];
    if (l < imp.mlp_order.size()) a.layers[l].mlp_order = imp.mlp_order[l];
  }
  return a;
}

std::string Supernet::alphas_json() const {
  nlohmann::ordered_json j = nlohmann::ordered_json::array();
  auto probs = [](const at::Tensor& a) {
    auto p = at::softmax(a.detach(), 0).contiguous();
    return std::vector<float>(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
  };
  for (size_t l = 0; l < layers_.size(); ++l) {
    const auto& L = layers_[l];
    nlohmann::ordered_json e;
    e["kv_heads"] = {{"choices", choices_[l].kv}, {"p", probs(L->kv.alpha)}};
    e["mlp_channels"] = {{"choices", choices_[l].mlp}, {"p", probs(L->mlp.alpha)}};
    for (int j = 0; j < kNumLinears; ++j)
      e[std::string("bits_") + kLinearNames[j]] = {{"choices", choices_[l].bits}, {"p", probs(L->bits[j].alpha)}};
    j.push_back(e);
  }
  return j.dump();
}

std::vector<std::pair<std::string, at::Tensor>> Supernet::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const auto& L = layers_[l];
    out.emplace_back(fmt::format("alpha.{}.kv", l), L->kv.alpha);
    out.emplace_back(fmt::format("alpha.{}.mlp", l), L->mlp.alpha);
    for (int j = 0; j < kNumLinears; ++j) out.emplace_back(fmt::format("alpha.{}.bits.{}", l, kLinearNames[j]), L->bits[j].alpha);
    for (int j = 0; j < kNumLinears; ++j)
      if (L->lin[j] && L->lin[j]->A_.defined()) {
        out.emplace_back(fmt::format("lora.{}.{}.A", l, kLinearNames[j]), L->lin[j]->A_);
        out.emplace_back(fmt::format("lora.{}.{}.B", l, kLinearNames[j]), L->lin[j]->B_);
      }
  }
  return out;
}

LatencyLookup lookup_from(const LatencyTable& lut, int64_t M) {
  LatencyLookup l;
  l.linear_us = [&lut, M](int64_t N, int64_t K, int bits) { return lut.linear_us(N, K, bits, M); };
  l.attention_us = [&lut, M](int64_t h) { return lut.attention_us(h, M); };
  l.layer_fixed_attn_us = lut.layer_fixed_attn_us(M);
  l.layer_fixed_mlp_us = lut.layer_fixed_mlp_us(M);
  l.model_fixed_us = lut.model_fixed_us(M);
  return l;
}

}  // namespace llmc
