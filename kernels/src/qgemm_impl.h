// Internal interface between the qgemm_cpu dispatcher and the per-ISA kernels.
#pragma once

#include <cstddef>
#include <cstdint>

namespace llmc::kernels::detail {

// One qgemm_cpu call, after validation and activation preparation.
struct Problem {
  int M = 0, N = 0, K = 0;
  int bits = 0, group = 0;
  int Kp = 0;  // K_padded
  // Blocks of 32 columns that hold real columns, ceil(K / 32). The kernels stop there: the rest of
  // a partial last group is padding whose x is zero (K = 576 with g = 128: 18 of 20 blocks).
  int Kb = 0;
  int G = 0;   // groups per row
  const uint8_t* codes = nullptr;
  size_t row_bytes = 0;
  const uint16_t* scales = nullptr;  // [N][G] fp16
  const uint16_t* zeros = nullptr;   // [N][G] fp16
  const float* bias = nullptr;       // [N] or null
  float* y = nullptr;                // [M][N]

  // Fused (small-M) path.
  const float* xp = nullptr;  // [M][Kp] copy of x, zero in the padding columns, 64-byte aligned rows
  const float* xg = nullptr;  // [M][G] per-group sums of xp (fused 2/3-bit AVX paths)

  // Panel (large-M) path.
  int Mp = 0;                 // M rounded up to a multiple of 16
  const float* xT = nullptr;  // [Kp][Mp] transposed x, zero outside [M) x [K)
  float* yT = nullptr;        // [N][Mp] fp32 accumulators
};

// Panel path tiling (AVX-512 / AVX2): n-rows per micro tile and the K chunk dequantized at once.
constexpr int kPanelKc = 256;
constexpr int kPanelNr512 = 12;
constexpr int kPanelNr256 = 6;
// Rows handed to one task are a multiple of this (divisible by every NT/NR above and by 4).
constexpr int kRowQuantum = 12;

// Each function computes output rows [n0, n1) of y for all M rows of x.
void rows_scalar(const Problem& p, int n0, int n1);
void fused_rows_avx2(const Problem& p, int n0, int n1);
void panel_rows_avx2(const Problem& p, int n0, int n1);
void fused_rows_avx512(const Problem& p, int n0, int n1);
void panel_rows_avx512(const Problem& p, int n0, int n1);

// Runs fn(ctx, task) for task in [0, ntasks) on `nthreads` threads (the caller is one of them)
// of a persistent pool; returns when all tasks are done. Calls from several threads are
// serialized; a call from inside a task runs serially (no deadlock); the first exception thrown
// by a task is rethrown here (remaining tasks are skipped).
void parallel_for(int nthreads, int ntasks, void (*fn)(void*, int), void* ctx);

}  // namespace llmc::kernels::detail
