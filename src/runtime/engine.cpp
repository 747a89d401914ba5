#include "llmc/runtime/engine.h"
#include "llmc/runtime/tiled_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <string>

#include "llmc/core/error.h"
#include "llmc/model/arch.h"
#include "llmc/model/plan.h"
#include "llmc/quant/quant.h"
#include "llmc_kernels/qgemm.h"
#include "llmc_kernels/weight_memory.h"
#include "simd.h"

namespace llmc {

struct RuntimeEngine::Layer {
  const float* in_norm = nullptr;
  const float* post_norm = nullptr;
  Lin q, k, v, o, gate, up, down;
  // q/k/v (gate/up) stacked into one matrix where the forward plan (model/plan.h) stacks them:
  // one kernel call (and one thread-pool round trip) instead of three (two) per token.
  Lin qkv, gate_up;
  bool fused_qkv = false, fused_gate_up = false;
  int64_t nkv = 0, nq = 0, I = 0;
};

namespace {

template <typename T>
T* grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

const float* f32_ptr(const at::Tensor& t, std::vector<at::Tensor>& hold) {
  at::Tensor c = t.to(at::kFloat).contiguous();
  hold.push_back(c);
  return c.data_ptr<float>();
}

}  // namespace

RuntimeEngine::RuntimeEngine(const ModelConfig& c, const LlamaWeights& w, int threads)
    : c_(c), threads_(threads > 0 ? threads : std::max(1, at::get_num_threads())) {
  LLMC_CHECK(static_cast<int64_t>(w.layers.size()) == c.num_layers, "runtime: {} layers in weights, config has {}",
             w.layers.size(), c.num_layers);
  embed_ = f32_ptr(w.embed, hold_);
  final_norm_ = f32_ptr(w.final_norm, hold_);
  auto make = [&](const std::shared_ptr<Linear>& L) {
    Lin r;
    r.N = L->out_features();
    r.K = L->in_features();
    if (r.N == 0 || r.K == 0) return r;
    if (const kernels::QMatrix* q = L->packed_matrix()) {
      r.quant = true;
      r.q = q->view();
    } else {
      r.w = f32_ptr(L->dense_weight(), hold_);
    }
    return r;
  };
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const auto& L = w.layers[l];
    Layer R;
    R.in_norm = f32_ptr(L.input_norm, hold_);
    R.post_norm = f32_ptr(L.post_attn_norm, hold_);
    R.nkv = c.kv_heads(l);
    R.nq = c.q_heads(l);
    R.I = c.mlp_width(l);
    if (R.nkv > 0) {
      R.q = make(L.q);
      R.k = make(L.k);
      R.v = make(L.v);
      R.o = make(L.o);
    }
    if (R.I > 0) {
      R.gate = make(L.gate);
      R.up = make(L.up);
      R.down = make(L.down);
    }
    layers_.push_back(R);
  }
  lm_head_ = std::make_unique<Lin>(make(w.lm_head));
  PlanOptions po;
  po.lm_head_bits = w.lm_head->bits();  // dense_bytes 4: the engine holds dense weights in fp32
  plan_ = std::make_unique<ForwardPlan>(forward_plan(weights_arch(c, w, packed_group_size(w)), po));
  std::vector<CopyJob> jobs;
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& R = layers_[l];
    const LayerPlan& P = plan_->layers[l];
    // The plan's first call of a sub-block is the stacked one when it computes several linears.
    if (R.nkv > 0 && P.attention.front().kinds.size() > 1) {
      R.fused_qkv = stack({&R.q, &R.k, &R.v}, &R.qkv);
      LLMC_CHECK(R.fused_qkv, "runtime: layer {}: q/k/v have equal bits but cannot be stacked (another group?)", l);
    }
    if (R.I > 0 && P.mlp.front().kinds.size() > 1) {
      R.fused_gate_up = stack({&R.gate, &R.up}, &R.gate_up);
      LLMC_CHECK(R.fused_gate_up, "runtime: layer {}: gate/up have equal bits but cannot be stacked (another group?)",
                 l);
    }
    // Row-tiled copies of the 2/3-bit (and, on AVX-512 VNNI, 4-bit) matrices the forward runs (every
    // product reads them: faster GEMVs, 2/3 bits 1.1-1.9x by bench_qgemm M = 1, 4-bit decode 1.15-1.7x;
    // prefill at about the canonical layout's speed). RuntimeLlama then frees the canonical matrices
    // (take_copied_linears), so each is held once.
    const LayerWeights& W = w.layers[l];
    if (R.fused_qkv) {
      add_tiled(jobs, &R.qkv, {W.q.get(), W.k.get(), W.v.get()});
    } else {
      add_tiled(jobs, &R.q, {W.q.get()});
      add_tiled(jobs, &R.k, {W.k.get()});
      add_tiled(jobs, &R.v, {W.v.get()});
    }
    if (R.fused_gate_up) {
      add_tiled(jobs, &R.gate_up, {W.gate.get(), W.up.get()});
    } else {
      add_tiled(jobs, &R.gate, {W.gate.get()});
      add_tiled(jobs, &R.up, {W.up.get()});
    }
    add_tiled(jobs, &R.o, {W.o.get()});
    add_tiled(jobs, &R.down, {W.down.get()});
  }
  add_tiled(jobs, lm_head_.get(), {w.lm_head.get()});
  // The packed matrices read in their own layout (8-bit ones, the 8-bit lm_head: 28 of the 90 MB a
  // 4-bit SmolLM2 token reads) are copied into the same buffer: loaded into allocations of their own,
  // most smaller than 2 MiB, they could not be on huge pages (collapsing the whole 2 MiB pages inside
  // each put 25 of a uniform 8-bit SmolLM2's 143 MB there; its decode ran 1.1-1.2x faster with all).
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& R = layers_[l];
    const LayerWeights& W = w.layers[l];
    const std::shared_ptr<Linear>* from[] = {&W.q, &W.k, &W.v, &W.o, &W.gate, &W.up, &W.down};
    Lin* to[] = {&R.q, &R.k, &R.v, &R.o, &R.gate, &R.up, &R.down};
    for (int k = 0; k < 7; ++k) add_copy(jobs, to[k], from[k]->get());
  }
  add_copy(jobs, lm_head_.get(), w.lm_head.get());
  make_copies(jobs);
  // Stacked products of copied matrices read the copies (their parts were views of the weights').
  for (Layer& R : layers_) {
    if (R.fused_qkv && R.qkv.tiled.empty() && R.qkv.quant) R.qkv.parts = {R.q.q, R.k.q, R.v.q};
    if (R.fused_gate_up && R.gate_up.tiled.empty() && R.gate_up.quant) R.gate_up.parts = {R.gate.q, R.up.q};
  }
  // Dense (16-bit) linears and a dense lm_head (the tied embedding), fp32 tensors of their own: their
  // whole 2 MiB pages collapsed where Linux can.
  auto collapse = [this](const Lin& L) {
    if (!L.quant && L.N > 0)
      huge_bytes_ += static_cast<int64_t>(kernels::collapse_to_huge_pages(L.w, sizeof(float) * L.N * L.K));
  };
  for (const Layer& R : layers_)
    for (const Lin* L : {&R.q, &R.k, &R.v, &R.o, &R.gate, &R.up, &R.down}) collapse(*L);
  collapse(*lm_head_);
  // RoPE tables, computed as Llama::hidden_states does (float32 position * inv_freq).
  auto inv = rope_inv_freq(c);
  inv_freq_.assign(inv.data_ptr<float>(), inv.data_ptr<float>() + inv.numel());
  rt::rope_tables(inv_freq_.data(), c.head_dim / 2, c.max_position_embeddings, &cos_, &sin_);
}

