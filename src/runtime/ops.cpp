// The runtime's building blocks (see ops.h). Engine and LUT both call these.
#include "llmc/runtime/ops.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>
#include <vector>

#include "llmc/core/error.h"
#include "llmc_kernels/qgemm.h"
#include "simd.h"

namespace llmc::rt {

namespace {

struct GemvCtx {
  const float* W;
  const float* x;
  float* y;
  int64_t M, N, K, rows_per_task;
};

void gemv_task(void* p, int t) {
  const auto& c = *static_cast<const GemvCtx*>(p);
  const int64_t r0 = t * c.rows_per_task, r1 = std::min(c.N, r0 + c.rows_per_task);
  for (int64_t m = 0; m < c.M; ++m) simd().gemv(c.W + r0 * c.K, c.x + m * c.K, r1 - r0, c.K, c.y + m * c.N + r0);
}

// One (batch row b, KV head h), queries [t0, t1): their g query heads over the same cached
// key/value rows, up to Simd::kMaxHeads vectors at a time in one pass over the rows. Per vector: scores = K q (a GEMV),
// softmax with a vector exp, out = P V (register accumulators over the rows). Prefill takes two
// queries per pass where their 2g heads fit one heads call, so each key and value row is read half
// as often (at 2048-token windows attention was half of an eval's time); the first query's score of
// the second's own key is computed and not used, its probability there set to 0, so every output
// gets the one-query pass's bits (for finite values). t0 is even, so a chunk's passes take the
// queries in the pairs a whole-row call takes, and the outputs keep their bits.
void attn_queries(const AttentionArgs& c, int64_t b, int64_t h, int64_t t0, int64_t t1) {
  const auto& s = simd();
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t g = c.nq / c.nkv, S = c.past + c.T;
  thread_local std::vector<float> scratch;  // the scores [Q g][S]
  if (scratch.size() < static_cast<size_t>(2 * g * S)) scratch.resize(static_cast<size_t>(2 * g * S));
  float* sc = scratch.data();
  const float* K = c.k + (b * c.nkv + h) * c.max_len * c.hd;
  const float* V = c.v + (b * c.nkv + h) * c.max_len * c.hd;
  const bool* mk = c.mask + b * S;
  const int64_t Q = c.T > 1 && 2 * g <= Simd::kMaxHeads ? 2 : 1;  // queries per pass
  thread_local std::vector<float> xs, os;  // a pair's query heads gathered and their outputs
  // With segments: the mask of query u of a pass (u < 2), rebuilt when its segment changes (a
  // segment's queries are contiguous in a row): mk and, past the cache, the keys of segment 0 and
  // the query's own.
  thread_local std::unique_ptr<bool[]> segmask[2];
  thread_local int64_t segmask_len[2] = {0, 0};
  int32_t built[2] = {-1, -1};
  const int32_t* sg = c.seg ? c.seg + b * c.T : nullptr;
  auto mask_of = [&](int64_t query, int u) -> const bool* {
    if (sg == nullptr) return mk;
    const int32_t own = sg[query];
    if (built[u] == own) return segmask[u].get();
    if (segmask_len[u] < S) {
      segmask[u] = std::make_unique<bool[]>(static_cast<size_t>(S));
      segmask_len[u] = S;
    }
    bool* m = segmask[u].get();
    for (int64_t j = 0; j < c.past; ++j) m[j] = mk[j];
    for (int64_t j = 0; j < c.T; ++j) m[c.past + j] = mk[c.past + j] && (sg[j] == 0 || sg[j] == own);
    built[u] = own;
    return m;
  };
  for (int64_t t = t0; t < t1; t += Q) {
    const int64_t nqp = std::min(Q, t1 - t), nv = nqp * g;  // queries and vectors of this pass
    const int64_t rows = c.past + t + nqp;                   // keys in reach of its last query
    // Vector v = u g + i is head h g + i of query t + u; one query's g heads are contiguous.
    const float* X = c.q + ((b * c.T + t) * c.nq + h * g) * c.hd;
    float* O = c.out + ((b * c.T + t) * c.nq + h * g) * c.hd;
    if (nqp > 1) {
      xs.resize(static_cast<size_t>(nv * c.hd));
      os.resize(static_cast<size_t>(nv * c.hd));
      for (int64_t u = 0; u < nqp; ++u) std::copy_n(X + u * c.nq * c.hd, g * c.hd, xs.data() + u * g * c.hd);
      X = xs.data();
      O = os.data();
    }
    for (int64_t v0 = 0; v0 < nv; v0 += Simd::kMaxHeads) {
      const int nh = static_cast<int>(std::min<int64_t>(Simd::kMaxHeads, nv - v0));
      // Scores of all keys in reach (a GEMV over the cached key rows per vector), then masking.
      s.gemv_heads(K, X + v0 * c.hd, c.hd, nh, rows, c.hd, sc + v0 * S, S);
      float inv[Simd::kMaxHeads];
      bool none[Simd::kMaxHeads];  // no visible key (a padding query): output 0
      for (int i = 0; i < nh; ++i) {
        const int64_t v = v0 + i, n = c.past + t + v / g + 1;  // keys in reach of this vector's query
        float* r = sc + v * S;
        const bool* mq = mask_of(t + v / g, static_cast<int>(v / g));  // this vector's query's keys
        const float mx = s.mask_scale_max(r, mq, c.scale, n);            // NaN if a score is NaN (Simd)
        none[i] = mx == kNegInf;
        inv[i] = none[i] ? 0.f : 1.f / s.exp_shift_sum(r, mx, n);  // masked keys: exp(-inf) = 0
        if (n < rows) r[n] = 0.f;  // the next query's own key: no weight
      }
      s.wsum_heads(V, c.hd, sc + v0 * S, S, nh, rows, c.hd, O + v0 * c.hd, c.hd);
      for (int i = 0; i < nh; ++i) {
        const int64_t v = v0 + i;
        float* o = c.out + ((b * c.T + t + v / g) * c.nq + h * g + v % g) * c.hd;
        const float* src = O + v * c.hd;  // o itself for one query
        if (none[i]) std::fill(o, o + c.hd, 0.f);
        else
          for (int64_t d = 0; d < c.hd; ++d) o[d] = src[d] * inv[i];
      }
    }
  }
}

// The (row, KV head) pairs, each in query chunks where too few pairs would leave threads idle (a
// prefill of one sequence has 3 on SmolLM2: 2 threads did 2 and 1). Chunk c of a pair is task
// pair * nch + c; the later chunks (more keys in reach) go first.
struct AttnJob {
  const AttentionArgs* a;
  int64_t chunk, nch;
};

void attn_task(void* p, int task) {
  const auto& j = *static_cast<const AttnJob*>(p);
  const AttentionArgs& c = *j.a;
  const int64_t pair = task / j.nch, ch = j.nch - 1 - task % j.nch;
  const int64_t t0 = ch * j.chunk, t1 = std::min(c.T, t0 + j.chunk);
  attn_queries(c, pair / c.nkv, pair % c.nkv, t0, t1);
}

}  // namespace

void linear(const LinearOp& L, const float* x, int64_t M, float* y, int threads, int64_t row_block) {
  if (L.quant) {
    try {
      // Tiny products are faster on the calling thread alone than after a thread-pool round trip.
      const int th = L.N * L.K * M < (1 << 16) ? 1 : threads;
      for_row_blocks(M, row_block, [&](int64_t r0, int64_t n) {
        const float* xb = x + r0 * L.K;
        float* yb = y + r0 * L.N;
        const int m = static_cast<int>(n);
        if (!L.tiled.empty()) {  // made only where kernels::tiled_faster()
          // Any M: the x-table kernel below 16 rows, the panel kernel on the tiled copy above (the
          // same bits as on the canonical matrix), so the runtime needs no canonical copy.
          kernels::qgemm_tiled_cpu(xb, m, L.tiled, nullptr, yb, th);
        } else if (L.parts.empty()) {
          kernels::qgemm_cpu(xb, m, L.q, nullptr, yb, th);
        } else {
          kernels::qgemm_cpu_stacked(xb, m, L.parts.data(), static_cast<int>(L.parts.size()), nullptr, yb, th);
        }
      });
    } catch (const std::invalid_argument& e) {
      fail("runtime: {}", e.what());
    }
    return;
  }
  if (M > 64) {  // long prefill of a dense linear: one BLAS call
    auto xt = at::from_blob(const_cast<float*>(x), {M, L.K}, at::kFloat);
    auto wt = at::from_blob(const_cast<float*>(L.w), {L.N, L.K}, at::kFloat);
    auto yt = at::from_blob(y, {M, L.N}, at::kFloat);
    at::mm_out(yt, xt, wt.t());
    return;
  }
  GemvCtx ctx{L.w, x, y, M, L.N, L.K, 0};
  const int64_t work = L.N * L.K * M;
  if (threads <= 1 || work < (1 << 16)) {
    ctx.rows_per_task = L.N;
    gemv_task(&ctx, 0);
    return;
  }
  int64_t per = (L.N + 4 * threads - 1) / (4 * threads);
  // Several rows of x: blocks of W small enough to stay in L2 while every row of x passes over them.
  if (M > 1) per = std::min<int64_t>(per, std::max<int64_t>(4, (1 << 17) / (4 * L.K)));
  per = std::max<int64_t>(M > 1 ? 4 : 16, (per + 3) / 4 * 4);
  ctx.rows_per_task = per;
  parallel_for(threads, static_cast<int>((L.N + per - 1) / per), gemv_task, &ctx);
}

namespace {
// f(m0, m1) over rows [0, M) in `threads` equal parts on the kernels' pool, or on the calling thread
// for small work (rows * cols below 2^14: a pool round trip costs more than it saves).
template <class F>
void rows_on_threads(int64_t M, int64_t cols, int threads, F&& f) {
  if (threads <= 1 || M < 2 || M * cols < (1 << 14)) {
    f(int64_t{0}, M);
    return;
  }
  struct Ctx {
    F* f;
    int64_t M;
    int n;
  } c{&f, M, static_cast<int>(std::min<int64_t>(threads, M))};
  parallel_for(threads, c.n, [](void* v, int t) {
    const Ctx& c = *static_cast<const Ctx*>(v);
    (*c.f)(c.M * t / c.n, c.M * (t + 1) / c.n);
  }, &c);
}
}  // namespace

void rms_norm_rows(const float* x, const float* w, int64_t M, int64_t H, double eps, float* y, int threads) {
  rows_on_threads(M, H, threads, [&](int64_t m0, int64_t m1) { rms_norm_rows(x + m0 * H, w, m1 - m0, H, eps, y + m0 * H); });
}

void rms_norm_rows(const float* x, const float* w, int64_t M, int64_t H, double eps, float* y) {
  constexpr int64_t kRows = 64;  // sums of squares a batch of rows at a time (simd().sumsq_rows)
  double ssb[kRows];
  for (int64_t m = 0; m < M; ++m) {
    if (m % kRows == 0) simd().sumsq_rows(x + m * H, H, std::min(kRows, M - m), H, ssb);
    const float* xr = x + m * H;
    const double ss = ssb[m % kRows];
    const float r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(H) + eps));
    float* yr = y + m * H;
    for (int64_t i = 0; i < H; ++i) yr[i] = w[i] * (xr[i] * r);
  }
}

