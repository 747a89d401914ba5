// A LUT's decode entries calibrated against whole-model decodes (build_lut_json): per bit width b
// that every layer may take, the runtime engine decodes a uniform-b model of the LUT's shapes with
// random weights (the widths alternated over rounds: calibration_schedule; the median kept), and
// the table's b-bit linear entries at M = 1 are scaled so that its prediction of that model equals
// the measured decode. Why: an entry is timed alone, each call reading weights
// from a rotating buffer, and what a whole decode reads from cache depends on the machine's last-level
// cache and on every other op in the token (on a 2-vCPU Xeon VM the uncalibrated 4-bit entries
// over-priced SmolLM2's uniform 4-bit decode by 10-26% while pricing 8-bit within 1-9%: the ratio
// the search trades on was 1.29-1.57 where the decodes measured 1.58-1.92; docs/measurements.md).
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
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

std::vector<size_t> calibration_schedule(size_t widths, int rounds) {
  std::vector<size_t> out;
  for (int r = 0; r < rounds; ++r)
    for (size_t i = 0; i < widths; ++i) out.push_back((i + static_cast<size_t>(r)) % widths);
  return out;
}

void scale_decode_entries(json& linears, int bits, int64_t vocab, double scale) {
  for (auto& e : linears)
    if (e.at("bits").get<int>() == bits && e.at("M").get<int64_t>() == 1 && e.at("N").get<int64_t>() != vocab)
      e["us"] = e.at("us").get<double>() * scale;
}

namespace {

constexpr int kCalibrationRounds = 5;
constexpr int64_t kCalibrationIds = 64;  // the token ids fed (embedding rows filled)

// A packed b-bit linear of random codes (every code is valid) and mid-range zeros, scaled so that a
// weight's std is 1 / sqrt(K) (codes uniform: std 2^bits / sqrt(12)): activations keep their size
// through the layers, no inf, NaN or denormals to time.
std::shared_ptr<Linear> random_packed(int64_t N, int64_t K, int bits, int group, std::mt19937& rng) {
  kernels::QMatrix q;
  q.layout = kernels::make_layout(bits, effective_group(static_cast<int>(K), group), static_cast<int>(N),
                                  static_cast<int>(K));
  q.codes.resize(q.layout.code_bytes);
  for (size_t i = 0; i < q.codes.size(); i += 4) {  // 4 bytes a draw: built once per timed run
    const uint32_t r = rng();
    std::memcpy(q.codes.data() + i, &r, std::min<size_t>(4, q.codes.size() - i));
  }
  const double scale = std::sqrt(12.0) / (static_cast<double>(1 << bits) * std::sqrt(static_cast<double>(K)));
  q.scales.assign(q.layout.scale_count, kernels::fp32_to_fp16(static_cast<float>(scale)));
  q.zeros.assign(q.layout.scale_count, kernels::fp32_to_fp16(static_cast<float>(1 << (bits - 1))));
  return std::make_shared<QuantizedLinear>(std::move(q));
}

// A uniform-`bits` model of m's shapes with random weights (lm_head at lm_head_bits) and its engine
// (which references the weights: they live together).
struct UniformModel {
  LlamaWeights w;
  std::unique_ptr<RuntimeEngine> eng;
};

std::unique_ptr<UniformModel> uniform_model(const ModelConfig& m, int bits, int group, int lm_head_bits, int threads) {
  std::mt19937 rng(1234u + static_cast<unsigned>(bits));
  const int64_t H = m.hidden_size, V = m.vocab_size;
  auto um = std::make_unique<UniformModel>();
  LlamaWeights& w = um->w;
  // Only the rows of the tokens fed are read, unless the lm_head is the tied dense embedding.
  w.embed = lm_head_bits == 16 ? at::randn({V, H}) * 0.02 : at::empty({V, H}, at::kFloat);
  if (lm_head_bits != 16) w.embed.narrow(0, 0, std::min<int64_t>(V, kCalibrationIds)).normal_(0, 0.02);
  w.final_norm = at::ones({H});
  w.lm_head = lm_head_bits == 16 ? std::shared_ptr<Linear>(std::make_shared<DenseLinear>(w.embed))
                                 : random_packed(V, H, lm_head_bits, group, rng);
  const int64_t hd = m.head_dim;
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
  um->eng = std::make_unique<RuntimeEngine>(m, w, threads);
  hold_weights_once(*um->eng, w);  // as a loaded model holds them: each matrix once, in the engine's buffer
  return um;
}

// us per decoded token of one run: 32 decodes after a prefill of `context` tokens and 4 untimed
// decodes.
double decode_run_us(RuntimeEngine& eng, int bits, int64_t context, int64_t vocab) {
  constexpr int kTokens = 32, kWarm = 4;
  const int64_t ids = std::min<int64_t>(vocab, kCalibrationIds);
  std::vector<int64_t> prompt(static_cast<size_t>(context));
  for (int64_t i = 0; i < context; ++i) prompt[i] = i % ids;
  auto cache = eng.new_cache(1, context + kWarm + kTokens);
  eng.prefill(prompt.data(), context, *cache);
  for (int i = 0; i < kWarm; ++i) eng.decode(i % ids, *cache);
  const float* logits = nullptr;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kTokens; ++i) logits = eng.decode(i % ids, *cache);
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kTokens;
  LLMC_CHECK(std::isfinite(logits[0]), "lut calibration: the random uniform {}-bit model's logits are not finite", bits);
  return us;
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
  // Each width's decode timed in kCalibrationRounds rounds, the widths alternated in an order that
  // rotates every round, and its median kept: a width timed once, all in one stretch, carried the
  // machine's drift of that stretch into its scale (this VM's speed drifts 10-20% within minutes).
  // The models are built anew for each run, so only one is in memory at a time.
  const std::vector<int> order(widths.begin(), widths.end());
  std::map<int, std::vector<double>> runs;
  for (size_t i : calibration_schedule(order.size(), kCalibrationRounds)) {
    const int b = order[i];
    const auto um = uniform_model(model, b, space.group_size, lm_head_bits, threads);
    runs[b].push_back(decode_run_us(*um->eng, b, context, model.vocab_size));
  }
  // Parsed once: scaling one width's entries does not change a uniform model of another width.
  const LatencyTable table = LatencyTable::parse(lut.dump(), "lut (calibration)");
  for (int b : order) {
    const LatencyParts parts = table.predict_parts(uniform_arch(model, b, space.group_size), 1);
    const double lin = parts.linears_us.count(b) ? parts.linears_us.at(b) : 0.0;
    if (lin <= 0) continue;
    std::vector<double> r = runs.at(b);
    std::sort(r.begin(), r.end());
    const double measured = r[r.size() / 2];
    const double scale = lut_calibration_scale(measured, parts.total_us(), lin);
    scale_decode_entries(lut.at("linears"), b, model.vocab_size, scale);
    spdlog::info("lut: uniform {}-bit decode measured {:.3f} ms (median of {} alternated runs, {:.3f}-{:.3f}), the "
                 "entries predicted {:.3f}: its {}-bit decode entries x {:.3f}", b, measured / 1000, r.size(),
                 r.front() / 1000, r.back() / 1000, parts.total_us() / 1000, b, scale);
    json runs_ms = json::array();
    for (double us : runs.at(b)) runs_ms.push_back(us / 1000);
    out.push_back({{"bits", b}, {"measured_ms", measured / 1000}, {"runs_ms", runs_ms},
                   {"predicted_ms", parts.total_us() / 1000}, {"linears_ms", lin / 1000}, {"scale", scale}});
  }
  return out;
}

}  // namespace llmc
