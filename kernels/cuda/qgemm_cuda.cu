// CUDA quantized GEMM: y = x * dequant(W)^T (+ bias) with fp16 / bf16 activations and fp32
// accumulation; one kernel family templated on the bit width.
//
//   M <= 8 : qgemv_kernel - GEMV-style. 8 warps x 2 output rows per block; x tiles of 1024
//            columns staged in shared memory as fp32; each lane dequantizes one 32-code block per
//            row per tile (coalesced: a warp reads 32 consecutive blocks, 64..256 contiguous
//            bytes per row), warp-shuffle reduction at the end.
//   M > 8  : qgemm_tile_kernel - 64 x 64 output tile per 128-thread block; per 32-column step
//            the x tile is copied and the weight tile dequantized (once per block) into shared
//            memory as fp16/bf16, then WMMA 16x16x16 tensor-core MMAs with fp32 accumulators.
// The index/dequantization math is in llmc_kernels/detail/qgemm_cuda_hd.h (host-tested).
//
// ptxas (nvcc 13.0, -Xptxas -v, sm_80 and sm_90a): every kernel reports "0 bytes spill stores,
// 0 bytes spill loads"; see the commit message for the register counts.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <stdexcept>
#include <string>

#include "cuda_args.h"
#include "llmc_kernels/detail/qgemm_cuda_hd.h"
#include "llmc_kernels/qgemm_cuda.h"

namespace llmc::kernels {
namespace {

using namespace cuda_detail;

template <typename T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ __half from_f<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Device-side description of the packed matrix.
struct DevW {
  const uint8_t* codes;
  const uint16_t* scales;
  const uint16_t* zeros;
  int N, K, G, blocks_per_group;
  int real_blocks;  // QLayout::real_blocks: blocks past it are a partial group's padding (x = 0)
  size_t row_bytes;
};

// The BITS words of a block; blocks are naturally aligned (8/4/16/32 bytes) given a 16-byte
// aligned codes pointer, so 2- and 4-bit blocks are single 64/128-bit loads.
template <int BITS>
__device__ __forceinline__ void load_block(const uint8_t* p, uint32_t (&w)[BITS]) {
  if constexpr (BITS == 2) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    w[0] = v.x;
    w[1] = v.y;
  } else if constexpr (BITS == 4 || BITS == 8) {
#pragma unroll
    for (int i = 0; i < BITS / 4; ++i) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + i);
      w[4 * i + 0] = v.x;
      w[4 * i + 1] = v.y;
      w[4 * i + 2] = v.z;
      w[4 * i + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < BITS; ++i) w[i] = __ldg(reinterpret_cast<const uint32_t*>(p) + i);
  }
}

__device__ __forceinline__ void scale_zero(const DevW& w, int n, int kb, float& s, float& z) {
  const size_t gi = static_cast<size_t>(n) * w.G + kb / w.blocks_per_group;
  s = fp16_to_fp32(__ldg(w.scales + gi));
  z = fp16_to_fp32(__ldg(w.zeros + gi));
}

