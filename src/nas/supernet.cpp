#include "llmc/nas/supernet.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "llmc/core/error.h"
#include "llmc/quant/fake_mix.h"
#include "llmc/quant/quant.h"

namespace llmc {

namespace {

// Weights of one choice: sampled (Gumbel) or fixed; read by the mixed linears at forward time.
struct ChoiceWeights {
  at::Tensor alpha;  // (n) leaf, requires_grad when n > 1
  at::Tensor w;      // (n) current mixture weights
};

// A mixed linear of the supernet: y = x W~^T (+ LoRA), W~ from the current choice weights.
class MixedLinear : public Linear {
 public:
  MixedLinear(int64_t N, int64_t K, int64_t lora_rank) : N_(N), K_(K) {
    if (lora_rank > 0) {
      A_ = (at::randn({lora_rank, K}) / std::sqrt(static_cast<double>(K))).set_requires_grad(true);
      B_ = at::zeros({N, lora_rank}).set_requires_grad(true);
    }
  }
  at::Tensor forward(const at::Tensor& x) override {
    auto y = mixed_forward(x);
    if (A_.defined()) y = y + at::linear(at::linear(x, A_), B_);
    return y;
  }
  int64_t in_features() const override { return K_; }
  int64_t out_features() const override { return N_; }
  virtual int64_t stored_weight_bytes() const = 0;
  at::Tensor A_, B_;

 protected:
  virtual at::Tensor mixed_forward(const at::Tensor& x) = 0;
  int64_t N_, K_;
};

// The reference layout: W~ = coeff @ stack, stack: (n_options, N*K) constant fake-quantized weights.
class StackedLinear final : public MixedLinear {
 public:
  StackedLinear(at::Tensor stack, int64_t N, int64_t K, std::function<at::Tensor()> coeff, int64_t lora_rank,
                at::Tensor dense)
      : MixedLinear(N, K, lora_rank), stack_(std::move(stack)), coeff_(std::move(coeff)), dense_(std::move(dense)) {}
  at::Tensor dense_weight() const override { return dense_; }
  int64_t stored_weight_bytes() const override {
    return static_cast<int64_t>(stack_.nbytes()) + (dense_.is_same(stack_) ? 0 : static_cast<int64_t>(dense_.nbytes()));
  }

 protected:
  at::Tensor mixed_forward(const at::Tensor& x) override {
    return at::linear(x, at::matmul(coeff_(), stack_).view({N_, K_}));
  }

 private:
  at::Tensor stack_;
  std::function<at::Tensor()> coeff_;
  at::Tensor dense_;
};

at::Tensor pad_cols(const at::Tensor& w, int64_t K) {
  if (w.size(1) == K) return w;
  return at::cat({w, at::zeros({w.size(0), K - w.size(1)}, w.options())}, 1);
}

// The constant part of a lean mixed linear: the frozen weight once, and where each width option's
// quantization groups differ from the full matrix's.
//   W~ = sum_k sum_b gw_k gb_b P_kb,  P_kb = pad(Q_b(W[:, :w_k]))   (q/k/v/gate/up: one width, K)
// Q_b(W[:, :w_k]) equals Q_b(W) on the columns [0, s_k) whose groups are whole in the slice, and is
// the slice's own quantization on the rest [s_k, w_k) (a partial last group, or the whole slice when
// effective_group gives the slice a smaller group). Q_16 = identity, so P_k,16 = W masked at w_k:
//   W~ = m(c) * sum_b<16 gb_b Q_b(W) + m16(c) * gb_16 W + sum_k gw_k sum_b<16 gb_b tail_kb
//   m(c) = sum_k gw_k [c < s_k],  m16(c) = sum_k gw_k [c < w_k].
struct MixSpec {
  at::Tensor base;  // (N, K) float32, or bfloat16 when that is lossless; contiguous, frozen
  int64_t N = 0, K = 0;
  int group = 128;             // effective_group(K, group_size)
  std::vector<int> bits;       // the options' bits (16 = identity)
  std::vector<int64_t> cols;   // w_k: input columns of width option k
  std::vector<int64_t> start;  // s_k
  std::vector<int> tail_group; // effective_group(w_k, group_size)

