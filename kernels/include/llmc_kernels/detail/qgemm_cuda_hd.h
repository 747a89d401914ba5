// Index and dequantization math of the CUDA kernels (cuda/qgemm_cuda.cu), written as
// __host__ __device__ functions so the CPU tests run exactly the code the kernels run
// (tests/kernels/test_cuda_host.cpp emulates both kernels with them). No CUDA header needed.
#pragma once

#include <cstdint>

#include "llmc_kernels/qformat.h"

// Full unrolling inside the kernels (keeps the per-lane arrays in registers); a no-op on the host.
#if defined(__CUDACC__)
#define LLMC_UNROLL _Pragma("unroll")
#else
#define LLMC_UNROLL
#endif

namespace llmc::kernels::cuda_detail {

// ---- GEMV-style kernel (M <= 8) ----------------------------------------------------------------
// A block of kGemvWarps warps; each warp owns kGemvRowsPerWarp consecutive output rows. K is
// walked in tiles of kGemvTileK codes: the tile of x (M rows, converted to fp32) is staged in
// shared memory, and lane l of every warp handles block (tile_start/32 + l) of each of its rows,
// i.e. 32 consecutive codes, read as 4 groups of 4 (float4 loads of x).
constexpr int kGemvWarps = 8;
constexpr int kGemvRowsPerWarp = 2;
constexpr int kGemvRowsPerBlock = kGemvWarps * kGemvRowsPerWarp;
constexpr int kGemvTileK = 32 * kBlockCodes;  // 1024
// x rows in shared memory get 4 floats of padding after every 32: lane l's float4 reads at
// 36*l + 4*f hit distinct bank quads within each quarter warp (no bank conflicts).
constexpr int kGemvSkew = 4;
constexpr int kGemvSmemStride = kGemvTileK + kGemvTileK / kBlockCodes * kGemvSkew;  // floats per x row

LLMC_HD inline int gemv_smem_index(int kk) { return kk + (kk / kBlockCodes) * kGemvSkew; }

// Exact uint -> fp32 for q < 2^23 (on the device: one LOP + one FADD instead of a slow I2F).
LLMC_HD inline float small_uint_to_float(uint32_t q) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(0x4b000000u | q) - 8388608.0f;
#else
  return static_cast<float>(q);
#endif
}

LLMC_HD inline float dequant_fast(uint32_t q, float scale, float zero) {
  return scale * (small_uint_to_float(q) - zero);
}

// Weights of codes 4f .. 4f+3 of a block (f in 0..7).
template <int BITS>
LLMC_HD inline void dequant4(const uint32_t* words, int f, float s, float z, float out[4]) {
  LLMC_UNROLL
  for (int d = 0; d < 4; ++d) out[d] = dequant_fast(block_code<BITS>(words, 4 * f + d), s, z);
}

// One lane's contribution to acc[m] (m < M <= MMAX) for one weight row: its 32-code block with
// scale s / zero z, against the staged x tile xs (row m at xs + m * kGemvSmemStride).
template <int BITS, int MMAX>
LLMC_HD inline void gemv_lane_accumulate(const uint32_t* words, float s, float z, const float* xs, int lane, int M,
                                         float* acc) {
  const int base = gemv_smem_index(lane * kBlockCodes);
  LLMC_UNROLL
  for (int f = 0; f < 8; ++f) {
    float wv[4];
    dequant4<BITS>(words, f, s, z, wv);
    LLMC_UNROLL
    for (int m = 0; m < MMAX; ++m) {
      if (m < M) {
        const float* xp = xs + m * kGemvSmemStride + base + 4 * f;
#if defined(__CUDA_ARCH__)
        const float4 xv = *reinterpret_cast<const float4*>(xp);
        acc[m] += wv[0] * xv.x + wv[1] * xv.y + wv[2] * xv.z + wv[3] * xv.w;
#else
        acc[m] += wv[0] * xp[0] + wv[1] * xp[1] + wv[2] * xp[2] + wv[3] * xp[3];
#endif
      }
    }
  }
}

// ---- Tiled kernel (M > 8) ----------------------------------------------------------------------
// Output tile kTileM x kTileN per block of 4 warps (2 x 2, 32 x 32 each, WMMA 16x16x16 with fp32
// accumulation). K advances one 32-code block at a time (a block never straddles a group, so the
// whole tile column has one scale/zero per weight row): thread t dequantizes half (t % 2) of the
// block of weight row t / 2 into shared memory as fp16/bf16.
constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kTileK = kBlockCodes;
constexpr int kTileThreads = 128;
constexpr int kTileLd = kTileK + 8;  // smem row stride (elements) of the A/B tiles
constexpr int kTileLdC = kTileN + 4;

// Weights of codes 16*half .. 16*half+15 of a block.
template <int BITS>
LLMC_HD inline void tile_dequant16(const uint32_t* words, int half, float s, float z, float out[16]) {
  LLMC_UNROLL
  for (int i = 0; i < 16; ++i) out[i] = dequant_fast(block_code<BITS>(words, 16 * half + i), s, z);
}

}  // namespace llmc::kernels::cuda_detail
