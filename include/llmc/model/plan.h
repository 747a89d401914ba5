#pragma once
// The forward plan: what one forward step of a model with architecture `arch` runs, in the way
// the runtime engine runs it. One function of (ModelConfig, Arch) that every stage reads instead of
// restating the rules:
//   - runtime/engine.cpp  builds its kernel calls from it (which linears it stacks into one call);
//   - latency/lut.cpp     prices it (predict_ms) and enumerates the shapes a LUT must time;
//   - nas/supernet.cpp    takes its shapes and stacking rule for the expected latency;
//   - export/format.cpp   sums its bytes for the size report; the LUT's weight accounting too.
// Torch-free.
#include <array>
#include <cstdint>
#include <vector>

#include "llmc/model/arch.h"
#include "llmc/model/config.h"

namespace llmc {

// y (M, N) = x (M, K) W^T.
struct LinearShape {
  int64_t N = 0, K = 0;
  bool operator==(const LinearShape& o) const { return N == o.N && K == o.K; }
};

// Shape of linear `kind` (model/arch.h) in a layer that keeps `kv_heads` KV groups and
// `mlp_channels` MLP channels (0: the sub-block is dropped and the shape has a zero side).
//   q: (kv_heads * g * hd, H)   k, v: (kv_heads * hd, H)   o: (H, kv_heads * g * hd)
//   gate, up: (w, H)            down: (H, w)               g = num_heads / num_kv_heads
LinearShape linear_shape(const ModelConfig& c, int kind, int64_t kv_heads, int64_t mlp_channels);

// The runtime stacks the rows of q|k|v (gate|up) into one matrix, one kernel call, when every part
// has the same bits (they share K, hence the quantization group). These are the two stacks.
constexpr std::array<int, 3> kQkvStack = {kQ, kK, kV};
constexpr std::array<int, 2> kGateUpStack = {kGate, kUp};
template <size_t n>
bool stacked(const std::array<int, kNumLinears>& bits, const std::array<int, n>& parts) {
  for (int k : parts)
    if (bits[k] != bits[parts[0]]) return false;
  return true;
}

// Shape of the one matrix the rows of `parts` (kQkvStack, kGateUpStack, or one kind) make: the
// parts' N summed, their common K.
template <typename Parts>
LinearShape stacked_shape(const ModelConfig& c, const Parts& parts, int64_t kv_heads, int64_t mlp_channels) {
  LinearShape s;
  for (int k : parts) {
    const LinearShape p = linear_shape(c, k, kv_heads, mlp_channels);
    s.N += p.N;
    s.K = p.K;
  }
  return s;
}

// Stored bytes of one linear: packed codes + fp16 scales + fp16 zeros (kernels::QLayout, group
// effective_group(K, group_size)) for bits < 16, N * K * dense_bytes for 16.
int64_t linear_stored_bytes(LinearShape s, int bits, int group_size, int dense_bytes);

// One kernel call of the forward.
struct PlanLinear {
  std::vector<int> kinds;  // the layer linears it computes, in row order ({kQ, kK, kV} when stacked)
  int64_t N = 0, K = 0;
  int bits = 16;
  int group = 0;      // effective_group(K, group_size) for bits < 16, 0 for the dense fp path
  int64_t bytes = 0;  // stored bytes (linear_stored_bytes)
};

struct LayerPlan {
  int64_t kv_heads = 0, mlp_channels = 0;  // 0: that sub-block (norm, linears, attention) is skipped
  std::vector<PlanLinear> attention;       // [q|k|v] or [q, k, v], then o; empty without KV heads
  std::vector<PlanLinear> mlp;             // [gate|up] or [gate, up], then down; empty without channels
};

struct PlanOptions {
  int dense_bytes = 4;    // bytes per weight of 16-bit linears and the embedding (fp32 4, bf16 2)
  int lm_head_bits = 16;  // export --lm-head-bits: 16 = dense (Arch::lm_head_bits, when set, wins)
};

struct ForwardPlan {
  ModelConfig base;
  std::vector<LayerPlan> layers;
  PlanLinear lm_head;               // (vocab, hidden) at lm_head_bits, last position only
  int64_t embedding_bytes = 0;      // stored table; 0 when tied to a packed lm_head (stored once)
  int64_t lm_head_bytes = 0;        // stored lm_head; 0 when it is the dense tied embedding
  int64_t norm_bytes = 0;           // every RMSNorm weight, fp32 (the export stores all of them)

  int64_t attention_bytes() const;  // stored bytes of the layers' q, k, v, o
  int64_t mlp_bytes() const;        // of gate, up, down
  int64_t linear_bytes() const { return attention_bytes() + mlp_bytes(); }
  int64_t weight_bytes() const { return embedding_bytes + lm_head_bytes + norm_bytes + linear_bytes(); }
  // Weight bytes one decoded token reads: every kept linear, the whole lm_head, one fp32 embedding
  // row and the norms (the runtime holds dense weights in fp32: plan it with dense_bytes 4).
  int64_t bytes_per_token() const;
};

// The plan of `arch` (widths and bits per layer; arch.base gives the shapes). Throws llmc::Error
// when the arch is inconsistent (arch.validate).
ForwardPlan forward_plan(const Arch& arch, const PlanOptions& opts = {});

}  // namespace llmc