  // W~ into out (N x K, zeros on entry) when out; with dW (N x K), G[k * nb + b] = <dW, P_kb>.
  void mix(const std::vector<float>& gw, const std::vector<float>& gb, float* out, const float* dW,
           std::vector<double>* G) const {
    const int64_t nw = static_cast<int64_t>(cols.size()), nb = static_cast<int64_t>(bits.size());
    std::vector<int> q;  // indices of the quantized options
    int i16 = -1;
    for (int b = 0; b < nb; ++b) {
      if (bits[b] >= 16) i16 = b;
      else q.push_back(b);
    }
    const int nq = static_cast<int>(q.size());
    FakeMixSlice S;
    S.w = base.data_ptr();
    S.bf16 = base.scalar_type() == at::kBFloat16;
    S.ldw = K;
    S.N = N;
    S.K = K;
    S.group = group;
    S.nq = nq;
    for (int i = 0; i < nq; ++i) {
      S.bits[i] = bits[q[i]];
      S.coef[i] = gb[q[i]];
    }
    S.coef16 = i16 >= 0 ? gb[i16] : 0.f;
    std::vector<float> colw, colw16;
    if (!(nw == 1 && cols[0] == K && start[0] == K && gw[0] == 1.f)) {
      colw.assign(K, 0.f);
      colw16.assign(K, 0.f);
      for (int64_t k = 0; k < nw; ++k) {
        for (int64_t c = 0; c < start[k]; ++c) colw[c] += gw[k];
        for (int64_t c = 0; c < cols[k]; ++c) colw16[c] += gw[k];
      }
      S.colw = colw.data();
      S.colw16 = colw16.data();
    }
    std::vector<double> dots(dW ? (nq + 1) * K : 0);
    fake_mix(S, out, K, dW, K, dots.data());
    if (G) G->assign(nw * nb, 0.0);
    // Prefix sums of the full matrix's column dots: <dW, Q_b(W)> over columns [0, x).
    std::vector<double> prefix;
    if (dW) {
      prefix.assign((nq + 1) * (K + 1), 0.0);
      for (int i = 0; i <= nq; ++i)
        for (int64_t c = 0; c < K; ++c) prefix[i * (K + 1) + c + 1] = prefix[i * (K + 1) + c] + dots[i * K + c];
    }
    for (int64_t k = 0; k < nw; ++k) {
      const int64_t s0 = start[k], w = cols[k];
      if (dW) {
        for (int i = 0; i < nq; ++i) (*G)[k * nb + q[i]] = prefix[i * (K + 1) + s0];
        if (i16 >= 0) (*G)[k * nb + i16] = prefix[nq * (K + 1) + w];
      }
      if (s0 >= w || (!dW && gw[k] == 0.f)) continue;
      // The tail [s0, w) of width k, quantized as its own slice.
      FakeMixSlice T = S;
      T.w = S.bf16 ? static_cast<const void*>(static_cast<const uint16_t*>(S.w) + s0)
                   : static_cast<const void*>(static_cast<const float*>(S.w) + s0);
      T.K = w - s0;
      T.group = tail_group[k];
      for (int i = 0; i < nq; ++i) T.coef[i] = gw[k] * gb[q[i]];
      T.colw = nullptr;
      T.coef16 = 0.f;
      T.colw16 = nullptr;
      std::vector<double> td(dW ? (nq + 1) * T.K : 0);
      fake_mix(T, out ? out + s0 : nullptr, K, dW ? dW + s0 : nullptr, K, td.data());
      if (dW)
        for (int i = 0; i < nq; ++i) {
          double sum = 0;
          for (int64_t c = 0; c < T.K; ++c) sum += td[i * T.K + c];
          (*G)[k * nb + q[i]] += sum;
        }
    }
  }
};

std::vector<float> values_of(const at::Tensor& t) {
  auto c = t.detach().to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// y = x W~^T with W~ recomputed in the backward instead of saved (saved: x and the choice weights).
struct LeanMixFunction : public torch::autograd::Function<LeanMixFunction> {
  // x: (..., K), gw: (n_width), gb: (n_bits) -> (..., N)
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& gw,
                            const at::Tensor& gb, const MixSpec* spec) {
    auto W = at::zeros({spec->N, spec->K}, at::kFloat);
    spec->mix(values_of(gw), values_of(gb), W.data_ptr<float>(), nullptr, nullptr);
    ctx->save_for_backward({x, gw, gb});
    ctx->saved_data["spec"] = reinterpret_cast<int64_t>(spec);
    return at::linear(x, W.to(x.scalar_type()));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto* spec = reinterpret_cast<const MixSpec*>(ctx->saved_data["spec"].toInt());
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &gw = saved[1], &gb = saved[2];
    const at::Tensor& gy = grads[0];
    const bool need_x = ctx->needs_input_grad(0);
    const bool need_w = ctx->needs_input_grad(1) || ctx->needs_input_grad(2);
    const std::vector<float> gwv = values_of(gw), gbv = values_of(gb);
    at::Tensor W = need_x ? at::zeros({spec->N, spec->K}, at::kFloat) : at::Tensor();
    at::Tensor dW;
    std::vector<double> G;
    if (need_w)  // dL/dW~ = gy^T x: (N, K)
      dW = at::mm(gy.reshape({-1, spec->N}).t().to(at::kFloat), x.reshape({-1, spec->K}).to(at::kFloat)).contiguous();
    if (need_x || need_w)
      spec->mix(gwv, gbv, need_x ? W.data_ptr<float>() : nullptr, need_w ? dW.data_ptr<float>() : nullptr,
                need_w ? &G : nullptr);
    dW = at::Tensor();
    at::Tensor gx = need_x ? at::matmul(gy, W.to(gy.scalar_type())) : at::Tensor();
    at::Tensor ggw, ggb;
    if (need_w) {
      const int64_t nw = gw.numel(), nb = gb.numel();
      std::vector<float> a(nw, 0.f), b(nb, 0.f);
      for (int64_t k = 0; k < nw; ++k)
        for (int64_t j = 0; j < nb; ++j) {
          a[k] += static_cast<float>(gbv[j] * G[k * nb + j]);
          b[j] += static_cast<float>(gwv[k] * G[k * nb + j]);
        }
      ggw = at::tensor(a, at::kFloat).to(gw.scalar_type());
      ggb = at::tensor(b, at::kFloat).to(gb.scalar_type());
    }
    return {gx, ggw, ggb, at::Tensor()};
  }
};

// The lean layout: the base weight once; W~ computed per forward from the current choice weights.
class LeanLinear final : public MixedLinear {
 public:
  LeanLinear(MixSpec spec, const ChoiceWeights* wc, const ChoiceWeights* bc, int64_t lora_rank)
      : MixedLinear(spec.N, spec.K, lora_rank), spec_(std::move(spec)), wc_(wc), bc_(bc) {}
  at::Tensor dense_weight() const override { return spec_.base.to(at::kFloat); }
  int64_t stored_weight_bytes() const override { return static_cast<int64_t>(spec_.base.nbytes()); }