RuntimeEngine::~RuntimeEngine() = default;

int RuntimeEngine::lm_head_bits() const { return lm_head_->quant ? lm_head_->q.bits : 16; }

int64_t RuntimeEngine::tiled_bytes() const {
  int64_t b = 0;
  for (const TiledCopy& t : tiled_) b += static_cast<int64_t>(t.tiled->layout().total_bytes);
  return b;
}

int64_t RuntimeEngine::bytes_per_token() const { return plan_->bytes_per_token(); }

std::unique_ptr<KVCache> RuntimeEngine::new_cache(int64_t batch, int64_t max_len) const {
  auto cache = std::make_unique<KVCache>();
  cache->max_len = max_len;
  // Uninitialized: a forward reads slots [0, len + T) only, after writing [len, len + T). (Zeroing
  // the batched caches of eval cost a memset of ~150 MB per SmolLM2 batch, and woke ATen's OpenMP
  // workers, whose spinning then competed with the kernels' threads.)
  for (int64_t l = 0; l < c_.num_layers; ++l) {
    for (auto* side : {&cache->k, &cache->v}) {
      const std::vector<int64_t> shape = {batch, c_.kv_heads(l), max_len, c_.head_dim};
      side->push_back(zero_caches_ ? at::zeros(shape, at::kFloat) : at::empty(shape, at::kFloat));
    }
  }
  return cache;
}

