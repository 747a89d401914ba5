#pragma once
// The search space (shared by `lut`, `search` and the LUT file's hash). JSON, documented in
// configs/README.md:
// {
//   "kv_group_fractions": [1.0, 0.75, 0.5, 0.25],   // KV groups kept, as fractions of the model's
//   "mlp_width_fractions": [1.0, 0.875, 0.75, 0.625, 0.5],  // MLP channels kept, fractions
//   "bits": [2, 3, 4, 8, 16],                        // weight bits per linear (16 = dense)
//   "group_size": 128,                               // quantization group (32, 64, 128)
//   "width_multiple": 32,                            // MLP widths are rounded to this multiple
//   "layers": {"0": {"kv_group_fractions": [1.0]}, "29": {"bits": [4, 8, 16]}},  // per-layer overrides
//   "lm_head_bits": [4, 8]                           // the lm_head's bits as a choice too (default:
//                                                    // none, the lm_head stays at lut_settings.lm_head_bits)
// }
// Every key is optional (defaults above); unknown keys are errors.
#include <cstdint>
#include <string>
#include <vector>

#include "llmc/model/config.h"

namespace llmc {

struct LayerSpace {
  std::vector<double> kv_group_fractions{1.0, 0.75, 0.5, 0.25};
  std::vector<double> mlp_width_fractions{1.0, 0.875, 0.75, 0.625, 0.5};
  std::vector<int> bits{2, 3, 4, 8, 16};
};

struct SearchSpace {
  LayerSpace defaults;
  std::vector<std::pair<int64_t, LayerSpace>> overrides;  // layer index -> its space
  int group_size = 128;
  int width_multiple = 32;
  // The lm_head's bit widths the search chooses among (increasing; 16, 8, 4 as export --lm-head-bits);
  // empty: not a choice. A model-level choice, decided at discretization (nas/search.h).
  std::vector<int> lm_head_bits;
  // Whether a table timing its lm_head at `bits` fits this space: no lm_head choice, or `bits` is one
  // of them (the other widths are priced against the table's own).
  bool allows_lut_lm_head(int bits) const;

  const LayerSpace& layer(int64_t l) const;
  // Concrete choices for layer l of `model`, distinct and in decreasing order (index 0 = widest).
  std::vector<int64_t> kv_choices(const ModelConfig& model, int64_t l) const;
  std::vector<int64_t> mlp_choices(const ModelConfig& model, int64_t l) const;
  std::vector<int> bit_choices(int64_t l) const;  // increasing
  std::string canonical_json() const;             // stable text (for hashes)
};

// Parses a space object (`where` names the file and key path in errors).
SearchSpace parse_search_space(const std::string& json_text, const std::string& where);
SearchSpace load_search_space(const std::string& path);

// 64-bit FNV-1a of the model shapes + the space: a LUT or search refuses another model's LUT.
std::string shapes_hash(const ModelConfig& model, const SearchSpace& space);

}  // namespace llmc
