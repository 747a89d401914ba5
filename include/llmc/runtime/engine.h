#pragma once
// The lean runtime: a Llama forward over preallocated fp32 buffers with no per-op libtorch
// dispatch. Per layer: RMSNorm, q/k/v through kernels::qgemm_cpu (packed linears) or a threaded
// fp32 GEMV (16-bit linears; at::mm only for dense linears over more than 64 rows), RoPE from precomputed
// cos/sin tables, attention over the fp32 KV cache ([layer][batch][kv_head][pos][head_dim], the
// layout of KVCache tensors), o, SwiGLU, down; then the final norm and lm_head (the tied fp32
// embedding as a GEMV, or a packed lm_head).
//
// Numerics: fp32 throughout with fp32 accumulation; logits agree with the libtorch Llama over the
// same weights to ~1e-5 relative (tests use 1e-4: different summation orders).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "llmc/model/llama.h"
#include "llmc/model/plan.h"
#include "llmc/runtime/ops.h"
#include "llmc/runtime/profile.h"
#include "llmc_kernels/qformat.h"

namespace llmc {

class RuntimeEngine {
 public:
  // References the weights' storage (packed matrices, fp32 tensors): `w` must outlive the engine
  // and stay unchanged (but for the linears take_copied_linears() hands over). q/k/v and gate/up
  // that share bits and group run as one stacked product each (kernels::qgemm_cpu_stacked over the
  // engine's copies of the parts: one kernel call instead of three/two per layer; 16-bit ones are
  // copied into one fp32 matrix). threads: 0 =
  // at::get_num_threads().
  RuntimeEngine(const ModelConfig& c, const LlamaWeights& w, int threads = 0);
  ~RuntimeEngine();

  // The general forward (the CausalLM contract): tokens/positions (B, T), key_mask (B, past+T)
  // (1 = may be attended to; attention is also causal in slot order), optional cache (its k/v
  // tensors must be contiguous float32 (B, kv_heads(l), max_len, head_dim)); logits out: B*T*vocab.
  void forward(const int64_t* tokens, const int64_t* positions, int64_t B, int64_t T, const bool* key_mask,
               KVCache* cache, float* logits);
  // Batch-1 decode of one token at position cache.len (all cached slots visible). Returns the
  // engine's logits buffer (vocab floats), valid until the next call.
  const float* decode(int64_t token, KVCache& cache);
  // Batch-1 prefill of n tokens at positions cache.len.. ; logits of the last token only.
  const float* prefill(const int64_t* tokens, int64_t n, KVCache& cache);
  // The scorers' path (eval): forward()'s layers, then the final norm and lm_head on the rows
  // that are scored only, and out[i] = log_softmax(logits of flat row rows[i] = b*T + t)[targets[i]]
  // (fp64 log-sum-exp), without (B, T, vocab) logits. rows may repeat and come in any order; n = 0
  // only fills the cache. The lm_head runs on the distinct rows in blocks of row_block() rows
  // (padded to 16 rows when B*T >= 16, so the same qgemm path as forward()'s computes them): with
  // a packed lm_head each logit equals forward()'s bit for bit (a dense one may take another
  // summation order: GEMV vs. BLAS). segments (B, T) or null: branches in a row (rt::AttentionArgs::seg:
  // a token of segment s > 0 sees this call's tokens of segments 0 and s only; all segments' keys
  // stay in the cache).
  void token_logprobs(const int64_t* tokens, const int64_t* positions, int64_t B, int64_t T, const bool* key_mask,
                      KVCache* cache, const int64_t* rows, const int64_t* targets, int64_t n, double* out,
                      const int32_t* segments = nullptr);
  // Rows of x per packed-linear call (rt::linear; default rt::kLinearRowBlock); 0: one call per
  // linear, whatever M (the layout before row blocks, kept for A/B runs).
  void set_row_block(int64_t rows) { row_block_ = rows; }
  int64_t row_block() const { return row_block_; }
  // Op times of every forward while set (null: none, the default); `p` must outlive its use.
  void set_profile(rt::OpProfile* p) { profile_ = p; }
  // new_cache() zero-fills its tensors (as before; A/B runs of the old eval path).
  void set_zero_caches(bool on) { zero_caches_ = on; }

  // float32 caches; slots at or past len are uninitialized (no forward reads them).
  std::unique_ptr<KVCache> new_cache(int64_t batch, int64_t max_len) const;
  const ModelConfig& config() const { return c_; }
  // Bytes of weights one decoded token reads (linears + lm_head + one embedding row + norms).
  int64_t bytes_per_token() const;
  int lm_head_bits() const;  // 16: dense fp32 lm_head
  // Bytes of the row-tiled copies (kernels/qtiled.h: 2/3-bit matrices, 4-bit on VNNI; every product of such a
  // matrix reads its copy); 0 where qgemm_cpu has no tiled path (no AVX-512) or no matrix has such a width.
  int64_t tiled_bytes() const;
  // Whether the engine's weight buffer (the row-tiled copies and the copies of the other packed
  // matrices) is advised for huge pages (kernels/weight_memory.h).
  bool weights_on_huge_pages() const { return buffer_huge_; }
  // Bytes of weights on huge pages: the engine's weight buffer where advised, plus the whole 2 MiB
  // pages of dense (16-bit) linears that Linux collapsed (kernels::collapse_to_huge_pages).
  int64_t huge_page_bytes() const { return huge_bytes_; }
  // For each packed linear of the weights, a Linear over the engine's copy of it: a TiledLinear
  // (runtime/tiled_linear.h) where the engine computes from a row-tiled copy, a PackedViewLinear
  // over its canonical copy otherwise. RuntimeLlama swaps them into its weights, so the weights'
  // own matrices can be freed (each matrix is then held once). The engine never reads those
  // matrices again (its views of the tiled ones' canonical data are cleared here).
  std::vector<std::pair<const Linear*, std::shared_ptr<Linear>>> take_copied_linears();
  using Lin = rt::LinearOp;  // one linear (packed view or dense fp32)