bool RuntimeEngine::stack(std::vector<const Lin*> parts, Lin* out) {
  const Lin& a = *parts[0];
  int64_t N = 0;
  for (const Lin* p : parts) {
    if (p->quant != a.quant || p->K != a.K || p->N == 0) return false;
    if (a.quant && (p->q.bits != a.q.bits || p->q.group != a.q.group)) return false;
    N += p->N;
  }
  out->N = N;
  out->K = a.K;
  out->quant = a.quant;
  if (a.quant) {
    // No stacked copy: qgemm_cpu_stacked reads the parts where they are (each matrix is held once;
    // a stacked copy cost the size of q/k/v and gate/up again). make_copies repoints the parts at
    // the engine's copies.
    out->parts.clear();
    for (const Lin* p : parts) out->parts.push_back(p->q);
    out->q = kernels::QMatrixView{a.q.bits, a.q.group, static_cast<int>(N), static_cast<int>(a.K), nullptr, nullptr,
                                  nullptr};
  } else {
    auto w = at::empty({N, a.K}, at::kFloat);
    int64_t row = 0;
    for (const Lin* p : parts) {
      std::copy(p->w, p->w + p->N * p->K, w.data_ptr<float>() + row * a.K);
      row += p->N;
    }
    hold_.push_back(w);
    out->w = w.data_ptr<float>();
  }
  return true;
}

bool RuntimeEngine::tiles(const Lin& L) {
  // LLMC_TILED=0 keeps the canonical layout instead: slower 2/3/4-bit decode (an A/B switch).
  static const bool enabled = [] {
    const char* e = std::getenv("LLMC_TILED");
    return e == nullptr || std::string(e) != "0";
  }();
  return enabled && L.quant && L.N > 0 && kernels::tiled_faster(L.q.bits);
}

void RuntimeEngine::add_tiled(std::vector<CopyJob>& jobs, Lin* L, std::vector<const Linear*> from) {
  if (tiles(*L)) jobs.push_back({L, std::move(from), true});
}

void RuntimeEngine::add_copy(std::vector<CopyJob>& jobs, Lin* L, const Linear* from) {
  if (L->quant && L->N > 0 && !tiles(*L)) jobs.push_back({L, {from}, false});
}

namespace {

// A canonical matrix's parts in the engine's buffer: codes, scales, zeros, each 64-byte aligned.
struct CanonicalParts {
  size_t codes = 0, scales = 0, zeros = 0, total = 0;  // offsets from the matrix's start; its bytes
};
CanonicalParts canonical_parts(const kernels::QLayout& l) {
  auto up = [](size_t b) { return (b + 63) / 64 * 64; };
  CanonicalParts p;
  p.scales = up(l.code_bytes);
  p.zeros = p.scales + up(l.scale_bytes);
  p.total = p.zeros + up(l.scale_bytes);
  return p;
}

}  // namespace

