#pragma once
// The runtime engine's building blocks, on raw fp32 buffers (torch-free header). The engine's
// forward is a sequence of these calls, and `llmcompress lut` times the very same functions, so a
// latency table predicts what the runtime does (same kernels, same threading thresholds, same
// fused q/k/v and gate/up matrices).
#include <cstdint>
#include <vector>

#include "llmc_kernels/qformat.h"
#include "llmc_kernels/qtiled.h"

namespace llmc::rt {

// One linear y = x W^T as the runtime stores it: a packed matrix (kernels::qgemm_cpu) or dense
// fp32 rows W (N, K). A 2/3/4-bit matrix may also have a row-tiled copy (kernels/qtiled.h), which
// qgemm_cpu reads instead at small M on AVX-512 CPUs (bench_qgemm, M = 1: 1.1-1.9x faster GEMVs).
// A packed linear may also be several matrices stacked by rows (the engine's q/k/v and gate/up):
// `parts` then holds them (same bits, group, K) and kernels::qgemm_cpu_stacked computes the stacked
// product from them, so no stacked copy is made; `q` keeps bits, group, N and K only (no data).
struct LinearOp {
  int64_t N = 0, K = 0;
  bool quant = false;
  kernels::QMatrixView q;
  std::vector<kernels::QMatrixView> parts;  // non-empty: the matrix is these, stacked by rows
  kernels::QTiledView tiled;  // empty: none
  const float* w = nullptr;  // dense (N, K) fp32
};

// Rows of x per qgemm_cpu call for long products (prefill, eval windows). The panel kernel sweeps
// all M rows of x^T (256 columns x M int16) per 4-row weight panel: past ~512 rows that slice
// leaves L2 and each panel re-reads it from L3. Row blocks of 256 keep it L2-resident; on the
// 2-vCPU AMD EPYC AVX2 VM, 2 threads, 4-bit K = 576, N = 3072, M = 4096: 287 ms as one call,
// 188 ms in blocks of 256 (1.5x; also 1.3-1.6x on N = 576 x K = 1536 and the 8-bit lm_head).
// Results are unchanged: every row's result depends on that row alone, and every block has
// >= 128 rows, so the same (panel) path runs.
constexpr int64_t kLinearRowBlock = 256;

// y (M, N) = x (M, K) W^T. Packed: qgemm_cpu (one thread for tiny products, where a thread-pool
// round trip costs more than the work), in near-equal blocks of at most row_block rows when
// M > row_block (0: one call). Dense: a threaded SIMD GEMV up to 64 rows, at::mm above.
void linear(const LinearOp& L, const float* x, int64_t M, float* y, int threads,
            int64_t row_block = kLinearRowBlock);

// Calls fn(row0, rows) over [0, M) in near-equal blocks of at most `block` rows (one block when
// M <= block or block <= 0); every block has at least block / 2 rows when M > block.
template <typename F>
void for_row_blocks(int64_t M, int64_t block, F&& fn) {
  if (block <= 0 || M <= block) {
    fn(int64_t{0}, M);
    return;
  }
  const int64_t nb = (M + block - 1) / block, base = M / nb, extra = M % nb;
  int64_t r0 = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t n = base + (b < extra ? 1 : 0);
    fn(r0, n);
    r0 += n;
  }
}

// y = w * x / rms(x) per row of H values (fp64 sum of squares, as the reference model). With
// `threads`: rows split over the kernels' pool where the work is large enough (the same bits: rows
// are independent); the elementwise ops below likewise.
void rms_norm_rows(const float* x, const float* w, int64_t M, int64_t H, double eps, float* y);
void rms_norm_rows(const float* x, const float* w, int64_t M, int64_t H, double eps, float* y, int threads);

// cos/sin tables [positions][half] of p * inv_freq[i] (float32 product, as the reference model).
void rope_tables(const float* inv_freq, int64_t half, int64_t positions, std::vector<float>* cos,
                 std::vector<float>* sin);

// Rotate-half RoPE in place on rows (M, nheads, hd). cos/sin: [max_pos][hd/2] tables; positions at
// or past max_pos are computed from inv_freq (hd/2 values).
void rope_rows(float* x, int64_t M, int64_t nheads, int64_t hd, const int64_t* positions, const float* cos,
               const float* sin, int64_t max_pos, const float* inv_freq);

// Splits fused q|k|v rows (M, (nq + 2 nkv) * hd) into q (M, nq*hd), k and v (M, nkv*hd).
void split_qkv(const float* qkv, int64_t M, int64_t nq, int64_t nkv, int64_t hd, float* q, float* k, float* v);

// Appends k/v rows (B*T, nkv, hd) at slots [past, past+T) of caches (B, nkv, max_len, hd).
void kv_append(const float* k, const float* v, int64_t B, int64_t T, int64_t nkv, int64_t hd, int64_t past,
               int64_t max_len, float* kcache, float* vcache);

// The attention's inputs for rows (B*T): fused q|k|v rows split (when qkv is set; else q, k, v
// hold them already), RoPE on q and k, k/v appended to the caches: split_qkv, rope_rows and
// kv_append in turn per block of rows, the blocks on threads (rows_on_threads: the same bits). The
// engine and the LUT's attention entries run it (serial before: at 2 threads a prefill's second
// thread waited through these copies in every layer).
struct AttentionInputs {
  const float* qkv = nullptr;  // (B*T, (nq + 2 nkv) hd) or null
  float *q = nullptr, *k = nullptr, *v = nullptr;  // (B*T, nq hd), (B*T, nkv hd) x 2
  int64_t B = 1, T = 1, nq = 0, nkv = 0, hd = 0;
  const int64_t* positions = nullptr;  // (B*T)
  const float *cos = nullptr, *sin = nullptr, *inv_freq = nullptr;  // rope_rows' tables
  int64_t max_pos = 0;
  int64_t past = 0, max_len = 0;  // kv_append's slots
  float *kcache = nullptr, *vcache = nullptr;
};
void attention_inputs(const AttentionInputs& a, int threads = 1);

// Causal attention of T new query rows per batch row over S = past + T cached slots.
struct AttentionArgs {
  const float* q = nullptr;      // (B*T, nq*hd), RoPE applied
  const float* k = nullptr;      // cache (B, nkv, max_len, hd)
  const float* v = nullptr;
  const bool* mask = nullptr;    // (B, S): 1 = may be attended to
  // (B, T) or null: the segment of each of this call's tokens. Among this call's keys a query of
  // segment s sees only those of segment 0 and s (causal as ever): branches off a shared trunk, e.g.
  // several continuations of one context in one row. Cached keys (slots < past): the mask alone.
  const int32_t* seg = nullptr;
  float* out = nullptr;          // (B*T, nq*hd)
  int64_t B = 1, T = 1, past = 0, nq = 0, nkv = 0, hd = 0, max_len = 0;
  float scale = 1.f;
};
void attention(const AttentionArgs& a, int threads);

// gate_up rows (M, 2I) = [gate | up] -> out (M, I) = silu(gate) * up.
void swiglu_fused(const float* gate_up, int64_t M, int64_t I, float* out, int threads = 1);
// gate (M, I) <- silu(gate) * up.
void swiglu_inplace(float* gate, const float* up, int64_t n);

void add_inplace(float* x, const float* y, int64_t n, int threads = 1);  // x += y

}  // namespace llmc::rt
