#pragma once
// Per-choice sensitivity, to initialise the architecture logits (search config
// "schedule": {"init": "sensitivity"}; issue 16 lever). From the widest architecture (full widths,
// most bits), each option of each choice is applied alone and the KL divergence of the subnet's
// next-token distribution from the original's is measured on one calibration batch:
//   kl[l].bits[j][b] = KL(original || widest with linear j of layer l at option b)
//   kl[l].kv[k], kl[l].mlp[k]: likewise for one layer's KV-head or MLP-width option
// The reference options have KL 0 (not measured). Cost: one forward per option (a SmolLM2 layer
// has 2 + 2 + 7 x 4 = 32 non-reference options).
//
// The logits then start at alpha_c = -kl_c / (scale * T), T = the mean KL of the linears' middle
// bit option (4 bits in a {2,3,4,8,16} space): a choice that costs as much as an average 4-bit
// linear starts e^(1/scale) times less likely than its reference, one that hurts ten times more
// (2-bit, halving an MLP) practically excluded unless the latency pressure and the gradients of
// the search move it.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "llmc/model/llama.h"
#include "llmc/nas/supernet.h"

namespace llmc {

// `batch` (B, T) tokens, `teacher` (B, T, V) the original model's logits on it; `model` is the
// model the supernet is installed in. Leaves the supernet fixed at the reference architecture:
// the widest, or `around` when given (schedule.sensitivity_passes: each option applied alone to
// the architecture a first knapsack chose, so the KLs see the quantized and cut neighbours; the
// reference options then get that architecture's own KL instead of 0).
// progress: a progress bar over the options.
std::vector<ChoiceLogProbs> choice_kl(Supernet& net, Llama& model, const at::Tensor& batch, const at::Tensor& teacher,
                                      bool progress = false, const std::vector<ChoiceIndex>* around = nullptr);

// The KL values as JSON, per layer: {"kv": {"choices": [...], "kl": [...]}, "mlp": ..., "bits_q": ...}.
std::string sensitivity_json(const std::vector<ChoiceLogProbs>& kl, const std::vector<LayerChoices>& ch);

// The KL values of sensitivity_json's file when its layers hold exactly the options `ch`; false when
// they do not (another space or mode). Throws llmc::Error naming the file when it is unreadable.
bool read_sensitivity(const std::string& path, const std::vector<LayerChoices>& ch, std::vector<ChoiceLogProbs>* kl);

// The initial logits above. scale > 0.
std::vector<ChoiceLogProbs> alphas_from_kl(const std::vector<ChoiceLogProbs>& kl, const std::vector<LayerChoices>& ch,
                                           double scale);

}  // namespace llmc