void RuntimeEngine::make_copies(std::vector<CopyJob>& jobs) {
  if (jobs.empty()) return;
  std::vector<kernels::QTiledLayout> layout(jobs.size());
  std::vector<size_t> offset;
  size_t total = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Lin* L = jobs[i].L;
    size_t bytes;
    if (jobs[i].tiled) {
      layout[i] = kernels::make_tiled_layout(L->q.bits, L->q.group, L->q.N, L->q.K);
      bytes = layout[i].total_bytes;
    } else {
      bytes = canonical_parts(L->q.layout()).total;
    }
    offset.push_back(total);
    total += (bytes + 63) / 64 * 64;
  }
  buffer_ = kernels::allocate_weight_buffer(total, &buffer_huge_);
  if (buffer_huge_) huge_bytes_ += static_cast<int64_t>(total);
  for (size_t i = 0; i < jobs.size(); ++i) {
    Lin* L = jobs[i].L;
    if (!jobs[i].tiled) {
      const kernels::QLayout l = L->q.layout();
      const CanonicalParts p = canonical_parts(l);
      uint8_t* at = buffer_.get() + offset[i];
      std::memcpy(at + p.codes, L->q.codes, l.code_bytes);
      std::memcpy(at + p.scales, L->q.scales, l.scale_bytes);
      std::memcpy(at + p.zeros, L->q.zeros, l.scale_bytes);
      L->q.codes = at + p.codes;
      L->q.scales = reinterpret_cast<const uint16_t*>(at + p.scales);
      L->q.zeros = reinterpret_cast<const uint16_t*>(at + p.zeros);
      copies_.push_back({L->q, jobs[i].from.front()});
      continue;
    }
    auto t = std::make_shared<kernels::QTiled>(kernels::QTiled::within(buffer_, offset[i], layout[i]));
    if (L->parts.empty()) {
      kernels::tile_into(L->q, t->data());
    } else {  // tiled from a stacked copy that lives only until the tiles are written
      kernels::tile_into(kernels::stacked_copy(L->parts.data(), L->parts.size()).view(), t->data());
    }
    L->tiled = t->view();
    tiled_.push_back({std::move(t), std::move(jobs[i].from)});
  }
  jobs.clear();
}

std::vector<std::pair<const Linear*, std::shared_ptr<Linear>>> RuntimeEngine::take_copied_linears() {
  std::vector<std::pair<const Linear*, std::shared_ptr<Linear>>> out;
  for (const TiledCopy& t : tiled_) {
    int row0 = 0;
    for (const Linear* f : t.from) {
      const int rows = static_cast<int>(f->out_features());
      out.emplace_back(f, std::make_shared<TiledLinear>(t.tiled, row0, rows));
      row0 += rows;
    }
  }
  for (const PackedCopy& p : copies_) out.emplace_back(p.from, std::make_shared<PackedViewLinear>(buffer_, p.view));
  if (tiled_.empty()) return out;
  // Every matrix of a tiled width has a tiled copy (its own or its stack's), and rt::linear runs any M of a
  // Lin with one through it. The engine's views of the canonical matrices are cleared, so that a use
  // this does not cover fails loudly (qgemm_cpu rejects null codes) instead of reading freed memory.
  auto drop = [](Lin& L) {
    if (!tiles(L)) return;
    L.q.codes = nullptr;
    L.q.scales = nullptr;
    L.q.zeros = nullptr;
    L.parts.clear();
  };
  for (Layer& R : layers_)
    for (Lin* L : {&R.q, &R.k, &R.v, &R.o, &R.gate, &R.up, &R.down, &R.qkv, &R.gate_up}) drop(*L);
  drop(*lm_head_);
  return out;
}

rt::OpTime* RuntimeEngine::timed(const char* group) { return profile_ ? &profile_->groups[group] : nullptr; }

void RuntimeEngine::run_linear(const Lin& L, const float* x, int64_t M, float* y) {
  rt::OpTimer timer(profile_ ? &profile_->linears[{L.N, L.K, L.quant ? L.q.bits : 16, L.quant ? L.q.group : 0}]
                             : nullptr);
  rt::linear(L, x, M, y, threads_, row_block_);
}

