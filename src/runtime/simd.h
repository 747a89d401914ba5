#pragma once
// Small fp32 vector helpers for the runtime engine, dispatched once at startup to AVX-512, AVX2
// or portable code (no -m flags: the SIMD versions carry target attributes and run only after a
// CPUID check).
#include <cstdint>

namespace llmc::rt {

struct Simd {
  float (*dot)(const float* a, const float* b, int64_t n);
  void (*axpy)(float a, const float* x, float* y, int64_t n);  // y += a * x
  // y[r] = dot(W + r*K, x) for r in [0, rows): 4 rows at a time share the loads of x.
  void (*gemv)(const float* W, const float* x, int64_t rows, int64_t K, float* y);
  // out[c] = sum_r p[r] * V[r * ld + c] for c < n: attention's probabilities times value rows.
  void (*wsum)(const float* V, int64_t ld, const float* p, int64_t rows, int64_t n, float* out);
  // x[i] = exp(x[i] - shift) in place (exp(-inf) = 0); returns the sum. Vector exp: Cephes
  // polynomial, within 2 ulp of std::exp where the result is a normal float, 0 below e^-87.3.
  float (*exp_shift_sum)(float* x, float shift, int64_t n);
  // out[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i] (out may alias g).
  void (*silu_mul)(const float* g, const float* u, float* out, int64_t n);
  // gemv and wsum for nh <= kMaxHeads vectors at once, the query heads that share one KV head:
  // gemv_heads: Y[h * ldy + r] = gemv(W, X + h * ldx)[r]; wsum_heads: out + h * ldo = wsum(V, ld,
  // P + h * ldp, rows, n), h < nh. Bit for bit the single calls (each output's sums in the same
  // order); the AVX-512 versions read W / V once for all heads.
  void (*gemv_heads)(const float* W, const float* X, int64_t ldx, int nh, int64_t rows, int64_t K, float* Y,
                     int64_t ldy);
  void (*wsum_heads)(const float* V, int64_t ld, const float* P, int64_t ldp, int nh, int64_t rows, int64_t n,
                     float* out, int64_t ldo);
  // Attention's masking: r[j] = mask[j] ? r[j] * scale : -inf for j < n; returns the maximum of r,
  // NaN if any unmasked score is NaN (it makes the softmax NaN, as in torch), -inf if every key is
  // masked. The vector versions give the portable loop's r bit for bit and the same maximum (up to the
  // sign of a zero, which the softmax's shift does not see).
  float (*mask_scale_max)(float* r, const bool* mask, float scale, int64_t n);
  // out[r] = sum over i < n of double(x[r * ld + i])^2 for r < rows, each row's sum in the order of i
  // (RMSNorm's fp64 sum of squares; every square is exact in fp64, so the vector version, rows in
  // lanes, gives the loop's bits).
  void (*sumsq_rows)(const float* x, int64_t ld, int64_t rows, int64_t n, double* out);
  const char* name;
  static constexpr int kMaxHeads = 6;  // 3 query heads per KV head x 2 queries (prefill)
};

const Simd& simd();
// A given path ("portable", "avx2", "avx512"), or null where this CPU lacks it (tests).
const Simd* simd_path(const char* name);

// The kernels' persistent thread pool (kernels/src/thread_pool.cpp): fn(ctx, task) for task in
// [0, ntasks) on nthreads threads, the caller included. Sharing the pool the qgemm calls use keeps
// one set of spinning workers on the cores instead of two pools competing.
void parallel_for(int nthreads, int ntasks, void (*fn)(void*, int), void* ctx);

}  // namespace llmc::rt
