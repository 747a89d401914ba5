#include "llmc/export/quantize_model.h"
#include "llmc/model/threads.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <functional>

#include "llmc/core/error.h"
#include "llmc/core/log.h"
#include "llmc/export/discretize.h"
#include "llmc/model/attention.h"
#include "llmc/quant/quant.h"

namespace llmc {

double QuantizeReport::mean_rel_err(int bits) const {
  double s = 0;
  int n = 0;
  for (const auto& l : linears)
    if (l.bits < 16 && (bits == 0 || l.bits == bits)) {
      s += l.rel_err;
      ++n;
    }
  return n ? s / n : -1.0;
}

namespace {

enum Stage { kStageQKV, kStageO, kStageGateUp, kStageDown };
using BeforeHook = std::function<void(int64_t layer, Stage stage, const at::Tensor& input)>;

// GPTQ's H = 2/n X^T X over the rows of X (..., K).
at::Tensor hessian_of(const at::Tensor& X) {
  HessianAccumulator acc(X.size(-1));
  acc.add(X);
  return acc.hessian();
}

// A quantized linear's relative output error on X: |lin(X) - X dense^T|^2 / |X dense^T|^2.
double rel_output_error(Linear& lin, const at::Tensor& dense, const at::Tensor& X) {
  const at::Tensor ref = at::linear(X, dense);
  const double den = ref.pow(2).sum().item<double>();
  return den > 0 ? (lin.forward(X) - ref).pow(2).sum().item<double>() / den : 0.0;
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return x * cos + at::cat({-x2, x1}, -1) * sin;
}

// The model's blocks over full causal sequences (positions 0..T-1), in float32, exactly as
// Llama::hidden_states computes them. `before` sees each linear group's input just before the
// group is applied and may replace the group's linears (the calibration pass quantizes there).
at::Tensor run_layers(Llama& m, const at::Tensor& tokens, int64_t chunk, const BeforeHook& before) {
  const ModelConfig& c = m.config();
  auto& W = m.weights();
  const int64_t n = tokens.size(0), T = tokens.size(1), hd = c.head_dim;
  at::Tensor x = at::embedding(W.embed.to(at::kFloat), tokens.to(at::kLong));
  auto freqs = at::arange(T, at::kLong).to(at::kFloat).unsqueeze(-1) * rope_inv_freq(c);  // (T, hd/2)
  auto emb = at::cat({freqs, freqs}, -1).view({1, 1, T, hd});
  auto cos = emb.cos(), sin = emb.sin();
  auto bias = attention_bias(at::ones({T, T}, at::kBool).tril().view({1, 1, 1, T, T}));  // causal
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  chunk = std::max<int64_t>(1, chunk);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    auto& L = W.layers[l];
    const int64_t nkv = c.kv_heads(l), nq = c.q_heads(l), g = nq / std::max<int64_t>(nkv, 1);
    if (nkv > 0) {
      auto h = rms_norm(x, L.input_norm, c.rms_norm_eps);
      before(l, kStageQKV, h);
      std::vector<at::Tensor> outs;
      for (int64_t b0 = 0; b0 < n; b0 += chunk) {
        const int64_t bn = std::min(chunk, n - b0);
        auto hc = h.narrow(0, b0, bn);
        auto q = apply_rope(L.q->forward(hc).view({bn, T, nq, hd}).transpose(1, 2), cos, sin);
        auto k = apply_rope(L.k->forward(hc).view({bn, T, nkv, hd}).transpose(1, 2), cos, sin);
        auto v = L.v->forward(hc).view({bn, T, nkv, hd}).transpose(1, 2);
        auto qg = q.reshape({bn, nkv, g, T, hd});
        auto o = attention(qg, k, v, bias, scale).reshape({bn, nq, T, hd}).transpose(1, 2).reshape({bn, T, nq * hd});
        outs.push_back(o);
      }
      auto attn = at::cat(outs, 0);
      before(l, kStageO, attn);
      x = x + L.o->forward(attn);
    }
    if (c.mlp_width(l) > 0) {
      auto h = rms_norm(x, L.post_attn_norm, c.rms_norm_eps);
      before(l, kStageGateUp, h);
      auto a = at::silu(L.gate->forward(h)) * L.up->forward(h);
      before(l, kStageDown, a);
      x = x + L.down->forward(a);
    }
  }
  return x;
}

}  // namespace

at::Tensor layerwise_hidden_states(Llama& model, const at::Tensor& tokens) {
  at::NoGradGuard ng;
  return run_layers(model, tokens, 8, [](int64_t, Stage, const at::Tensor&) {});
}

