// A LUT's decode entries calibrated against whole-model decodes (build_lut_json): per bit width b
// that every layer may take, the runtime engine decodes a uniform-b model of the LUT's shapes with
// random weights, and the table's b-bit linear entries at M = 1 are scaled so that its prediction of
// that model equals the measured decode. Why: an entry is timed alone, each call reading weights
// from a rotating buffer, and what a whole decode reads from cache depends on the machine's last-level
// cache and on every other op in the token (on a 2-vCPU Xeon VM the uncalibrated 4-bit entries
// over-priced SmolLM2's uniform 4-bit decode by 10-26% while pricing 8-bit within 1-9%: the ratio
// the search trades on was 1.29-1.57 where the decodes measured 1.58-1.92; docs/measurements.md).
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <vector>

#include "llmc/core/error.h"
#include "llmc/core/log.h"
#include "llmc/latency/lut.h"
#include "llmc/model/arch.h"
#include "llmc/model/llama.h"
#include "llmc/quant/quant.h"
#include "llmc/runtime/engine.h"
#include "llmc_kernels/hd.h"
#include "llmc_kernels/qformat.h"

namespace llmc {

using json = nlohmann::ordered_json;

double lut_calibration_scale(double measured_us, double predicted_us, double linears_us) {
  LLMC_CHECK(linears_us > 0, "lut calibration: no linear time to scale");
  const double s = (measured_us - (predicted_us - linears_us)) / linears_us;
  return std::clamp(s, 0.25, 4.0);
}

void scale_decode_entries(json& linears, int bits, int64_t vocab, double scale) {
  for (auto& e : linears)
    if (e.at("bits").get<int>() == bits && e.at("M").get<int64_t>() == 1 && e.at("N").get<int64_t>() != vocab)
      e["us"] = e.at("us").get<double>() * scale;
}

namespace {

// A packed b-bit linear of random codes (every code is valid) and mid-range zeros, scaled so that a
// weight's std is 1 / sqrt(K) (codes uniform: std 2^bits / sqrt(12)): activations keep their size
// through the layers, no inf, NaN or denormals to time.
std::shared_ptr<Linear> random_packed(int64_t N, int64_t K, int bits, int group, std::mt19937& rng) {
  kernels::QMatrix q;
  q.layout = kernels::make_layout(bits, effective_group(static_cast<int>(K), group), static_cast<int>(N),
                                  static_cast<int>(K));
  q.codes.resize(q.layout.code_bytes);
  for (auto& c : q.codes) c = static_cast<uint8_t>(rng());
  const double scale = std::sqrt(12.0) / (static_cast<double>(1 << bits) * std::sqrt(static_cast<double>(K)));
  q.scales.assign(q.layout.scale_count, kernels::fp32_to_fp16(static_cast<float>(scale)));
  q.zeros.assign(q.layout.scale_count, kernels::fp32_to_fp16(static_cast<float>(1 << (bits - 1))));
  return std::make_shared<QuantizedLinear>(std::move(q));
}

// us per decoded token of a uniform-`bits` model (lm_head at lm_head_bits) at about `context`
// cached positions: the median of 3 runs of 32 decodes, each after a prefill of `context` tokens
// and 4 untimed decodes.
double uniform_decode_us(const ModelConfig& m, int bits, int group, int lm_head_bits, int64_t context, int threads) {
  std::mt19937 rng(1234u + static_cast<unsigned>(bits));
  const int64_t H = m.hidden_size, V = m.vocab_size, hd = m.head_dim;
  LlamaWeights w;
  // Only the rows of the tokens fed are read, unless the lm_head is the tied dense embedding.
  w.embed = lm_head_bits == 16 ? at::randn({V, H}) * 0.02 : at::empty({V, H}, at::kFloat);
  const int64_t ids = std::min<int64_t>(V, 64);
  if (lm_head_bits != 16) w.embed.narrow(0, 0, ids).normal_(0, 0.02);
  w.final_norm = at::ones({H});
  w.lm_head = lm_head_bits == 16 ? std::shared_ptr<Linear>(std::make_shared<DenseLinear>(w.embed))
                                 : random_packed(V, H, lm_head_bits, group, rng);
  for (int64_t l = 0; l < m.num_layers; ++l) {
    LayerWeights L;
    L.input_norm = at::ones({H});
    L.post_attn_norm = at::ones({H});
    const int64_t nq = m.q_heads(l), nkv = m.kv_heads(l), I = m.mlp_width(l);
    L.q = random_packed(nq * hd, H, bits, group, rng);
    L.k = random_packed(nkv * hd, H, bits, group, rng);
    L.v = random_packed(nkv * hd, H, bits, group, rng);
    L.o = random_packed(H, nq * hd, bits, group, rng);
    L.gate = random_packed(I, H, bits, group, rng);
    L.up = random_packed(I, H, bits, group, rng);
    L.down = random_packed(H, I, bits, group, rng);
    w.layers.push_back(std::move(L));
  }
  RuntimeEngine eng(m, w, threads);
  constexpr int kTokens = 32, kWarm = 4, kRuns = 3;
  std::vector<int64_t> prompt(static_cast<size_t>(context));
  for (int64_t i = 0; i < context; ++i) prompt[i] = i % ids;
  std::vector<double> runs;
  const float* logits = nullptr;
  for (int r = 0; r < kRuns; ++r) {
    auto cache = eng.new_cache(1, context + kWarm + kTokens);
    eng.prefill(prompt.data(), context, *cache);
    for (int i = 0; i < kWarm; ++i) eng.decode(i % ids, *cache);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kTokens; ++i) logits = eng.decode(i % ids, *cache);
    runs.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kTokens);
  }
  LLMC_CHECK(std::isfinite(logits[0]), "lut calibration: the random uniform {}-bit model's logits are not finite", bits);
  std::sort(runs.begin(), runs.end());
  return runs[runs.size() / 2];
}

}  // namespace

