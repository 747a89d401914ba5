// CUDA part, testable without a GPU:
//  - the host API: argument errors, and a clean std::runtime_error when no device is present;
//  - the __host__ __device__ index/dequantization helpers of the kernels, by emulating both
//    kernels (GEMV-style and tiled) on the CPU with exactly those helpers and comparing with the
//    fp64 reference (relative error as in test_qgemm_cpu.cpp: max|y - ref| / max|ref| <= 1e-5).
// With a GPU present, QGemmCudaDevice also runs the real kernels.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "llmc_kernels/detail/qgemm_cuda_hd.h"
#include "llmc_kernels/qgemm.h"
#include "llmc_kernels/qgemm_cuda.h"
#include "test_util.h"

#if defined(LLMC_HAVE_CUDA)
#include <cuda_runtime.h>
#endif

namespace llmc::kernels {
namespace {

using namespace cuda_detail;
using test::random_qmatrix;
using test::random_vec;
using test::rel_error;

TEST(CudaHost, CompiledFlagMatchesBuild) {
#if defined(LLMC_HAVE_CUDA)
  EXPECT_TRUE(cuda_compiled());
#else
  EXPECT_FALSE(cuda_compiled());
  EXPECT_FALSE(cuda_available());
#endif
  std::printf("cuda_compiled=%d cuda_available=%d\n", cuda_compiled(), cuda_available());
}

void expect_invalid(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

TEST(CudaHost, RejectsBadArgumentsBeforeTouchingTheDevice) {
  // Host buffers stand in for device pointers: the checks never dereference them.
  const QMatrix w = random_qmatrix(4, 32, 8, 64, 1u);
  const QMatrixView v = w.view();
  std::vector<uint16_t> x(64 * 4), y(8 * 4);
  auto call = [&](const void* xp, DType dt, int M, QMatrixView wv, void* yp) {
    return [=] { qgemm_cuda(xp, dt, M, wv, nullptr, yp, nullptr); };
  };
  expect_invalid(call(nullptr, DType::kF16, 1, v, y.data()), "x");
  expect_invalid(call(x.data(), DType::kF16, 1, v, nullptr), "y");
  expect_invalid(call(x.data(), DType::kF16, 0, v, y.data()), "M");
  expect_invalid(call(x.data(), static_cast<DType>(7), 1, v, y.data()), "dtype");
  QMatrixView b = v;
  b.bits = 5;
  expect_invalid(call(x.data(), DType::kBF16, 1, b, y.data()), "bits");
  b = v;
  b.group = 100;
  expect_invalid(call(x.data(), DType::kBF16, 1, b, y.data()), "group");
  b = v;
  b.K = 0;
  expect_invalid(call(x.data(), DType::kBF16, 1, b, y.data()), "K");
  b = v;
  b.scales = nullptr;
  expect_invalid(call(x.data(), DType::kBF16, 1, b, y.data()), "scales");
  b = v;
  b.codes = v.codes + 1;  // misaligned
  expect_invalid(call(x.data(), DType::kBF16, 1, b, y.data()), "aligned");
}

TEST(CudaHost, NoDeviceIsACleanRuntimeError) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present";
  const QMatrix w = random_qmatrix(4, 32, 8, 64, 2u);
  std::vector<uint16_t> x(64), y(8, 0xabcd);
  EXPECT_THROW(qgemm_cuda(x.data(), DType::kF16, 1, w.view(), nullptr, y.data()), std::runtime_error);
  EXPECT_THROW(qgemm_cuda(x.data(), DType::kBF16, 17, w.view(), nullptr, y.data()), std::runtime_error);
  for (uint16_t v : y) EXPECT_EQ(v, 0xabcd);
}

// ---- helpers ---------------------------------------------------------------------------------

TEST(CudaHd, FastDequantIsExact) {
  for (uint32_t q = 0; q < 256; ++q) {
    EXPECT_EQ(small_uint_to_float(q), static_cast<float>(q));
    EXPECT_EQ(dequant_fast(q, 0.0123f, 7.5f), dequant(q, 0.0123f, 7.5f));
  }
}

TEST(CudaHd, SmemSkewIsBankConflictFree) {
  // float4 shared loads are served per quarter warp (8 lanes): the 8 addresses of one load step
  // must fall into 8 different 4-bank groups.
  for (int f = 0; f < 8; ++f) {
    for (int q = 0; q < 4; ++q) {
      std::vector<int> quads;
      for (int l = 8 * q; l < 8 * q + 8; ++l) {
        const int idx = gemv_smem_index(l * kBlockCodes) + 4 * f;
        EXPECT_EQ(idx % 4, 0);  // 16-byte aligned float4
        quads.push_back((idx / 4) % 8);
      }
      std::sort(quads.begin(), quads.end());
      EXPECT_EQ(std::unique(quads.begin(), quads.end()), quads.end()) << "f=" << f << " quarter=" << q;
    }
  }
  EXPECT_LE(gemv_smem_index(kGemvTileK - 1) + 1, kGemvSmemStride);  // a tile row fits its stride
}

TEST(CudaHd, BlockDequantHelpersMatchReference) {
  for (int bits : {2, 3, 4, 8}) {
    const QMatrix w = random_qmatrix(bits, 32, 3, 96, 3u + bits);
    const std::vector<float> ref = dequantize(w.view());
    for (int n = 0; n < 3; ++n) {
      for (int kb = 0; kb < 3; ++kb) {
        uint32_t words[8];
        load_block_words(w.codes.data() + block_offset(w.layout.row_bytes, bits, n, kb), bits, words);
        const float s = fp16_to_fp32(w.scales[n * 3 + kb]), z = fp16_to_fp32(w.zeros[n * 3 + kb]);
        float v4[4], v16[16];
        for (int f = 0; f < 8; ++f) {
          switch (bits) {
            case 2: dequant4<2>(words, f, s, z, v4); break;
            case 3: dequant4<3>(words, f, s, z, v4); break;
            case 4: dequant4<4>(words, f, s, z, v4); break;
            default: dequant4<8>(words, f, s, z, v4); break;
          }
          for (int d = 0; d < 4; ++d) ASSERT_EQ(v4[d], ref[n * 96 + kb * 32 + 4 * f + d]);
        }
        for (int half = 0; half < 2; ++half) {
          switch (bits) {
            case 2: tile_dequant16<2>(words, half, s, z, v16); break;
            case 3: tile_dequant16<3>(words, half, s, z, v16); break;
            case 4: tile_dequant16<4>(words, half, s, z, v16); break;
            default: tile_dequant16<8>(words, half, s, z, v16); break;
          }
          for (int i = 0; i < 16; ++i) ASSERT_EQ(v16[i], ref[n * 96 + kb * 32 + 16 * half + i]);
        }
      }
    }
  }
}

// ---- kernel emulation --------------------------------------------------------------------------

template <int BITS, int MMAX>
void emulate_gemv(const std::vector<float>& x, int M, const QMatrixView& w, std::vector<float>& y) {
  const QLayout l = w.layout();
  std::vector<float> xs(static_cast<size_t>(MMAX) * kGemvSmemStride);
  for (int nb = 0; nb < (w.N + kGemvRowsPerBlock - 1) / kGemvRowsPerBlock; ++nb) {  // thread blocks
    for (int warp = 0; warp < kGemvWarps; ++warp) {
      const int n0 = nb * kGemvRowsPerBlock + warp * kGemvRowsPerWarp;
      float acc[32][kGemvRowsPerWarp][MMAX] = {};  // per lane
      for (int k0 = 0; k0 < l.real_blocks * kBlockCodes; k0 += kGemvTileK) {
        for (int i = 0; i < MMAX * kGemvTileK; ++i) {  // cooperative x load
          const int m = i / kGemvTileK, kk = i % kGemvTileK, k = k0 + kk;
          xs[m * kGemvSmemStride + gemv_smem_index(kk)] = (m < M && k < w.K) ? x[static_cast<size_t>(m) * w.K + k] : 0.f;
        }
        for (int lane = 0; lane < 32; ++lane) {
          const int kb = k0 / kBlockCodes + lane;
          if (kb >= l.real_blocks) continue;
          for (int r = 0; r < kGemvRowsPerWarp; ++r) {
            const int n = n0 + r;
            if (n >= w.N) continue;
            uint32_t words[BITS];
            load_block_words(w.codes + block_offset(l.row_bytes, BITS, n, kb), BITS, words);
            const size_t gi = static_cast<size_t>(n) * l.groups_per_row + kb / (w.group / kBlockCodes);
            gemv_lane_accumulate<BITS, MMAX>(words, fp16_to_fp32(w.scales[gi]), fp16_to_fp32(w.zeros[gi]), xs.data(),
                                             lane, M, acc[lane][r]);
          }
        }
      }
      for (int r = 0; r < kGemvRowsPerWarp; ++r) {  // warp reduction
        const int n = n0 + r;
        if (n >= w.N) continue;
        for (int m = 0; m < M; ++m) {
          float v = 0.f;
          for (int lane = 0; lane < 32; ++lane) v += acc[lane][r][m];
          y[static_cast<size_t>(m) * w.N + n] = v;
        }
      }
    }
  }
}

template <int BITS>
void emulate_tile(const std::vector<float>& x, int M, const QMatrixView& w, std::vector<float>& y) {
  const QLayout l = w.layout();
  std::vector<float> As(kTileM * kTileLd), Bs(kTileN * kTileLd);
  for (int m0 = 0; m0 < M; m0 += kTileM) {
    for (int n0 = 0; n0 < w.N; n0 += kTileN) {
      std::vector<double> C(kTileM * kTileN, 0.0);
      for (int kb = 0; kb < l.real_blocks; ++kb) {
        const int k0 = kb * kBlockCodes;
        for (int i = 0; i < kTileM * kTileK; ++i) {
          const int r = i / kTileK, cc = i % kTileK, m = m0 + r, k = k0 + cc;
          As[r * kTileLd + cc] = (m < M && k < w.K) ? x[static_cast<size_t>(m) * w.K + k] : 0.f;
        }
        for (int tid = 0; tid < kTileThreads; ++tid) {
          const int r = tid >> 1, half = tid & 1, n = n0 + r;
          float* dst = Bs.data() + r * kTileLd + 16 * half;
          if (n < w.N) {
            uint32_t words[BITS];
            load_block_words(w.codes + block_offset(l.row_bytes, BITS, n, kb), BITS, words);
            const size_t gi = static_cast<size_t>(n) * l.groups_per_row + kb / (w.group / kBlockCodes);
            tile_dequant16<BITS>(words, half, fp16_to_fp32(w.scales[gi]), fp16_to_fp32(w.zeros[gi]), dst);
          } else {
            std::fill(dst, dst + 16, 0.f);
          }
        }
        for (int r = 0; r < kTileM; ++r)
          for (int c = 0; c < kTileN; ++c)
            for (int k = 0; k < kTileK; ++k) C[r * kTileN + c] += static_cast<double>(As[r * kTileLd + k]) * Bs[c * kTileLd + k];
      }
      for (int r = 0; r < kTileM; ++r)
        for (int c = 0; c < kTileN; ++c)
          if (m0 + r < M && n0 + c < w.N) y[static_cast<size_t>(m0 + r) * w.N + n0 + c] = static_cast<float>(C[r * kTileN + c]);
    }
  }
}

template <int BITS>
void emulate(const std::vector<float>& x, int M, const QMatrixView& w, std::vector<float>& y) {
  if (M <= 1) emulate_gemv<BITS, 1>(x, M, w, y);
  else if (M <= 2) emulate_gemv<BITS, 2>(x, M, w, y);
  else if (M <= 4) emulate_gemv<BITS, 4>(x, M, w, y);
  else if (M <= 8) emulate_gemv<BITS, 8>(x, M, w, y);
  else emulate_tile<BITS>(x, M, w, y);
}

TEST(CudaHd, KernelEmulationMatchesReference) {
  for (int bits : {2, 3, 4, 8}) {
    for (int g : {32, 64, 128}) {
      // 2100 > one 1024-column GEMV tile, 37 / 70 rows leave partial warps and tiles.
      for (auto [N, K] : std::vector<std::pair<int, int>>{{37, 172}, {13, 576}, {70, 2100}}) {
        const QMatrix w = random_qmatrix(bits, g, N, K, 50u + bits * 7 + g + N);
        for (int M : {1, 2, 3, 8, 17, 70}) {
          const std::vector<float> x = random_vec(static_cast<size_t>(M) * K, 60u + M);
          std::vector<float> ref(static_cast<size_t>(M) * N), y(ref.size(), -1.f);
          qgemm_reference(x.data(), M, w.view(), nullptr, ref.data());
          switch (bits) {
            case 2: emulate<2>(x, M, w.view(), y); break;
            case 3: emulate<3>(x, M, w.view(), y); break;
            case 4: emulate<4>(x, M, w.view(), y); break;
            default: emulate<8>(x, M, w.view(), y); break;
          }
          EXPECT_LE(rel_error(y, ref), 1e-5) << "bits=" << bits << " g=" << g << " N=" << N << " K=" << K << " M=" << M;
        }
      }
    }
  }
}

// ---- real device run (only with a GPU) ---------------------------------------------------------

#if defined(LLMC_HAVE_CUDA)
template <typename T>
struct DevBuf {
  T* p = nullptr;
  explicit DevBuf(size_t n) { EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess); }
  ~DevBuf() { cudaFree(p); }
  void up(const std::vector<T>& v) { EXPECT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess); }
  void down(std::vector<T>& v) const {
    EXPECT_EQ(cudaMemcpy(v.data(), p, v.size() * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  }
};

TEST(QGemmCudaDevice, MatchesReference) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  for (DType dt : {DType::kF16, DType::kBF16}) {
    auto enc = [&](float f) { return dt == DType::kF16 ? fp32_to_fp16(f) : fp32_to_bf16(f); };
    auto dec = [&](uint16_t h) { return dt == DType::kF16 ? fp16_to_fp32(h) : bf16_to_fp32(h); };
    for (int bits : {2, 3, 4, 8}) {
      for (int g : {32, 128}) {
        const int N = 70, K = 1100;
        const QMatrix w = random_qmatrix(bits, g, N, K, 80u + bits + g);
        DevBuf<uint8_t> dc(w.codes.size());
        DevBuf<uint16_t> ds(w.scales.size()), dz(w.zeros.size());
        dc.up(w.codes);
        ds.up(w.scales);
        dz.up(w.zeros);
        const QMatrixView dv{bits, g, N, K, dc.p, ds.p, dz.p};
        for (int M : {1, 3, 8, 9, 130}) {
          const std::vector<float> xf = random_vec(static_cast<size_t>(M) * K, 90u + M);
          std::vector<uint16_t> xh(xf.size());
          std::vector<float> xr(xf.size());
          for (size_t i = 0; i < xf.size(); ++i) {
            xh[i] = enc(xf[i]);
            xr[i] = dec(xh[i]);
          }
          std::vector<float> ref(static_cast<size_t>(M) * N);
          qgemm_reference(xr.data(), M, w.view(), nullptr, ref.data());
          DevBuf<uint16_t> dx(xh.size()), dy(ref.size());
          dx.up(xh);
          qgemm_cuda(dx.p, dt, M, dv, nullptr, dy.p);
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          std::vector<uint16_t> yh(ref.size());
          dy.down(yh);
          std::vector<float> y(yh.size());
          for (size_t i = 0; i < y.size(); ++i) y[i] = dec(yh[i]);
          // Output rounding (and, for M > 8, weights rounded to the activation type).
          const double tol = dt == DType::kF16 ? 4e-3 : 3e-2;
          EXPECT_LE(rel_error(y, ref), tol) << "dtype=" << static_cast<int>(dt) << " bits=" << bits << " g=" << g << " M=" << M;
        }
      }
    }
  }
}
#endif

}  // namespace
}  // namespace llmc::kernels