void rope_tables(const float* inv_freq, int64_t half, int64_t positions, std::vector<float>* cos,
                 std::vector<float>* sin) {
  cos->resize(static_cast<size_t>(positions * half));
  sin->resize(static_cast<size_t>(positions * half));
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const float f = static_cast<float>(p) * inv_freq[i];
      (*cos)[p * half + i] = std::cos(f);
      (*sin)[p * half + i] = std::sin(f);
    }
}

void rope_rows(float* x, int64_t M, int64_t nheads, int64_t hd, const int64_t* positions, const float* cos,
               const float* sin, int64_t max_pos, const float* inv_freq) {
  const int64_t half = hd / 2;
  std::vector<float> cb, sb;
  for (int64_t m = 0; m < M; ++m) {
    const int64_t p = positions[m];
    const float *cs, *sn;
    if (p < max_pos) {
      cs = cos + p * half;
      sn = sin + p * half;
    } else {
      cb.resize(half);
      sb.resize(half);
      for (int64_t i = 0; i < half; ++i) {
        const float f = static_cast<float>(p) * inv_freq[i];
        cb[i] = std::cos(f);
        sb[i] = std::sin(f);
      }
      cs = cb.data();
      sn = sb.data();
    }
    for (int64_t h = 0; h < nheads; ++h) {
      float* r = x + (m * nheads + h) * hd;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = r[i], x2 = r[i + half];
        r[i] = x1 * cs[i] - x2 * sn[i];
        r[i + half] = x2 * cs[i] + x1 * sn[i];
      }
    }
  }
}