void RuntimeEngine::layers(const int64_t* tokens, const int64_t* positions, int64_t B, int64_t T, const bool* key_mask,
                           KVCache* cache, const int32_t* segments) {
  const auto& c = c_;
  const int64_t M = B * T, H = c.hidden_size, hd = c.head_dim;
  const int64_t past = cache ? cache->len : 0, S = past + T;
  if (cache) {
    LLMC_CHECK(S <= cache->max_len, "forward: KV cache full ({} + {} > {})", past, T, cache->max_len);
    LLMC_CHECK(static_cast<int64_t>(cache->k.size()) == c.num_layers, "runtime: KV cache has {} layers, model {}",
               cache->k.size(), c.num_layers);
  }
  int64_t maxq = 0, maxkv = 0, maxI = 0;
  for (const auto& L : layers_) {
    maxq = std::max(maxq, L.nq);
    maxkv = std::max(maxkv, L.nkv);
    maxI = std::max(maxI, L.I);
  }
  float* x = grow(x_, M * H);
  float* xn = grow(xn_, M * H);
  float* q = grow(q_, M * maxq * hd);
  float* k = grow(k_, M * maxkv * hd);
  float* v = grow(v_, M * maxkv * hd);
  float* att = grow(att_, M * maxq * hd);
  float* gt = grow(gate_, M * maxI);
  float* up = grow(up_, M * maxI);
  float* tmp = grow(tmp_, M * H);

  {
    rt::OpTimer timer(timed(rt::OpProfile::kModelFixed));
    for (int64_t m = 0; m < M; ++m) {
      LLMC_CHECK(tokens[m] >= 0 && tokens[m] < c.vocab_size, "forward: token id {} out of range [0, {})", tokens[m],
                 c.vocab_size);
      LLMC_CHECK(positions[m] >= 0, "forward: negative position {}", positions[m]);
      std::copy(embed_ + tokens[m] * H, embed_ + (tokens[m] + 1) * H, x + m * H);
    }
  }
  const int64_t P = c.max_position_embeddings;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  rt::OpTime* const t_fixed = timed(rt::OpProfile::kLayerFixed);
  rt::OpTime* const t_attn = timed(rt::OpProfile::kAttention);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const Layer& L = layers_[l];
    if (L.nkv > 0) {
      {
        rt::OpTimer timer(t_fixed);
        rt::rms_norm_rows(x, L.in_norm, M, H, c.rms_norm_eps, xn, threads_);
      }
      float* qkv = nullptr;
      if (L.fused_qkv) {
        qkv = grow(fused_, M * L.qkv.N);
        run_linear(L.qkv, xn, M, qkv);
      } else {
        run_linear(L.q, xn, M, q);
        run_linear(L.k, xn, M, k);
        run_linear(L.v, xn, M, v);
      }
      {
        rt::OpTimer timer(t_attn);
        // K/V of these rows into the cache (or a per-layer scratch without one).
        float *kb, *vb;
        int64_t max_len;
        if (cache) {
          auto& kt = cache->k[l];
          auto& vt = cache->v[l];
          LLMC_CHECK(kt.scalar_type() == at::kFloat && kt.is_contiguous() && vt.scalar_type() == at::kFloat &&
                         vt.is_contiguous() && kt.dim() == 4 && kt.size(0) == B && kt.size(1) == L.nkv &&
                         kt.size(3) == hd && kt.sizes() == vt.sizes(),
                     "runtime: KV cache of layer {} must be float32 ({}, {}, max_len, {})", l, B, L.nkv, hd);
          kb = kt.data_ptr<float>();
          vb = vt.data_ptr<float>();
          max_len = cache->max_len;
        } else {
          float* s = grow(kv_scratch_, 2 * B * maxkv * T * hd);
          kb = s;
          vb = s + B * maxkv * T * hd;
          max_len = T;
        }
        rt::AttentionInputs in;  // split (fused q|k|v), RoPE, K/V into the cache, rows on threads
        in.qkv = qkv, in.q = q, in.k = k, in.v = v;
        in.B = B, in.T = T, in.nq = L.nq, in.nkv = L.nkv, in.hd = hd;
        in.positions = positions, in.cos = cos_.data(), in.sin = sin_.data(), in.inv_freq = inv_freq_.data();
        in.max_pos = P, in.past = past, in.max_len = max_len, in.kcache = kb, in.vcache = vb;
        rt::attention_inputs(in, threads_);
        rt::AttentionArgs aa;
        aa.q = q, aa.k = kb, aa.v = vb, aa.mask = key_mask, aa.seg = segments, aa.out = att;
        aa.B = B, aa.T = T, aa.past = past, aa.nq = L.nq, aa.nkv = L.nkv, aa.hd = hd, aa.max_len = max_len;
        aa.scale = scale;
        rt::attention(aa, threads_);
      }
      run_linear(L.o, att, M, tmp);
      rt::OpTimer timer(t_fixed);
      rt::add_inplace(x, tmp, M * H, threads_);
    }
    if (L.I > 0) {
      {
        rt::OpTimer timer(t_fixed);
        rt::rms_norm_rows(x, L.post_norm, M, H, c.rms_norm_eps, xn, threads_);
      }
      if (L.fused_gate_up) {
        float* gu = grow(fused_, M * 2 * L.I);
        run_linear(L.gate_up, xn, M, gu);
        rt::OpTimer timer(t_fixed);
        rt::swiglu_fused(gu, M, L.I, gt, threads_);
      } else {
        run_linear(L.gate, xn, M, gt);
        run_linear(L.up, xn, M, up);
        rt::OpTimer timer(t_fixed);
        rt::swiglu_inplace(gt, up, M * L.I);
      }
      run_linear(L.down, gt, M, tmp);
      rt::OpTimer timer(t_fixed);
      rt::add_inplace(x, tmp, M * H, threads_);
    }
  }
  if (cache) cache->len = S;
}

