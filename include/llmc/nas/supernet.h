#pragma once
// The supernet (method: "Relaxation"): the pre-trained model's linears are replaced by mixed
// linears whose weight is a Gumbel-softmax mixture over fake-quantized weights.
//  - Storage (docs/lean-supernet.md): each frozen weight is stored once (bfloat16 when that is
//    lossless, else float32); every option's fake quantization is computed on the fly inside the
//    forward (quant/fake_mix.h) and recomputed in the backward instead of being kept for it; width
//    masks are column weights, not copies. SupernetStore::Stacked keeps the earlier layout (one
//    precomputed fake-quantized copy per width x bit option) as the reference the lean one is
//    tested against; the environment variable LLMC_SUPERNET_STORE=stacked selects it (benchmarks).
//  - Bits: W~ = sum_b g_b Q_b(W) (Q_16 = W); gradients reach g through the mixture; W is frozen
//    (straight-through with respect to W is irrelevant) and an optional LoRA side path trains.
//  - Width: channels/KV groups are importance-ordered, so a width choice keeps a prefix. The soft
//    mask m = sum_k g_k 1[i < w_k] on o_proj/down_proj inputs is folded into their weight:
//    W~ = sum_k sum_b g_k g_b Q_b(W[:, :w_k]) (zero-padded), which also makes the one-hot
//    supernet exactly the sliced, fake-quantized subnet (quantization groups of a sliced input
//    dimension are those of the slice). q/k/v/gate/up rows need no mask: rows beyond the width
//    only feed zero columns of o/down.
//  - Expected latency couples width and bit probabilities through the LUT:
//    E = sum_layers p_width^T T_j p_bits_j + attention(p_kv) + fixed costs, differentiable in alpha,
//    with the forward plan's shapes and stacked q|k|v, gate|up calls (model/plan.h): for one-hot
//    choices it equals LatencyTable::predict_ms of that architecture.
#include <ATen/core/Tensor.h>

#include <array>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "llmc/latency/lut.h"
#include "llmc/latency/space.h"
#include "llmc/model/llama.h"
#include "llmc/model/plan.h"
#include "llmc/model/arch.h"
#include "llmc/nas/importance.h"

namespace llmc {

// Latency lookups at the search's token count (microseconds).
struct LatencyLookup {
  std::function<double(int64_t N, int64_t K, int bits)> linear_us;
  std::function<double(int64_t kv_heads)> attention_us;  // attention core of one layer
  double layer_fixed_us = 0;       // fixed cost of every layer, paid whatever its widths
  double layer_fixed_attn_us = 0;  // norm + residual of the attention block (skipped with 0 KV heads)
  double layer_fixed_mlp_us = 0;   // norm + SwiGLU + residual of the MLP block (skipped with 0 channels)
  double model_fixed_us = 0;                             // embedding, final norm, lm_head
};

// The lookups of a LUT at M tokens (the table must outlive the result).
LatencyLookup lookup_from(const LatencyTable& lut, int64_t M);

struct LayerChoices {
  std::vector<int64_t> kv;    // KV heads kept, widest first
  std::vector<int64_t> mlp;   // MLP channels kept, widest first
  std::vector<int> bits;      // increasing
};

// Choice indices of a discrete architecture.
struct ChoiceIndex {
  int64_t kv = 0, mlp = 0;
  std::array<int64_t, kNumLinears> bits{};
};

// log softmax(alpha) of every option of one layer's choices.
struct ChoiceLogProbs {
  std::vector<double> kv, mlp;
  std::array<std::vector<double>, kNumLinears> bits;
};

// Widths and bits of the chosen options (identity orders; group_size left at its default).
Arch arch_of_choices(const std::vector<ChoiceIndex>& idx, const std::vector<LayerChoices>& ch, const ModelConfig& base);

enum class SupernetStore {
  Lean,     // each weight once; fake quantization on the fly (default)
  Stacked,  // a fake-quantized copy per width x bit option (the reference; ~n_options x the weights)
};
// LLMC_SUPERNET_STORE: "stacked" or "lean" (default; unset or empty = lean); anything else is an error.
SupernetStore supernet_store_from_env();

class Supernet {
 public:
  // model: importance-permuted, dense. group_size: requested quantization group.
  // install = false builds only the latency tables (for latency queries) and leaves the model alone.
  Supernet(Llama& model, std::vector<LayerChoices> choices, const LatencyLookup& lat, int group_size,
           int64_t lora_rank, uint64_t seed, bool install = true, SupernetStore store = supernet_store_from_env());

  std::vector<at::Tensor> arch_parameters() const;    // the alphas (leaf tensors, requires_grad)
  std::vector<at::Tensor> weight_parameters() const;  // LoRA A/B (empty when rank 0)
  // Draws Gumbel-softmax weights for every choice (straight-through one-hot when hard).
  void sample(double tau, bool hard, std::mt19937_64& rng);
  // Fixes every choice to one option (weights one-hot, no gradient to alphas).
  void set_fixed(const std::vector<ChoiceIndex>& idx);
  // sum over all choices of softmax(alpha)-weighted LUT latency (ms), differentiable in alphas.
  at::Tensor expected_latency_ms() const;
  double latency_ms(const std::vector<ChoiceIndex>& idx) const;  // of one discrete architecture
  std::vector<ChoiceIndex> argmax() const;
  std::vector<ChoiceLogProbs> log_probs() const;
  // Sets every choice's logits (same shapes as log_probs(); e.g. alphas_from_kl, sensitivity.h).
  void set_alphas(const std::vector<ChoiceLogProbs>& alphas);
  std::vector<ChoiceIndex> fastest() const;  // per layer the fastest option (exhaustive)
  std::vector<ChoiceIndex> widest() const;   // full widths, most bits
  double mean_entropy() const;
  Arch to_arch(const std::vector<ChoiceIndex>& idx, const Importance& imp, const ModelConfig& base) const;
  std::string alphas_json() const;  // softmax distributions per choice
  const std::vector<LayerChoices>& choices() const { return choices_; }
  // Checkpoint helpers: all state tensors by name.
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  // Bytes of the weights the installed mixed linears hold (base weights, or the stacked copies).
  int64_t weight_bytes() const;

 private:
  struct Layer;
  std::vector<LayerChoices> choices_;
  std::vector<std::shared_ptr<Layer>> layers_;
  LatencyLookup lat_;
  double model_fixed_ms_ = 0;
};

// Replaces choices by their restriction for the search modes: width-only keeps {16} bits,
// bits-only keeps full widths; `fixed` (sequential phase 2) pins widths to given values.
std::vector<LayerChoices> make_choices(const ModelConfig& model, const SearchSpace& space, bool widths, bool bits);

}  // namespace llmc