QuantizeReport quantize_model(Llama& m, const Arch& arch, const QuantizeOptions& o, const at::Tensor& calib) {
  LLMC_CHECK(o.method == "rtn" || o.method == "gptq", "--quant: unknown method '{}' (rtn or gptq)", o.method);
  LLMC_CHECK(o.method == "rtn" || calib.defined(), "quantize: GPTQ needs calibration tokens");
  LLMC_CHECK(o.range == "zero" || o.range == "minmax", "--q-range: '{}' is not zero or minmax", o.range);
  LLMC_CHECK(o.range == "zero" || o.method == "rtn", "--q-range minmax is implemented for --quant rtn only");
  LLMC_CHECK(valid_lm_head_bits(o.lm_head_bits),
             "--lm-head-bits must be 16, 8 or 4 (got {})", o.lm_head_bits);
  const ModelConfig& c = m.config();
  LLMC_CHECK(static_cast<int64_t>(arch.layers.size()) == c.num_layers, "quantize: arch has {} layers, model {}",
             arch.layers.size(), c.num_layers);
  at::NoGradGuard ng;
  // Single-threaded torch ops here: GPTQ's column loop is serial, and between the short parallel
  // regions libgomp's spinning workers starve it on a busy machine (SmolLM2 on 2 shared cores:
  // 33 s per layer with 2 threads, 2.7 s with 1).
  ScopedTorchThreads one_thread(1);
  const auto t0 = std::chrono::steady_clock::now();
  QuantizeReport rep;
  rep.method = o.method;
  auto& W = m.weights();
  const bool gptq = o.method == "gptq";

  auto quantize_one = [&](std::shared_ptr<Linear>& lin, int bits, const at::Tensor& H) {
    if (bits >= 16 || linear_dropped(*lin)) return;
    LLMC_CHECK(!lin->is_packed(), "quantize: linear is already quantized");
    auto w = lin->dense_weight().to(at::kFloat).contiguous();
    const int g = effective_group(static_cast<int>(w.size(1)), o.group_size);
    const bool minmax = o.range == "minmax";
    const bool exact = o.fp16_offsets && !minmax;
    lin = std::make_shared<QuantizedLinear>(gptq     ? gptq_quantize(w, H, bits, g, o.damp, exact)
                                            : minmax ? quantize_rtn_minmax(w, bits, g)
                                            : exact  ? quantize_rtn_fp16_offsets(w, bits, g)
                                                     : quantize_rtn(w, bits, g));
  };

  at::Tensor head_input;  // (n, T, hidden): the last layer's output on the calibration set
  if (!calib.defined()) {
    for (int64_t l = 0; l < c.num_layers; ++l)
      for (int k = 0; k < kNumLinears; ++k) quantize_one(layer_linear(W.layers[l], k), arch.layers[l].bits[k], {});
  } else {
    LLMC_CHECK(calib.dim() == 2 && calib.size(0) >= 1 && calib.size(1) >= 1, "quantize: calibration tokens must be (n, T)");
    static const std::vector<std::vector<int>> kStageLinears = {{kQ, kK, kV}, {kO}, {kGate, kUp}, {kDown}};
    auto t_layer = std::chrono::steady_clock::now();
    auto before = [&](int64_t l, Stage stage, const at::Tensor& X) {
      auto& L = W.layers[l];
      const auto& kinds = kStageLinears[stage];
      bool any = false;
      for (int k : kinds) any = any || (arch.layers[l].bits[k] < 16 && !linear_dropped(*layer_linear(L, k)));
      const at::Tensor H = any && gptq ? hessian_of(X) : at::Tensor();
      for (int k : kinds) {
        auto& lin = layer_linear(L, k);
        const int bits = arch.layers[l].bits[k];
        if (!any || bits >= 16 || linear_dropped(*lin)) continue;
        auto dense = lin->dense_weight().to(at::kFloat);
        quantize_one(lin, bits, H);
        rep.linears.push_back({l, k, bits, rel_output_error(*lin, dense, X)});
      }
      if (stage == kStageDown || (stage == kStageO && c.mlp_width(l) == 0)) {
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_layer).count();
        double e = 0;
        int cnt = 0;
        for (const auto& st : rep.linears)
          if (st.layer == l) {
            e += st.rel_err;
            ++cnt;
          }
        spdlog::info("{}: layer {}/{} quantized in {:.2f} s (mean relative output error {:.3g})", o.method, l + 1,
                     c.num_layers, s, cnt ? e / cnt : 0.0);
        t_layer = std::chrono::steady_clock::now();
      }
    };
    head_input = run_layers(m, calib, o.chunk, before);
  }
  if (o.lm_head_bits < 16) {
    auto w = W.lm_head->dense_weight().to(at::kFloat).contiguous();
    // GPTQ on the lm_head too, over the final-norm outputs of the calibration set (the quantized
    // layers' outputs, as every later layer sees them). At 4 bits it matters: SmolLM2's RTN 4-bit
    // head nearly doubled a uniform 4-bit export's KL to the original (0.22 -> 0.39).
    at::Tensor X;  // (n T, hidden)
    if (head_input.defined())
      X = rms_norm(head_input, W.final_norm.to(at::kFloat), c.rms_norm_eps).reshape({-1, w.size(1)});
    quantize_one(W.lm_head, o.lm_head_bits, gptq ? hessian_of(X) : at::Tensor());
    if (X.defined()) {
      // The error on at most 1024 positions: all of them would be (n T) x vocab logits (GBs).
      rep.lm_head_rel_err = rel_output_error(*W.lm_head, w, X.narrow(0, 0, std::min<int64_t>(X.size(0), 1024)));
      spdlog::info("{}: lm_head quantized to {} bits (relative output error {:.3g})", o.method, o.lm_head_bits,
                   rep.lm_head_rel_err);
    }
    // A tied embedding is the same matrix: it becomes the packed table too, so the export stores
    // one table (SmolLM2: 28 MiB of 8-bit codes instead of that plus a 54 MiB bf16 embedding) and
    // the model computes with exactly what is stored.
    if (m.config().tie_word_embeddings) W.embed = W.lm_head->dense_weight().to(W.embed.scalar_type()).contiguous();
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace llmc