void RuntimeEngine::head(int64_t row0, int64_t rows, float* logits) {
  const int64_t H = c_.hidden_size;
  float* xn = grow(xn_, rows * H);
  rt::OpTimer timer(timed(rt::OpProfile::kModelFixed));
  rt::rms_norm_rows(x_.data() + row0 * H, final_norm_, rows, H, c_.rms_norm_eps, xn, threads_);
  rt::linear(*lm_head_, xn, rows, logits, threads_, row_block_);
}

void RuntimeEngine::forward(const int64_t* tokens, const int64_t* positions, int64_t B, int64_t T,
                            const bool* key_mask, KVCache* cache, float* logits) {
  LLMC_CHECK(B >= 1 && T >= 1, "forward: empty batch");
  layers(tokens, positions, B, T, key_mask, cache);
  head(0, B * T, logits);
}

namespace {

// One block of lm_head rows -> log-probabilities: task u handles row u of the block.
struct LogprobCtx {
  float* logits;               // (rows, V), overwritten by exp()
  int64_t V;
  const int64_t* order;        // request indices sorted by row
  const int64_t* row_begin;    // requests of block row u: order[row_begin[u] .. row_begin[u + 1])
  const int64_t* targets;
  double* out;
};

void logprob_task(void* p, int u) {
  const auto& c = *static_cast<const LogprobCtx*>(p);
  float* r = c.logits + static_cast<int64_t>(u) * c.V;
  for (int64_t k = c.row_begin[u]; k < c.row_begin[u + 1]; ++k) c.out[c.order[k]] = r[c.targets[c.order[k]]];
  // Max in 8 independent lanes (the compiler vectorizes it; a single chain would not be).
  float m8[8];
  for (int k = 0; k < 8; ++k) m8[k] = r[0];
  int64_t j = 0;
  for (; j + 8 <= c.V; j += 8)
    for (int k = 0; k < 8; ++k) m8[k] = r[j + k] > m8[k] ? r[j + k] : m8[k];
  for (; j < c.V; ++j) m8[0] = r[j] > m8[0] ? r[j] : m8[0];
  float mx = m8[0];
  for (int k = 1; k < 8; ++k) mx = m8[k] > mx ? m8[k] : mx;
  // Sum of exp(x - max) in fp64 over fp32 vector partial sums of 2048 values each.
  constexpr int64_t kSeg = 2048;
  double sum = 0;
  for (int64_t s = 0; s < c.V; s += kSeg) sum += rt::simd().exp_shift_sum(r + s, mx, std::min(kSeg, c.V - s));
  const double lse = static_cast<double>(mx) + std::log(sum);
  for (int64_t k = c.row_begin[u]; k < c.row_begin[u + 1]; ++k) c.out[c.order[k]] -= lse;
}

}  // namespace

