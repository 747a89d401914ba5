#include "llmc/model/plan.h"

#include "llmc/core/error.h"
#include "llmc_kernels/qformat.h"

namespace llmc {

LinearShape linear_shape(const ModelConfig& c, int kind, int64_t kv_heads, int64_t mlp_channels) {
  const int64_t H = c.hidden_size, hd = c.head_dim, g = c.num_heads / c.num_kv_heads;
  switch (kind) {
    case kQ: return {kv_heads * g * hd, H};
    case kK:
    case kV: return {kv_heads * hd, H};
    case kO: return {H, kv_heads * g * hd};
    case kGate:
    case kUp: return {mlp_channels, H};
    case kDown: return {H, mlp_channels};
    default: fail("linear_shape: bad linear kind {}", kind);
  }
}

int64_t linear_stored_bytes(LinearShape s, int bits, int group_size, int dense_bytes) {
  if (s.N == 0 || s.K == 0) return 0;
  if (bits == 16) return s.N * s.K * dense_bytes;
  const int group = effective_group(static_cast<int>(s.K), group_size);
  return static_cast<int64_t>(
      kernels::QLayout::of(bits, group, static_cast<int>(s.N), static_cast<int>(s.K)).total_bytes());
}

namespace {

PlanLinear call_of(const ModelConfig& c, std::vector<int> kinds, int64_t h, int64_t w, int bits, int group_size,
                   int dense_bytes) {
  PlanLinear p;
  p.kinds = std::move(kinds);
  p.bits = bits;
  const LinearShape s = stacked_shape(c, p.kinds, h, w);
  p.N = s.N;
  p.K = s.K;
  // Bytes per part: each part is packed (and padded) on its own before the runtime stacks them.
  for (int k : p.kinds) p.bytes += linear_stored_bytes(linear_shape(c, k, h, w), bits, group_size, dense_bytes);
  p.group = bits == 16 ? 0 : effective_group(static_cast<int>(p.K), group_size);
  return p;
}

// The calls of one stack: one stacked call when the bits agree, else one call per part.
template <size_t n>
void add_stack(std::vector<PlanLinear>& out, const ModelConfig& c, const LayerArch& la, const std::array<int, n>& parts,
               int group_size, int dense_bytes) {
  if (stacked(la.bits, parts)) {
    out.push_back(call_of(c, {parts.begin(), parts.end()}, la.kv_heads, la.mlp_channels, la.bits[parts[0]],
                          group_size, dense_bytes));
    return;
  }
  for (int k : parts)
    out.push_back(call_of(c, {k}, la.kv_heads, la.mlp_channels, la.bits[k], group_size, dense_bytes));
}

int64_t sum_bytes(const std::vector<LayerPlan>& layers, bool attention) {
  int64_t b = 0;
  for (const auto& L : layers)
    for (const auto& p : attention ? L.attention : L.mlp) b += p.bytes;
  return b;
}

}  // namespace

int64_t ForwardPlan::attention_bytes() const { return sum_bytes(layers, true); }
int64_t ForwardPlan::mlp_bytes() const { return sum_bytes(layers, false); }

int64_t ForwardPlan::bytes_per_token() const {
  // The lm_head GEMV reads its whole matrix (the embedding table itself when tied and dense); the
  // embedding lookup one fp32 row.
  return linear_bytes() + lm_head.bytes + base.hidden_size * 4 + norm_bytes;
}

ForwardPlan forward_plan(const Arch& arch, const PlanOptions& o) {
  arch.validate("arch");
  LLMC_CHECK(o.dense_bytes == 4 || o.dense_bytes == 2, "forward_plan: dense_bytes {} (4 or 2)", o.dense_bytes);
  LLMC_CHECK(valid_lm_head_bits(o.lm_head_bits), "forward_plan: lm_head_bits {} (16, 8 or 4)", o.lm_head_bits);
  const ModelConfig& c = arch.base;
  ForwardPlan p;
  p.base = c;
  for (const LayerArch& la : arch.layers) {
    LayerPlan L;
    L.kv_heads = la.kv_heads;
    L.mlp_channels = la.mlp_channels;
    if (la.kv_heads > 0) {
      add_stack(L.attention, c, la, kQkvStack, arch.group_size, o.dense_bytes);
      L.attention.push_back(call_of(c, {kO}, la.kv_heads, la.mlp_channels, la.bits[kO], arch.group_size, o.dense_bytes));
    }
    if (la.mlp_channels > 0) {
      add_stack(L.mlp, c, la, kGateUpStack, arch.group_size, o.dense_bytes);
      L.mlp.push_back(call_of(c, {kDown}, la.kv_heads, la.mlp_channels, la.bits[kDown], arch.group_size, o.dense_bytes));
    }
    p.layers.push_back(std::move(L));
  }
  const int64_t V = c.vocab_size, H = c.hidden_size;
  p.lm_head.N = V;
  p.lm_head.K = H;
  const int head_bits = arch.lm_head_bits ? arch.lm_head_bits : o.lm_head_bits;  // the arch's choice first
  p.lm_head.bits = head_bits;
  p.lm_head.group = head_bits == 16 ? 0 : effective_group(static_cast<int>(H), arch.group_size);
  p.lm_head.bytes = linear_stored_bytes({V, H}, head_bits, arch.group_size, o.dense_bytes);
  const bool packed_head = head_bits < 16;
  // A tied embedding with a packed lm_head is stored once, as the lm_head (export/format.cpp).
  p.embedding_bytes = packed_head && c.tie_word_embeddings ? 0 : V * H * o.dense_bytes;
  p.lm_head_bytes = packed_head || !c.tie_word_embeddings ? p.lm_head.bytes : 0;
  p.norm_bytes = (2 * c.num_layers + 1) * H * 4;
  return p;
}

}  // namespace llmc