 protected:
  at::Tensor mixed_forward(const at::Tensor& x) override {
    const at::Tensor gw = wc_ ? wc_->w : one_;
    const at::Tensor& gb = bc_->w;
    if (at::GradMode::is_enabled() && (x.requires_grad() || gw.requires_grad() || gb.requires_grad()))
      return LeanMixFunction::apply(x, gw, gb, &spec_);
    at::NoGradGuard ng;
    const std::vector<float> gwv = values_of(gw), gbv = values_of(gb);
    // The widest option at 16 bits is W itself (the reference of the sensitivity pass, sensitivity.h).
    const int64_t top = static_cast<int64_t>(spec_.bits.size()) - 1;
    if (spec_.cols[0] == spec_.K && gwv[0] == 1.f && spec_.bits[top] >= 16 && gbv[top] == 1.f) {
      bool onehot = true;
      for (size_t k = 1; k < gwv.size(); ++k) onehot = onehot && gwv[k] == 0.f;
      for (int64_t b = 0; b < top; ++b) onehot = onehot && gbv[b] == 0.f;
      if (onehot) return at::linear(x, spec_.base.to(x.scalar_type()));
    }
    auto W = at::zeros({spec_.N, spec_.K}, at::kFloat);
    spec_.mix(gwv, gbv, W.data_ptr<float>(), nullptr, nullptr);
    return at::linear(x, W.to(x.scalar_type()));
  }