void RuntimeEngine::token_logprobs(const int64_t* tokens, const int64_t* positions, int64_t B, int64_t T,
                                   const bool* key_mask, KVCache* cache, const int64_t* rows, const int64_t* targets,
                                   int64_t n, double* out, const int32_t* segments) {
  LLMC_CHECK(B >= 1 && T >= 1, "token_logprobs: empty batch");
  const int64_t M = B * T, V = c_.vocab_size, H = c_.hidden_size;
  for (int64_t i = 0; i < n; ++i) {
    LLMC_CHECK(rows[i] >= 0 && rows[i] < M, "token_logprobs: row {} out of range [0, {})", rows[i], M);
    LLMC_CHECK(targets[i] >= 0 && targets[i] < V, "token_logprobs: target id {} out of range [0, {})", targets[i], V);
  }
  if (segments)
    for (int64_t m = 0; m < M; ++m) LLMC_CHECK(segments[m] >= 0, "token_logprobs: negative segment {}", segments[m]);
  layers(tokens, positions, B, T, key_mask, cache, segments);
  if (n == 0) return;
  // Distinct rows (ascending) and the requests of each.
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return rows[a] < rows[b]; });
  std::vector<int64_t> uniq, row_begin;
  for (int64_t k = 0; k < n; ++k) {
    if (k == 0 || rows[order[k]] != rows[order[k - 1]]) {
      uniq.push_back(rows[order[k]]);
      row_begin.push_back(k);
    }
  }
  row_begin.push_back(n);
  const int64_t U = static_cast<int64_t>(uniq.size());
  // forward() runs the lm_head on all B*T rows: on as many (>= 16) rows here, qgemm_cpu takes the
  // same path (panel vs. small-M), so the logits are the same bits. Extra rows repeat row 0.
  const int64_t Mh = std::max(U, std::min<int64_t>(16, M));
  float* xr = grow(rows_, Mh * H);
  for (int64_t u = 0; u < Mh; ++u) {
    const int64_t src = uniq[u < U ? u : 0];
    std::copy(x_.data() + src * H, x_.data() + (src + 1) * H, xr + u * H);
  }
  float* xn = grow(xn_, Mh * H);
  rt::rms_norm_rows(xr, final_norm_, Mh, H, c_.rms_norm_eps, xn, threads_);
  rt::for_row_blocks(Mh, row_block_, [&](int64_t r0, int64_t nr) {
    float* lg = grow(logits_, nr * V);
    rt::linear(*lm_head_, xn + r0 * H, nr, lg, threads_, 0);
    const int64_t real = std::min(nr, U - r0);
    if (real <= 0) return;
    LogprobCtx ctx{lg, V, order.data(), row_begin.data() + r0, targets, out};
    if (threads_ > 1 && real > 1) rt::parallel_for(threads_, static_cast<int>(real), logprob_task, &ctx);
    else
      for (int64_t u = 0; u < real; ++u) logprob_task(&ctx, static_cast<int>(u));
  });
}

const float* RuntimeEngine::decode(int64_t token, KVCache& cache) { return prefill(&token, 1, cache); }

const float* RuntimeEngine::prefill(const int64_t* tokens, int64_t n, KVCache& cache) {
  LLMC_CHECK(n >= 1, "prefill: no tokens");
  std::vector<int64_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[i] = cache.len + i;
  const int64_t S = cache.len + n;
  if (static_cast<int64_t>(ones_.size()) < S) ones_.assign(static_cast<size_t>(S), 1);
  layers(tokens, pos.data(), 1, n, reinterpret_cast<const bool*>(ones_.data()), &cache);
  float* out = grow(logits_, c_.vocab_size);
  head(n - 1, 1, out);
  return out;
}

RuntimeLlama::RuntimeLlama(ModelConfig config, LlamaWeights weights, std::shared_ptr<const Tokenizer> tokenizer,
                           int threads)
    : Llama(std::move(config), std::move(weights), std::move(tokenizer)) {
  LLMC_CHECK(dtype() == at::kFloat, "runtime: the model must be float32");
  engine_ = std::make_unique<RuntimeEngine>(Llama::config(), Llama::weights(), threads);
  hold_weights_once(*engine_, Llama::weights());
}