json calibrate_lut_decode(json& lut, const ModelConfig& model, const SearchSpace& space, int lm_head_bits, int threads) {
  json out = json::array();
  // Widths every layer may take (a uniform model of another width has no entries to predict it).
  std::set<int> widths;
  for (int b : space.bit_choices(0)) widths.insert(b);
  for (int64_t l = 1; l < model.num_layers; ++l) {
    std::set<int> here;
    for (int b : space.bit_choices(l))
      if (widths.count(b)) here.insert(b);
    widths = here;
  }
  widths.erase(16);  // dense fp32: the whole model in fp32 to time; left as measured
  const int64_t context = lut.at("context").get<int64_t>();
  // Parsed once: scaling one width's entries does not change a uniform model of another width.
  const LatencyTable table = LatencyTable::parse(lut.dump(), "lut (calibration)");
  for (int b : widths) {
    const LatencyParts parts = table.predict_parts(uniform_arch(model, b, space.group_size), 1);
    const double lin = parts.linears_us.count(b) ? parts.linears_us.at(b) : 0.0;
    if (lin <= 0) continue;
    const double measured = uniform_decode_us(model, b, space.group_size, lm_head_bits, context, threads);
    const double scale = lut_calibration_scale(measured, parts.total_us(), lin);
    scale_decode_entries(lut.at("linears"), b, model.vocab_size, scale);
    spdlog::info("lut: uniform {}-bit decode measured {:.3f} ms, the entries predicted {:.3f}: its {}-bit decode "
                 "entries x {:.3f}", b, measured / 1000, parts.total_us() / 1000, b, scale);
    out.push_back({{"bits", b}, {"measured_ms", measured / 1000}, {"predicted_ms", parts.total_us() / 1000},
                   {"linears_ms", lin / 1000}, {"scale", scale}});
  }
  return out;
}

}  // namespace llmc