 private:
  MixSpec spec_;
  const ChoiceWeights* wc_;  // width choice (o_proj, down_proj), else null
  const ChoiceWeights* bc_;  // bits choice
  at::Tensor one_ = at::ones({1}, at::kFloat);
};

// The base weight of a lean linear: bfloat16 when every value survives the round trip, else float32.
at::Tensor lean_base(const at::Tensor& dense) {
  auto b16 = dense.to(at::kBFloat16);
  if (at::equal(b16.to(at::kFloat), dense)) return b16.contiguous();
  return dense;
}

}  // namespace

SupernetStore supernet_store_from_env() {
  const char* v = std::getenv("LLMC_SUPERNET_STORE");
  if (!v || !*v || std::string(v) == "lean") return SupernetStore::Lean;
  if (std::string(v) == "stacked") return SupernetStore::Stacked;
  fail("LLMC_SUPERNET_STORE={}: expected \"lean\" or \"stacked\"", v);
}

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
                   int64_t lora_rank, uint64_t seed, bool install, SupernetStore store)
    : choices_(std::move(choices)), lat_(lat) {
  const auto& c = model.config();
  LLMC_CHECK(static_cast<int64_t>(choices_.size()) == c.num_layers, "supernet: choices for {} layers, model has {}",
             choices_.size(), c.num_layers);
  at::manual_seed(seed);
  at::NoGradGuard ng;
  const char* store_name = store == SupernetStore::Lean ? "lean" : "stacked";
  if (install) spdlog::info("supernet: building ({} store)", store_name);
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
      const int64_t N = slot->out_features(), K = slot->in_features();
      const bool col_mixed = j == kO || j == kDown;
      const auto& widths = (j <= kO) ? ch.kv : ch.mlp;
      auto cols_of = [&](int64_t w) { return j == kO ? w * g * hd : w; };
      if (install && store == SupernetStore::Lean) {
        at::Tensor dense = slot->dense_weight().to(at::kFloat).contiguous();
        if (ch.bits.front() < 16)  // as fake_quantize refuses them
          LLMC_CHECK(at::isfinite(dense).all().item<bool>(), "supernet: layer {} {} has non-finite weights", l,
                     kLinearNames[j]);
        MixSpec m;
        m.base = lean_base(dense);
        dense = at::Tensor();
        m.N = N;
        m.K = K;
        m.group = effective_group(static_cast<int>(K), group_size);
        m.bits = ch.bits;
        for (int64_t w : col_mixed ? widths : std::vector<int64_t>{K}) {
          const int64_t cols = col_mixed ? cols_of(w) : K;
          const int tg = effective_group(static_cast<int>(cols), group_size);
          m.cols.push_back(cols);
          m.tail_group.push_back(tg);
          m.start.push_back(cols == K ? K : tg == m.group ? cols / m.group * m.group : 0);
        }
        L->lin[j] = std::make_shared<LeanLinear>(std::move(m), col_mixed ? (j == kO ? &raw->kv : &raw->mlp) : nullptr,
                                                 &raw->bits[j], lora_rank);
        slot = L->lin[j];
      } else if (install) {
        at::Tensor dense = slot->dense_weight().to(at::kFloat).contiguous();
        std::vector<at::Tensor> stack;
        std::function<at::Tensor()> coeff;
        if (col_mixed) {
          for (int64_t w : widths) {
            const int64_t cols = cols_of(w);
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
        L->lin[j] = std::make_shared<StackedLinear>(at::stack(stack), N, K, coeff, lora_rank, dense);
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
  if (install)
    spdlog::info("supernet: {:.1f} MiB of mixed-linear weights ({} store)", weight_bytes() / 1048576.0, store_name);
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

int64_t Supernet::weight_bytes() const {
  int64_t n = 0;
  for (const auto& L : layers_)
    for (const auto& lin : L->lin)
      if (lin) n += lin->stored_weight_bytes();
  return n;
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