void split_qkv(const float* qkv, int64_t M, int64_t nq, int64_t nkv, int64_t hd, float* q, float* k, float* v) {
  const int64_t nqd = nq * hd, nkd = nkv * hd, row = nqd + 2 * nkd;
  for (int64_t m = 0; m < M; ++m) {
    const float* r = qkv + m * row;
    std::copy(r, r + nqd, q + m * nqd);
    std::copy(r + nqd, r + nqd + nkd, k + m * nkd);
    std::copy(r + nqd + nkd, r + row, v + m * nkd);
  }
}

namespace {
// kv_append for flat rows [m0, m1) of (B*T): row m = b T + t.
void kv_append_rows(const float* k, const float* v, int64_t T, int64_t nkv, int64_t hd, int64_t past,
                    int64_t max_len, float* kcache, float* vcache, int64_t m0, int64_t m1) {
  for (int64_t m = m0; m < m1; ++m) {
    const int64_t b = m / T, t = m % T;
    for (int64_t h = 0; h < nkv; ++h) {
      const int64_t src = (m * nkv + h) * hd;
      const int64_t dst = ((b * nkv + h) * max_len + past + t) * hd;
      std::copy(k + src, k + src + hd, kcache + dst);
      std::copy(v + src, v + src + hd, vcache + dst);
    }
  }
}
}  // namespace