 private:
  void run_linear(const Lin& L, const float* x, int64_t M, float* y);  // timed by shape and bits
  rt::OpTime* timed(const char* group);  // the profile's entry (null without a profile)
  bool stack(std::vector<const Lin*> parts, Lin* out);
  // The engine's copies of the packed matrices, all in one buffer on huge pages
  // (kernels::allocate_weight_buffer): a row-tiled copy of L where qgemm_cpu has a faster path for
  // it (tiles(); `from`: the weights' linears L computes, several when stacked by rows), else a copy
  // in the canonical layout (`from`: the one linear). Recorded by add_tiled / add_copy, written by
  // make_copies, which points L at its copy.
  struct CopyJob {
    Lin* L;
    std::vector<const Linear*> from;
    bool tiled;
  };
  static bool tiles(const Lin& L);
  void add_tiled(std::vector<CopyJob>& jobs, Lin* L, std::vector<const Linear*> from);
  void add_copy(std::vector<CopyJob>& jobs, Lin* L, const Linear* from);
  void make_copies(std::vector<CopyJob>& jobs);
  void layers(const int64_t* tokens, const int64_t* positions, int64_t B, int64_t T, const bool* key_mask,
              KVCache* cache, const int32_t* segments = nullptr);
  void head(int64_t rows_from, int64_t rows, float* logits);

  ModelConfig c_;
  int threads_;
  int64_t row_block_ = rt::kLinearRowBlock;
  bool zero_caches_ = false;
  rt::OpProfile* profile_ = nullptr;
  std::unique_ptr<ForwardPlan> plan_;  // what the forward runs (model/plan.h)
  const float* embed_ = nullptr;
  const float* final_norm_ = nullptr;
  struct Layer;
  std::vector<Layer> layers_;
  std::unique_ptr<Lin> lm_head_;
  std::vector<at::Tensor> hold_;  // fp32 copies made at construction
  struct TiledCopy {
    std::shared_ptr<const kernels::QTiled> tiled;
    std::vector<const Linear*> from;  // the weights' linears it holds, stacked by rows in order
  };
  struct PackedCopy {
    kernels::QMatrixView view;  // in buffer_
    const Linear* from;         // the weights' linear it copies
  };
  std::shared_ptr<uint8_t> buffer_;  // the copies below (make_copies)
  std::vector<TiledCopy> tiled_;     // row-tiled copies
  std::vector<PackedCopy> copies_;   // canonical copies of the other packed matrices
  bool buffer_huge_ = false;         // whether buffer_ was advised for huge pages
  int64_t huge_bytes_ = 0;           // huge_page_bytes()
  std::vector<float> cos_, sin_;  // [max_position_embeddings][head_dim/2]
  std::vector<float> inv_freq_;
  // Scratch, grown on demand.
  std::vector<float> fused_, x_, xn_, q_, k_, v_, att_, gate_, up_, tmp_, logits_, kv_scratch_, rows_;
  std::vector<uint8_t> ones_;
};

// A Llama whose forward() runs the RuntimeEngine (weights(), hidden_states() and the libtorch
// forward via Llama::forward stay available). Exported folders load as this.
class RuntimeLlama : public Llama {
 public:
  RuntimeLlama(ModelConfig config, LlamaWeights weights, std::shared_ptr<const Tokenizer> tokenizer, int threads = 0);
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& key_mask,
                     KVCache* cache) override;
  using Llama::forward;
  std::unique_ptr<KVCache> new_cache(int64_t batch, int64_t max_len) const override;
  // RuntimeEngine::token_logprobs with forward()'s tensor arguments and checks: one value per
  // (rows[i], targets[i]), rows flat b*T + t; segments: (B, T) integers >= 0, or undefined (none).
  std::vector<double> token_logprobs(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& key_mask,
                                     KVCache* cache, const std::vector<int64_t>& rows,
                                     const std::vector<int64_t>& targets, const at::Tensor& segments = {});
  RuntimeEngine& engine() { return *engine_; }

 private:
  std::unique_ptr<RuntimeEngine> engine_;
};

// Swaps the packed linears of `w` (the weights `engine` was built over) for the engine's copies
// (RuntimeEngine::take_copied_linears), so that each matrix is held once.
void hold_weights_once(RuntimeEngine& engine, LlamaWeights& w);

// A RuntimeLlama over a float32 Llama's weights (shared, not copied) and tokenizer: `model` must
// outlive the result.
std::unique_ptr<RuntimeLlama> make_runtime(const Llama& model, int threads = 0);

}  // namespace llmc
