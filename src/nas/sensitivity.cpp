#include "llmc/nas/sensitivity.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/progress.h"
#include "llmc/finetune/train.h"

namespace llmc {

std::vector<ChoiceLogProbs> choice_kl(Supernet& net, Llama& model, const at::Tensor& batch, const at::Tensor& teacher,
                                      bool progress, const std::vector<ChoiceIndex>* around) {
  at::NoGradGuard ng;
  const std::vector<LayerChoices>& ch = net.choices();
  const std::vector<ChoiceIndex> ref = around ? *around : net.widest();
  int64_t options = 0;  // the non-reference ones
  for (const auto& c : ch)
    options += static_cast<int64_t>(c.kv.size() + c.mlp.size()) - 2 + kNumLinears * (static_cast<int64_t>(c.bits.size()) - 1);
  std::unique_ptr<Progress> bar = progress ? std::make_unique<Progress>("sensitivity", options, "option") : nullptr;
  std::vector<ChoiceLogProbs> kl(ch.size());
  std::vector<ChoiceIndex> idx = ref;
  // An option of layer l changes nothing before it: the widest architecture's input to each layer
  // is computed once and only layers l.. run per option (half the layer work on average).
  const int64_t B = batch.size(0), T = batch.size(1);
  const at::Tensor positions = at::arange(T, at::kLong).unsqueeze(0).expand({B, T});
  const at::Tensor key_mask = at::ones({B, T}, at::kBool);
  net.set_fixed(ref);
  const std::vector<at::Tensor> inputs = model.layer_inputs(batch, positions, key_mask);
  // Around another architecture the reference options are not free: each gets the architecture's
  // own KL, so every option of a choice is measured with the same rest (differences = deltas).
  double ref_kl = 0;
  if (around)
    ref_kl = std::max(kl_to_teacher(model.forward_from(inputs[0], 0, positions, key_mask), teacher).item<double>(), 0.0);
  // kl_out[k] = KL with option k of the choice that `slot` (in idx[l]) selects, reference at 0.
  size_t layer = 0;
  auto sweep = [&](int64_t& slot, size_t n, std::vector<double>& kl_out) {
    const int64_t keep = slot;
    kl_out.assign(n, 0.0);
    kl_out[keep] = ref_kl;
    for (size_t k = 0; k < n; ++k) {
      if (static_cast<int64_t>(k) == keep) continue;
      slot = static_cast<int64_t>(k);
      net.set_fixed(idx);
      const at::Tensor logits = model.forward_from(inputs[layer], static_cast<int64_t>(layer), positions, key_mask);
      kl_out[k] = std::max(kl_to_teacher(logits, teacher).item<double>(), 0.0);
      if (bar) bar->advance(1);
    }
    slot = keep;
  };
  for (size_t l = 0; l < ch.size(); ++l) {
    layer = l;
    sweep(idx[l].kv, ch[l].kv.size(), kl[l].kv);
    sweep(idx[l].mlp, ch[l].mlp.size(), kl[l].mlp);
    for (int j = 0; j < kNumLinears; ++j) sweep(idx[l].bits[j], ch[l].bits.size(), kl[l].bits[j]);
  }
  if (bar) bar->finish();
  net.set_fixed(ref);
  return kl;
}

std::string sensitivity_json(const std::vector<ChoiceLogProbs>& kl, const std::vector<LayerChoices>& ch) {
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (size_t l = 0; l < kl.size(); ++l) {
    nlohmann::ordered_json e;
    e["kv"] = {{"choices", ch[l].kv}, {"kl", kl[l].kv}};
    e["mlp"] = {{"choices", ch[l].mlp}, {"kl", kl[l].mlp}};
    for (int j = 0; j < kNumLinears; ++j)
      e[std::string("bits_") + kLinearNames[j]] = {{"choices", ch[l].bits}, {"kl", kl[l].bits[j]}};
    layers.push_back(std::move(e));
  }
  return nlohmann::ordered_json{{"format", "llmcompress-sensitivity"}, {"layers", layers}}.dump(1) + "\n";
}

bool read_sensitivity(const std::string& path, const std::vector<LayerChoices>& ch, std::vector<ChoiceLogProbs>* kl) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(path));
    if (j.value("format", "") != "llmcompress-sensitivity") fail("{}: not a sensitivity file", path);
    const auto& layers = j.at("layers");
    if (layers.size() != ch.size()) return false;
    std::vector<ChoiceLogProbs> out(ch.size());
    for (size_t l = 0; l < ch.size(); ++l) {
      const auto& e = layers[l];
      if (e.at("kv").at("choices").get<std::vector<int64_t>>() != ch[l].kv ||
          e.at("mlp").at("choices").get<std::vector<int64_t>>() != ch[l].mlp)
        return false;
      out[l].kv = e["kv"].at("kl").get<std::vector<double>>();
      out[l].mlp = e["mlp"].at("kl").get<std::vector<double>>();
      for (int j2 = 0; j2 < kNumLinears; ++j2) {
        const auto& b = e.at(std::string("bits_") + kLinearNames[j2]);
        if (b.at("choices").get<std::vector<int>>() != ch[l].bits) return false;
        out[l].bits[j2] = b.at("kl").get<std::vector<double>>();
        if (out[l].bits[j2].size() != ch[l].bits.size()) fail("{}: layer {}: wrong number of KL values", path, l);
      }
      if (out[l].kv.size() != ch[l].kv.size() || out[l].mlp.size() != ch[l].mlp.size())
        fail("{}: layer {}: wrong number of KL values", path, l);
    }
    *kl = std::move(out);
    return true;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: corrupt sensitivity file ({})", path, e.what());
  }
}

std::vector<ChoiceLogProbs> alphas_from_kl(const std::vector<ChoiceLogProbs>& kl, const std::vector<LayerChoices>& ch,
                                           double scale) {
  LLMC_CHECK(scale > 0, "sensitivity: init scale must be > 0 (got {})", scale);
  LLMC_CHECK(kl.size() == ch.size(), "sensitivity: KL for {} layers, {} layers of choices", kl.size(), ch.size());
  // T: mean KL of every linear at its layer's middle bit option (the option below the median for an
  // even count; with one option, no bit choice and T comes from the widths).
  double sum = 0;
  int64_t n = 0;
  for (size_t l = 0; l < ch.size(); ++l) {
    if (ch[l].bits.size() < 2) continue;
    const size_t mid = (ch[l].bits.size() - 1) / 2;
    for (int j = 0; j < kNumLinears; ++j) sum += kl[l].bits[j][mid], ++n;
  }
  if (n == 0)
    for (size_t l = 0; l < ch.size(); ++l)
      for (const auto* v : {&kl[l].kv, &kl[l].mlp})
        for (double x : *v)
          if (x > 0) sum += x, ++n;
  const double T = n > 0 && sum > 0 ? sum / static_cast<double>(n) : 1.0;
  std::vector<ChoiceLogProbs> a(kl.size());
  auto map = [&](const std::vector<double>& k) {
    std::vector<double> out(k.size());
    for (size_t i = 0; i < k.size(); ++i) out[i] = -k[i] / (scale * T);
    return out;
  };
  for (size_t l = 0; l < kl.size(); ++l) {
    a[l].kv = map(kl[l].kv);
    a[l].mlp = map(kl[l].mlp);
    for (int j = 0; j < kNumLinears; ++j) a[l].bits[j] = map(kl[l].bits[j]);
  }
  return a;
}

}  // namespace llmc