void kv_append(const float* k, const float* v, int64_t B, int64_t T, int64_t nkv, int64_t hd, int64_t past,
               int64_t max_len, float* kcache, float* vcache) {
  kv_append_rows(k, v, T, nkv, hd, past, max_len, kcache, vcache, 0, B * T);
}

void attention_inputs(const AttentionInputs& a, int threads) {
  const int64_t M = a.B * a.T, nqd = a.nq * a.hd, nkd = a.nkv * a.hd;
  rows_on_threads(M, nqd + 2 * nkd, threads, [&](int64_t m0, int64_t m1) {
    const int64_t n = m1 - m0;
    if (a.qkv) split_qkv(a.qkv + m0 * (nqd + 2 * nkd), n, a.nq, a.nkv, a.hd, a.q + m0 * nqd, a.k + m0 * nkd, a.v + m0 * nkd);
    rope_rows(a.q + m0 * nqd, n, a.nq, a.hd, a.positions + m0, a.cos, a.sin, a.max_pos, a.inv_freq);
    rope_rows(a.k + m0 * nkd, n, a.nkv, a.hd, a.positions + m0, a.cos, a.sin, a.max_pos, a.inv_freq);
    kv_append_rows(a.k, a.v, a.T, a.nkv, a.hd, a.past, a.max_len, a.kcache, a.vcache, m0, m1);
  });
}

void attention(const AttentionArgs& a, int threads) {
  const int64_t pairs = a.B * a.nkv, S = a.past + a.T;
  const bool par = threads > 1 && a.T * S * a.nq * a.B * a.hd > (1 << 15);
  AttnJob j{&a, a.T, 1};
  if (par && a.T > 1 && pairs < 4 * threads) {
    const int64_t want = (4 * threads + pairs - 1) / pairs;  // chunks per pair
    j.chunk = std::max<int64_t>(2, (a.T + want - 1) / want);
    j.chunk += j.chunk & 1;  // even: see attn_queries
    j.nch = (a.T + j.chunk - 1) / j.chunk;
  }
  const int ntasks = static_cast<int>(pairs * j.nch);
  if (par && ntasks > 1) {
    parallel_for(threads, ntasks, attn_task, &j);
  } else {
    for (int t = 0; t < ntasks; ++t) attn_task(&j, t);
  }
}

void swiglu_fused(const float* gate_up, int64_t M, int64_t I, float* out, int threads) {
  rows_on_threads(M, I, threads, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const float* g = gate_up + m * 2 * I;
      const float* u = g + I;
      float* o = out + m * I;
      simd().silu_mul(g, u, o, I);
    }
  });
}

void swiglu_inplace(float* gate, const float* up, int64_t n) {
  simd().silu_mul(gate, up, gate, n);
}

void add_inplace(float* x, const float* y, int64_t n, int threads) {
  // In blocks of 4096 values (the rows of the parallel split); x + 1 * y is x + y exactly, so the
  // vector axpy gives the plain loop's bits (this file is built for the baseline ISA).
  rows_on_threads((n + 4095) / 4096, 4096, threads, [&](int64_t b0, int64_t b1) {
    simd().axpy(1.f, y + b0 * 4096, x + b0 * 4096, std::min(n, b1 * 4096) - b0 * 4096);
  });
}

}  // namespace llmc::rt