void hold_weights_once(RuntimeEngine& engine, LlamaWeights& w) {
  // The weights take a Linear over the engine's copy of each packed matrix, and their own
  // QuantizedLinear goes (unless another model shares it).
  const auto swaps = engine.take_copied_linears();
  if (swaps.empty()) return;
  auto swap = [&](std::shared_ptr<Linear>& lin) {
    for (const auto& [from, to] : swaps)
      if (lin.get() == from) lin = to;
  };
  for (LayerWeights& L : w.layers)
    for (int k = 0; k < kNumLinears; ++k) swap(layer_linear(L, k));
  swap(w.lm_head);
#if defined(__GLIBC__)
  // The freed canonical matrices lie between other allocations of the load; glibc keeps such
  // pages unless asked (measured on SmolLM2 uniform:2: 8 MB more resident without this).
  malloc_trim(0);
#endif
}

at::Tensor RuntimeLlama::forward(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& key_mask,
                                 KVCache* cache) {
  LLMC_CHECK(tokens.dim() == 2, "forward: tokens must be (B, T)");
  const int64_t B = tokens.size(0), T = tokens.size(1);
  const int64_t S = (cache ? cache->len : 0) + T;
  LLMC_CHECK(key_mask.dim() == 2 && key_mask.size(0) == B && key_mask.size(1) == S,
             "forward: key_mask must be (B, past+T) = ({}, {})", B, S);
  LLMC_CHECK(positions.sizes() == tokens.sizes(), "forward: positions must have the shape of tokens");
  auto tok = tokens.to(at::kLong).contiguous();
  auto pos = positions.to(at::kLong).contiguous();
  auto mask = key_mask.to(at::kBool).contiguous();
  auto logits = at::empty({B, T, config().vocab_size}, at::kFloat);
  engine_->forward(tok.data_ptr<int64_t>(), pos.data_ptr<int64_t>(), B, T, mask.data_ptr<bool>(), cache,
                   logits.data_ptr<float>());
  return logits;
}

std::vector<double> RuntimeLlama::token_logprobs(const at::Tensor& tokens, const at::Tensor& positions,
                                                 const at::Tensor& key_mask, KVCache* cache,
                                                 const std::vector<int64_t>& rows,
                                                 const std::vector<int64_t>& targets, const at::Tensor& segments) {
  LLMC_CHECK(tokens.dim() == 2, "token_logprobs: tokens must be (B, T)");
  const int64_t B = tokens.size(0), T = tokens.size(1);
  const int64_t S = (cache ? cache->len : 0) + T;
  LLMC_CHECK(key_mask.dim() == 2 && key_mask.size(0) == B && key_mask.size(1) == S,
             "token_logprobs: key_mask must be (B, past+T) = ({}, {})", B, S);
  LLMC_CHECK(positions.sizes() == tokens.sizes(), "token_logprobs: positions must have the shape of tokens");
  LLMC_CHECK(rows.size() == targets.size(), "token_logprobs: {} rows but {} targets", rows.size(), targets.size());
  auto tok = tokens.to(at::kLong).contiguous();
  auto pos = positions.to(at::kLong).contiguous();
  auto mask = key_mask.to(at::kBool).contiguous();
  at::Tensor seg;
  if (segments.defined()) {
    LLMC_CHECK(segments.sizes() == tokens.sizes(), "token_logprobs: segments must have the shape of tokens");
    seg = segments.to(at::kInt).contiguous();
  }
  std::vector<double> out(rows.size());
  engine_->token_logprobs(tok.data_ptr<int64_t>(), pos.data_ptr<int64_t>(), B, T, mask.data_ptr<bool>(), cache,
                          rows.data(), targets.data(), static_cast<int64_t>(rows.size()), out.data(),
                          seg.defined() ? seg.data_ptr<int32_t>() : nullptr);
  return out;
}

std::unique_ptr<KVCache> RuntimeLlama::new_cache(int64_t batch, int64_t max_len) const {
  return engine_->new_cache(batch, max_len);
}

std::unique_ptr<RuntimeLlama> make_runtime(const Llama& model, int threads) {
  LLMC_CHECK(model.dtype() == at::kFloat, "--engine runtime needs a float32 model");
  return std::make_unique<RuntimeLlama>(model.config(), model.weights(), borrow_tokenizer(model), threads);
}

}  // namespace llmc