template <int BITS, int MMAX, typename T>
__global__ void __launch_bounds__(kGemvWarps * 32)
    qgemv_kernel(const T* __restrict__ x, int M, DevW w, const T* __restrict__ bias, T* __restrict__ y) {
  __shared__ __align__(16) float xs[MMAX * kGemvSmemStride];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int n0 = blockIdx.x * kGemvRowsPerBlock + warp * kGemvRowsPerWarp;
  float acc[kGemvRowsPerWarp][MMAX];
#pragma unroll
  for (int r = 0; r < kGemvRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < MMAX; ++m) acc[r][m] = 0.f;

  for (int k0 = 0; k0 < w.real_blocks * kBlockCodes; k0 += kGemvTileK) {
    __syncthreads();
    for (int i = threadIdx.x; i < MMAX * kGemvTileK; i += blockDim.x) {
      const int m = i / kGemvTileK, kk = i % kGemvTileK, k = k0 + kk;
      float v = 0.f;
      if (m < M && k < w.K) v = to_f(x[static_cast<size_t>(m) * w.K + k]);
      xs[m * kGemvSmemStride + gemv_smem_index(kk)] = v;
    }
    __syncthreads();
    const int kb = k0 / kBlockCodes + lane;
    if (kb < w.real_blocks) {
#pragma unroll
      for (int r = 0; r < kGemvRowsPerWarp; ++r) {
        const int n = n0 + r;
        if (n < w.N) {
          uint32_t words[BITS];
          load_block<BITS>(w.codes + block_offset(w.row_bytes, BITS, n, kb), words);
          float s, z;
          scale_zero(w, n, kb, s, z);
          gemv_lane_accumulate<BITS, MMAX>(words, s, z, xs, lane, M, acc[r]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kGemvRowsPerWarp; ++r) {
    const int n = n0 + r;
#pragma unroll
    for (int m = 0; m < MMAX; ++m) {
      float v = acc[r][m];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (lane == 0 && m < M && n < w.N) {
        if (bias != nullptr) v += to_f(bias[n]);
        y[static_cast<size_t>(m) * w.N + n] = from_f<T>(v);
      }
    }
  }
}

template <int BITS, typename T>
__global__ void __launch_bounds__(kTileThreads)
    qgemm_tile_kernel(const T* __restrict__ x, int M, DevW w, const T* __restrict__ bias, T* __restrict__ y) {
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(32) T As[kTileM * kTileLd];
  __shared__ __align__(32) T Bs[kTileN * kTileLd];
  __shared__ __align__(32) float Cs[kTileM * kTileLdC];
  const int m0 = blockIdx.y * kTileM, n0 = blockIdx.x * kTileN;
  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(c[i][j], 0.f);

  for (int kb = 0; kb < w.real_blocks; ++kb) {
    const int k0 = kb * kBlockCodes;
    for (int i = tid; i < kTileM * kTileK; i += kTileThreads) {
      const int r = i / kTileK, cc = i % kTileK, m = m0 + r, k = k0 + cc;
      As[r * kTileLd + cc] = (m < M && k < w.K) ? x[static_cast<size_t>(m) * w.K + k] : from_f<T>(0.f);
    }
    {
      const int r = tid >> 1, half = tid & 1, n = n0 + r;
      T* dst = Bs + r * kTileLd + 16 * half;
      if (n < w.N) {
        uint32_t words[BITS];
        load_block<BITS>(w.codes + block_offset(w.row_bytes, BITS, n, kb), words);
        float s, z;
        scale_zero(w, n, kb, s, z);
        float v[16];
        // Constant `half` in each branch keeps words[] in registers (8-bit indexes it by half).
        if (half == 0) {
          tile_dequant16<BITS>(words, 0, s, z, v);
        } else {
          tile_dequant16<BITS>(words, 1, s, z, v);
        }
#pragma unroll
        for (int i = 0; i < 16; ++i) dst[i] = from_f<T>(v[i]);
      } else {
#pragma unroll
        for (int i = 0; i < 16; ++i) dst[i] = from_f<T>(0.f);
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], As + (wm + 16 * i) * kTileLd + kk, kTileLd);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], Bs + (wn + 16 * j) * kTileLd + kk, kTileLd);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(c[i][j], a[i], b[j], c[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(Cs + (wm + 16 * i) * kTileLdC + wn + 16 * j, c[i][j], kTileLdC, wmma::mem_row_major);
  __syncthreads();
  for (int i = tid; i < kTileM * kTileN; i += kTileThreads) {
    const int r = i / kTileN, cc = i % kTileN, m = m0 + r, n = n0 + cc;
    if (m < M && n < w.N) {
      float v = Cs[r * kTileLdC + cc];
      if (bias != nullptr) v += to_f(bias[n]);
      y[static_cast<size_t>(m) * w.N + n] = from_f<T>(v);
    }
  }
}

[[noreturn]] void cuda_fail(const char* what, cudaError_t e) {
  throw std::runtime_error(std::string("qgemm_cuda: ") + what + ": " + cudaGetErrorString(e));
}

template <int BITS, typename T>
void launch(const T* x, int M, const DevW& w, const T* bias, T* y, cudaStream_t s) {
  if (M <= 8) {
    const dim3 grid((w.N + kGemvRowsPerBlock - 1) / kGemvRowsPerBlock), block(kGemvWarps * 32);
    if (M <= 1) {
      qgemv_kernel<BITS, 1, T><<<grid, block, 0, s>>>(x, M, w, bias, y);
    } else if (M <= 2) {
      qgemv_kernel<BITS, 2, T><<<grid, block, 0, s>>>(x, M, w, bias, y);
    } else if (M <= 4) {
      qgemv_kernel<BITS, 4, T><<<grid, block, 0, s>>>(x, M, w, bias, y);
    } else {
      qgemv_kernel<BITS, 8, T><<<grid, block, 0, s>>>(x, M, w, bias, y);
    }
  } else {
    const dim3 grid((w.N + kTileN - 1) / kTileN, (M + kTileM - 1) / kTileM), block(kTileThreads);
    qgemm_tile_kernel<BITS, T><<<grid, block, 0, s>>>(x, M, w, bias, y);
  }
}

template <typename T>
void launch_bits(int bits, const T* x, int M, const DevW& w, const T* bias, T* y, cudaStream_t s) {
  switch (bits) {
    case 2: launch<2, T>(x, M, w, bias, y, s); break;
    case 3: launch<3, T>(x, M, w, bias, y, s); break;
    case 4: launch<4, T>(x, M, w, bias, y, s); break;
    default: launch<8, T>(x, M, w, bias, y, s); break;
  }
}

}  // namespace

bool cuda_compiled() { return true; }

bool cuda_available() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error state
    return false;
  }
  return count > 0;
}

void qgemm_cuda(const void* x, DType dtype, int M, const QMatrixView& w, const void* bias, void* y, void* stream) {
  detail::check_cuda_args(x, dtype, M, w, y);
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    cuda_fail("no usable CUDA device", e);
  }
  if (count == 0) throw std::runtime_error("qgemm_cuda: no CUDA device present");

  const QLayout l = w.layout();
  const DevW dw{w.codes, w.scales, w.zeros, w.N, w.K, l.groups_per_row, w.group / kBlockCodes, l.real_blocks,
                l.row_bytes};
  const auto s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::kF16) {
    launch_bits(w.bits, static_cast<const __half*>(x), M, dw, static_cast<const __half*>(bias), static_cast<__half*>(y), s);
  } else {
    launch_bits(w.bits, static_cast<const __nv_bfloat16*>(x), M, dw, static_cast<const __nv_bfloat16*>(bias),
                static_cast<__nv_bfloat16*>(y), s);
  }
  const cudaError_t le = cudaGetLastError();
  if (le != cudaSuccess) cuda_fail("kernel launch failed", le);
}

}  // namespace llmc::kernels
