#pragma once
// A discrete architecture: what the search outputs (RUN/arch.json) and what export consumes.
//
// arch.json:
// {
//   "format": "llmcompress-arch", "version": 1,
//   "model": {"hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "vocab_size"},
//   "group_size": 128,                       // requested quantization group (clipped per linear, see quant.h)
//   "lm_head_bits": 4,                       // optional: the lm_head's bits when the search chose them
//                                            // (export then ignores --lm-head-bits)
//   "layers": [{
//       "kv_heads": 2,                       // KV groups kept (each carries num_heads/num_kv_heads query heads)
//       "mlp_channels": 1024,                // MLP intermediate channels kept
//       "bits": {"q": 4, "k": 4, "v": 8, "o": 4, "gate": 3, "up": 3, "down": 4},   // 16 = dense
//       "kv_order": [1, 0, 2],               // importance order of the original KV heads (keep = first kv_heads)
//       "mlp_order": [17, 3, ...]            // importance order of the original MLP channels
//   }, ...],
//   "predicted": {"latency_ms": .., "tokens": 1, "size_bytes": ..},   // optional (from the LUT)
//   "alphas": {...}                          // optional: final choice distributions of the search
// }
// Empty kv_order/mlp_order mean the identity order.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "llmc/model/config.h"

namespace llmc {

// The seven linears of a block, in this order everywhere (arch.json keys in kLinearNames).
enum LinearKind { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kNumLinears };
constexpr std::array<const char*, kNumLinears> kLinearNames = {"q", "k", "v", "o", "gate", "up", "down"};

// Bit widths a linear can have: packed 2/3/4/8 (kernels/qformat.h) or 16 (dense).
constexpr bool valid_weight_bits(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8 || bits == 16; }
// lm_head precisions export writes (`export --lm-head-bits`), and so the ones a LUT may time.
constexpr bool valid_lm_head_bits(int bits) { return bits == 16 || bits == 8 || bits == 4; }

// The group size used for a linear with K inputs when `requested` is asked for: the kernels
// support 32/64/128; a group never exceeds the input width rounded up to 32.
int effective_group(int K, int requested);

struct LayerArch {
  int64_t kv_heads = 0;
  int64_t mlp_channels = 0;
  std::array<int, kNumLinears> bits{16, 16, 16, 16, 16, 16, 16};
  std::vector<int64_t> kv_order, mlp_order;
};

struct Arch {
  ModelConfig base;  // the original model's shapes (only the fields listed above are stored)
  int group_size = 128;
  int lm_head_bits = 0;  // 16, 8 or 4 when chosen (space.lm_head_bits); 0: export --lm-head-bits decides
  std::vector<LayerArch> layers;
  double predicted_latency_ms = -1;
  int64_t predicted_tokens = 1;
  int64_t predicted_size_bytes = -1;
  std::string alphas_json;  // raw JSON object or empty

  // Shapes after slicing (for the compressed model's config).
  ModelConfig compressed_config() const;
  // Checks widths, bits and orders against base; `where` names the file in errors.
  void validate(const std::string& where) const;
};

// "uniform:B": every width full, every linear at B bits, identity orders.
Arch uniform_arch(const ModelConfig& base, int bits, int group_size);
Arch read_arch(const std::string& path);
void write_arch(const Arch& arch, const std::string& path);  // atomic
std::string arch_to_json(const Arch& arch);
Arch arch_from_json(const std::string& text, const std::string& where);
// Checks that an arch was made for this model's shapes.
void check_arch_matches(const Arch& arch, const ModelConfig& model, const std::string& where);

}  // namespace llmc
