// qgemm_cpu against the fp64 reference, for every bit width, group size and SIMD path.
//
// Relative error of a result y against the fp64 reference yref (both [M][N]):
//     rel = max_i |y_i - yref_i| / max_i |yref_i|
// and every path must reach rel <= 1e-5; the AVX2 paths, which round x to int16,
// must reach it beyond the error that rounding explains (test_util.h: rel_error_rounded_x).
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "llmc_kernels/qgemm.h"
#include "llmc_kernels/qtiled.h"
#include "qgemm_impl.h"
#include "test_util.h"

namespace llmc::kernels {
namespace {

using test::random_qmatrix;
using test::random_vec;
using test::rel_error;
using test::gemm_error;

constexpr double kTol = 1e-5;

std::vector<Isa> all_isas() { return {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni}; }

struct Shape {
  int N, K;
};

// (bits, group, isa)
class QGemmCpu : public ::testing::TestWithParam<std::tuple<int, int, Isa>> {};

TEST_P(QGemmCpu, MatchesFp64Reference) {
  const auto [bits, group, isa] = GetParam();
  if (!isa_supported(isa)) GTEST_SKIP() << isa_name(isa) << " not supported by this CPU";
  // K = group (one group), 172 (partial last group for every g), 576 (SmolLM2 hidden size: not a
  // multiple of 128), 1000 (several groups + partial). N = 13 / 37: not multiples of any tile.
  const std::vector<Shape> shapes = {{13, group}, {37, 172}, {37, 576}, {13, 1000}};
  // M covers the fused kernel (1..4 rows per x tile, remainders) and the panel kernel
  // (16 = one 16-lane block, 17 -> 32, 48 = 32 + 16, 128).
  const std::vector<int> Ms = {1, 2, 3, 4, 5, 16, 17, 48, 128};
  uint32_t seed = 1000u * bits + group;
  for (const Shape& s : shapes) {
    const QMatrix w = random_qmatrix(bits, group, s.N, s.K, ++seed);
    const std::vector<float> bias = random_vec(s.N, ++seed);
    for (int M : Ms) {
      SCOPED_TRACE("bits=" + std::to_string(bits) + " g=" + std::to_string(group) + " N=" + std::to_string(s.N) +
                   " K=" + std::to_string(s.K) + " M=" + std::to_string(M) + " isa=" + isa_name(isa));
      const std::vector<float> x = random_vec(static_cast<size_t>(M) * s.K, ++seed);
      const float* b = (M % 2 == 1) ? bias.data() : nullptr;  // both with and without bias
      std::vector<float> ref(static_cast<size_t>(M) * s.N), y(ref.size(), -12345.f);
      qgemm_reference(x.data(), M, w.view(), b, ref.data());
      qgemm_cpu(x.data(), M, w.view(), b, y.data(), 2, isa);
      EXPECT_LE(gemm_error(y, ref, x, M, w.view(), isa), kTol);
      test::PrefillXBits x8(8);  // the int8-x prefill kernel where this call takes it
      if (qgemm_x_bits(isa, M, bits) == 8) {
        std::vector<float> y8(ref.size(), -12345.f);
        qgemm_cpu(x.data(), M, w.view(), b, y8.data(), 2, isa);
        EXPECT_LE(gemm_error(y8, ref, x, M, w.view(), isa), kTol) << "int8 x";
      }
    }
  }
}

std::string param_name(const ::testing::TestParamInfo<QGemmCpu::ParamType>& info) {
  return "b" + std::to_string(std::get<0>(info.param)) + "_g" + std::to_string(std::get<1>(info.param)) + "_" +
         isa_name(std::get<2>(info.param));
}

INSTANTIATE_TEST_SUITE_P(All, QGemmCpu,
                         ::testing::Combine(::testing::Values(2, 3, 4, 8), ::testing::Values(32, 64, 128),
                                            ::testing::ValuesIn(all_isas())),
                         param_name);

// Threading: results must not depend on the thread count, and many tasks must be covered.
TEST(QGemmCpuThreads, SameResultForAnyThreadCount) {
  for (int bits : {2, 3, 4, 8}) {
    const QMatrix w = random_qmatrix(bits, 64, 301, 640, 77u + bits);
    for (int M : {1, 3, 20}) {
      const std::vector<float> x = random_vec(static_cast<size_t>(M) * 640, 99u + M);
      std::vector<float> ref(static_cast<size_t>(M) * 301);
      qgemm_reference(x.data(), M, w.view(), nullptr, ref.data());
      std::vector<float> y1(ref.size()), yk(ref.size());
      qgemm_cpu(x.data(), M, w.view(), nullptr, y1.data(), 1);
      EXPECT_LE(gemm_error(y1, ref, x, M, w.view(), Isa::kAuto), kTol) << "bits=" << bits << " M=" << M;
      for (int t : {2, 3, 5, 0}) {
        qgemm_cpu(x.data(), M, w.view(), nullptr, yk.data(), t);
        EXPECT_EQ(y1, yk) << "bits=" << bits << " M=" << M << " threads=" << t;
      }
    }
  }
}

// Activations with a large common offset (all positive): stresses the kernels that apply the
// zero point per group through sum(x) (cancellation between sum(q*x) and z*sum(x)).
TEST(QGemmCpuAccuracy, PositiveActivations) {
  for (Isa isa : all_isas()) {
    if (!isa_supported(isa)) continue;
    for (int bits : {2, 3, 4, 8}) {
      const QMatrix w = random_qmatrix(bits, 128, 37, 4096, 5u + bits);
      for (int M : {1, 4, 32}) {
        const std::vector<float> x = random_vec(static_cast<size_t>(M) * 4096, 7u + M, 0.5f, 1.5f);
        std::vector<float> ref(static_cast<size_t>(M) * 37), y(ref.size());
        qgemm_reference(x.data(), M, w.view(), nullptr, ref.data());
        qgemm_cpu(x.data(), M, w.view(), nullptr, y.data(), 2, isa);
        EXPECT_LE(gemm_error(y, ref, x, M, w.view(), isa), kTol) << "bits=" << bits << " M=" << M << " isa=" << isa_name(isa);
      }
    }
  }
}

// Quantized GEMM of RTN-quantized weights equals dense GEMM of the dequantized weights.
TEST(QGemmCpuAccuracy, MatchesDenseOnDequantizedWeights) {
  const int N = 29, K = 300, M = 5;
  const std::vector<float> wf = random_vec(static_cast<size_t>(N) * K, 11u, -0.1f, 0.1f);
  const QMatrix w = quantize_rtn(wf.data(), N, K, 4, 64);
  const std::vector<float> wd = dequantize(w.view());
  const std::vector<float> x = random_vec(static_cast<size_t>(M) * K, 12u);
  const std::vector<float> bias = random_vec(N, 13u);
  std::vector<float> dense(static_cast<size_t>(M) * N), y(dense.size());
  gemm_dense_reference(x.data(), M, wd.data(), N, K, bias.data(), dense.data());
  qgemm_cpu(x.data(), M, w.view(), bias.data(), y.data());
  EXPECT_LE(gemm_error(y, dense, x, M, w.view(), Isa::kAuto), kTol);
}

// x (M, K) rounded as the integer kernels round it, per row and group (round_to_int8_scalar or
// round_to_int16_scalar), and scaled back: the x whose exact product they compute.
std::vector<float> rounded_x(const std::vector<float>& x, int M, int K, int group, int x_bits) {
  std::vector<float> xr(x.size());
  std::vector<int16_t> q16(static_cast<size_t>(group));
  std::vector<int8_t> q8(static_cast<size_t>(group));
  for (int m = 0; m < M; ++m)
    for (int k0 = 0; k0 < K; k0 += group) {
      const int n = std::min(group, K - k0);
      const float* xs = x.data() + static_cast<size_t>(m) * K + k0;
      int sum = 0;
      const float dx = x_bits == 8 ? detail::round_to_int8_scalar(xs, n, q8.data(), &sum)
                                   : detail::round_to_int16_scalar(xs, n, q16.data(), &sum);
      for (int i = 0; i < n; ++i)
        xr[static_cast<size_t>(m) * K + k0 + i] =
            dx * (x_bits == 8 ? q8[static_cast<size_t>(i)] : q16[static_cast<size_t>(i)]);
    }
  return xr;
}

// Re-allows AMX when a test that turned it off ends.
struct AmxAllowedAfter {
  ~AmxAllowedAfter() { detail::set_amx_allowed(true); }
};

// The int8-x prefill kernel (prefill_x_bits() == 8) computes exactly the product with x replaced by
// its int8 rounding (round_to_int8_scalar per row and group): against the fp64 reference on that
// rounded x the error is fp32 rounding only (a wrong code, lane or scale is of the size of y), for
// every width the ISA's kernel takes (AVX-512 VNNI: 2/3/4/8 bits; AVX2: 2/3/4), canonical and
// row-tiled (the tiled copy's panel gives the canonical bits), and at any thread count. Runs where a
// kernel exists.
TEST(QGemmCpuInt8X, EqualsTheReferenceOnRoundedX) {
  if (!isa_supported(Isa::kAvx512Vnni) && !isa_supported(Isa::kAvx2)) GTEST_SKIP() << "no int8-x kernel on this CPU";
  test::PrefillXBits x8(8);
  for (const Isa isa : {Isa::kAvx512Vnni, Isa::kAvx2}) {
    if (!isa_supported(isa)) continue;
    for (int bits : {2, 3, 4, 8}) {
      if (qgemm_x_bits(isa, 16, bits) != 8) continue;
      for (int group : {32, 64, 128}) {
        for (const Shape& s : std::vector<Shape>{{37, 576}, {61, 1000}}) {
          const QMatrix w = random_qmatrix(bits, group, s.N, s.K, 4000u + bits * group + s.K);
          for (int M : {16, 33, 128}) {
            SCOPED_TRACE("bits=" + std::to_string(bits) + " g=" + std::to_string(group) + " K=" + std::to_string(s.K) +
                         " M=" + std::to_string(M) + " isa=" + isa_name(isa));
            const std::vector<float> x = random_vec(static_cast<size_t>(M) * s.K, 5000u + M, -2.f, 3.f);
            const std::vector<float> xr = rounded_x(x, M, s.K, group, 8);
            std::vector<float> ref(static_cast<size_t>(M) * s.N), y(ref.size()), y1(ref.size());
            qgemm_reference(xr.data(), M, w.view(), nullptr, ref.data());
            qgemm_cpu(x.data(), M, w.view(), nullptr, y.data(), 2, isa);
            EXPECT_LE(rel_error(y, ref), kTol);
            qgemm_cpu(x.data(), M, w.view(), nullptr, y1.data(), 1, isa);
            EXPECT_EQ(y1, y);
            if (bits == 4) {
              const QTiled t = tile(w.view());
              qgemm_tiled_cpu(x.data(), M, t.view(), nullptr, y1.data(), 2, isa);
              EXPECT_EQ(y1, y);
            }
            // And it is not the int16 kernel (whose result is that of the unrounded x within 1e-5).
            set_prefill_x_bits(16);
            qgemm_cpu(x.data(), M, w.view(), nullptr, y1.data(), 2, isa);
            set_prefill_x_bits(8);
            EXPECT_GT(rel_error(y1, ref), 10 * kTol);
          }
        }
      }
    }
  }
}

// The panel kernel on AMX tiles (where the CPU and OS allow them) gives the AVX-512 VNNI kernel's
// bits at either x width: the same exact int32 sums per group (int16 x: from its two bytes), the
// same fp32 epilogue. Every group size, partial groups (K = 172) and partial weight panels (N = 37,
// 61), canonical and row-tiled, 1 and 2 threads.
void expect_amx_matches_vnni(int x_bits) {
  test::PrefillXBits xb(x_bits);
  AmxAllowedAfter restore;
  for (int bits : {2, 3, 4, 8}) {
    for (int group : {32, 64, 128}) {
      for (const Shape& s : std::vector<Shape>{{37, 172}, {61, 576}, {100, 1536}}) {
        const QMatrix w = random_qmatrix(bits, group, s.N, s.K, 6000u + bits * group + s.K);
        const QTiled t = bits <= 4 ? tile(w.view()) : QTiled();
        const std::vector<float> bias = random_vec(s.N, 6100u + s.K);
        for (int M : {16, 45, 128}) {
          SCOPED_TRACE("bits=" + std::to_string(bits) + " g=" + std::to_string(group) + " N=" + std::to_string(s.N) +
                       " K=" + std::to_string(s.K) + " M=" + std::to_string(M));
          const std::vector<float> x = random_vec(static_cast<size_t>(M) * s.K, 6200u + M, -3.f, 2.f);
          std::vector<float> ya(static_cast<size_t>(M) * s.N, -1.f), yv(ya.size(), -2.f), y1(ya.size(), -3.f);
          detail::set_amx_allowed(true);
          qgemm_cpu(x.data(), M, w.view(), bias.data(), ya.data(), 2, Isa::kAvx512Vnni);
          qgemm_cpu(x.data(), M, w.view(), bias.data(), y1.data(), 1, Isa::kAvx512Vnni);
          EXPECT_EQ(y1, ya);
          detail::set_amx_allowed(false);
          qgemm_cpu(x.data(), M, w.view(), bias.data(), yv.data(), 2, Isa::kAvx512Vnni);
          EXPECT_EQ(ya, yv);
          if (bits <= 4) {  // the row-tiled copy, without and with AMX
            qgemm_tiled_cpu(x.data(), M, t.view(), bias.data(), y1.data(), 2, Isa::kAvx512Vnni);
            EXPECT_EQ(y1, yv);
            detail::set_amx_allowed(true);
            qgemm_tiled_cpu(x.data(), M, t.view(), bias.data(), y1.data(), 2, Isa::kAvx512Vnni);
            EXPECT_EQ(y1, yv);
          }
        }
      }
    }
  }
}

// Integer zeros (every block of 16 rows): the AMX kernel multiplies x with code - z (signed B) and
// drops the fp32 zero term, so it is no longer the VNNI kernel's bits; against the fp64 reference on
// x rounded as the kernel rounds it (per row and group, to int16 or int8) the error is fp32 rounding
// only, and threads and the row-tiled copy keep its bits. One fractional zero in a block (the
// matrices above) keeps the VNNI bits. (2 and 3 bits: B rows from a tile's pair-layout words and bit
// plane, or from canonical rows transposed.)
void expect_amx_integer_zeros_exact(int x_bits) {
  test::PrefillXBits xb(x_bits);
  AmxAllowedAfter restore;
  for (int bits : {2, 3, 4, 8}) {
    for (int group : {32, 64, 128}) {
      for (const Shape& s : std::vector<Shape>{{37, 172}, {61, 576}, {100, 1536}}) {
        const QMatrix w = random_qmatrix(bits, group, s.N, s.K, 7000u + bits * group + s.K, true);
        const QTiled t = bits <= 4 ? tile(w.view()) : QTiled();
        for (int M : {16, 45}) {
          SCOPED_TRACE("bits=" + std::to_string(bits) + " g=" + std::to_string(group) + " N=" + std::to_string(s.N) +
                       " K=" + std::to_string(s.K) + " M=" + std::to_string(M) + " x_bits=" + std::to_string(x_bits));
          const std::vector<float> x = random_vec(static_cast<size_t>(M) * s.K, 7200u + M, -3.f, 2.f);
          const std::vector<float> xr = rounded_x(x, M, s.K, group, x_bits);
          std::vector<float> ref(static_cast<size_t>(M) * s.N), ya(ref.size(), -1.f), y1(ref.size(), -2.f),
              yv(ref.size(), -3.f);
          qgemm_reference(xr.data(), M, w.view(), nullptr, ref.data());
          detail::set_amx_allowed(true);
          qgemm_cpu(x.data(), M, w.view(), nullptr, ya.data(), 2, Isa::kAvx512Vnni);
          EXPECT_LE(rel_error(ya, ref), 1e-6);
          qgemm_cpu(x.data(), M, w.view(), nullptr, y1.data(), 1, Isa::kAvx512Vnni);
          EXPECT_EQ(y1, ya);
          if (bits <= 4) {
            qgemm_tiled_cpu(x.data(), M, t.view(), nullptr, y1.data(), 2, Isa::kAvx512Vnni);
            EXPECT_EQ(y1, ya);
          }
          // The VNNI kernel: the same product within fp32 rounding, not the same bits.
          detail::set_amx_allowed(false);
          qgemm_cpu(x.data(), M, w.view(), nullptr, yv.data(), 2, Isa::kAvx512Vnni);
          EXPECT_LE(rel_error(yv, ref), 1e-6);
        }
      }
    }
  }
}

// A row of y does not depend on the other rows of x (nor on M): the scorers batch rows freely.
TEST(QGemmCpuAmx, RowsDoNotDependOnTheOtherRows) {
  if (!detail::amx_usable()) GTEST_SKIP() << "AMX-INT8 not available on this CPU / kernel: no AMX kernel";
  for (int x_bits : {16, 8}) {
    test::PrefillXBits xb(x_bits);
    for (bool integer_zeros : {false, true})
      for (int bits : {2, 3, 4, 8})
        for (const Shape& s : std::vector<Shape>{{64, 32}, {40, 40}, {32, 40}, {61, 576}, {300, 32}}) {
          const QMatrix w = random_qmatrix(bits, 32, s.N, s.K, 8000u + bits + s.K, integer_zeros);
          SCOPED_TRACE("x_bits=" + std::to_string(x_bits) + " intz=" + std::to_string(integer_zeros) + " bits=" +
                       std::to_string(bits) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K));
          const std::vector<float> x = random_vec(static_cast<size_t>(70) * s.K, 8100u + s.K, -3.f, 2.f);
          std::vector<float> y70(static_cast<size_t>(70) * s.N), y20(static_cast<size_t>(20) * s.N);
          qgemm_cpu(x.data(), 70, w.view(), nullptr, y70.data(), 2, Isa::kAvx512Vnni);
          qgemm_cpu(x.data(), 20, w.view(), nullptr, y20.data(), 2, Isa::kAvx512Vnni);
          EXPECT_EQ(std::vector<float>(y70.begin(), y70.begin() + 20 * s.N), y20);
          if (bits <= 4) {  // the row-tiled copy's panel
            const QTiled t = tile(w.view());
            qgemm_tiled_cpu(x.data(), 70, t.view(), nullptr, y70.data(), 2, Isa::kAvx512Vnni);
            qgemm_tiled_cpu(x.data(), 20, t.view(), nullptr, y20.data(), 2, Isa::kAvx512Vnni);
            EXPECT_EQ(std::vector<float>(y70.begin(), y70.begin() + 20 * s.N), y20) << "tiled";
          }
        }
  }
}

TEST(QGemmCpuInt8X, AmxWithIntegerZerosEqualsTheReferenceOnRoundedX) {
  if (!detail::amx_usable()) GTEST_SKIP() << "AMX-INT8 not available on this CPU / kernel: no AMX kernel";
  expect_amx_integer_zeros_exact(8);
}

TEST(QGemmCpuInt16X, AmxWithIntegerZerosEqualsTheReferenceOnRoundedX) {
  if (!detail::amx_usable()) GTEST_SKIP() << "AMX-INT8 not available on this CPU / kernel: no AMX kernel";
  expect_amx_integer_zeros_exact(16);
}

TEST(QGemmCpuInt8X, AmxMatchesVnniBitForBit) {
  if (!detail::amx_usable()) GTEST_SKIP() << "AMX-INT8 not available on this CPU / kernel: no AMX kernel to compare";
  expect_amx_matches_vnni(8);
}

TEST(QGemmCpuInt16X, AmxMatchesVnniBitForBit) {
  if (!detail::amx_usable()) GTEST_SKIP() << "AMX-INT8 not available on this CPU / kernel: no AMX kernel to compare";
  expect_amx_matches_vnni(16);
}

TEST(QGemmCpuInt8X, SetterTakesEightOrSixteen) {
  EXPECT_EQ(prefill_x_bits(), 16);
  EXPECT_THROW(set_prefill_x_bits(4), std::invalid_argument);
  EXPECT_THROW(set_prefill_x_bits(32), std::invalid_argument);
  EXPECT_EQ(prefill_x_bits(), 16);
  {
    test::PrefillXBits x8(8);
    EXPECT_EQ(prefill_x_bits(), 8);
    // Decode ignores it, and the fp32 paths.
    EXPECT_EQ(qgemm_x_bits(Isa::kAvx512Vnni, 1, 4), 16);
    EXPECT_EQ(qgemm_x_bits(Isa::kAvx512Vnni, 16, 4), 8);
    EXPECT_EQ(qgemm_x_bits(Isa::kAvx512Vnni, 16, 8), 8);
    EXPECT_EQ(qgemm_x_bits(Isa::kAvx512Vnni, 16, 3), 8);
    EXPECT_EQ(qgemm_x_bits(Isa::kAvx512Vnni, 16, 2), 8);
    EXPECT_EQ(qgemm_x_bits(Isa::kAvx512, 16, 3), 32);
    EXPECT_EQ(qgemm_x_bits(Isa::kAvx2, 1, 4), 16);
    EXPECT_EQ(qgemm_x_bits(Isa::kAvx2, 16, 4), 8);
    EXPECT_EQ(qgemm_x_bits(Isa::kAvx2, 16, 2), 8);
    EXPECT_EQ(qgemm_x_bits(Isa::kAvx2, 16, 8), 16);  // vpmaddubsw's int16 sums would saturate
    EXPECT_EQ(qgemm_x_bits(Isa::kAvx512, 16, 4), 32);
  }
  EXPECT_EQ(prefill_x_bits(), 16);
}

TEST(QGemmCpuIsa, DetectionIsConsistent) {
  EXPECT_TRUE(isa_supported(Isa::kScalar));
  EXPECT_TRUE(isa_supported(Isa::kAuto));
  EXPECT_TRUE(isa_supported(best_isa()));
  if (isa_supported(Isa::kAvx512Vnni)) {
    EXPECT_TRUE(isa_supported(Isa::kAvx512));
  }
  if (isa_supported(Isa::kAvx512)) {
    EXPECT_TRUE(isa_supported(Isa::kAvx2));
    EXPECT_EQ(best_isa(), isa_supported(Isa::kAvx512Vnni) ? Isa::kAvx512Vnni : Isa::kAvx512);
  }
  std::printf("best ISA on this machine: %s\n", isa_name(best_isa()));
}

TEST(QGemmCpuThreads, DefaultThreadSetter) {
  const int before = default_num_threads();
  EXPECT_GE(before, 1);
  set_default_num_threads(3);
  EXPECT_EQ(default_num_threads(), 3);
  set_default_num_threads(0);
  EXPECT_EQ(default_num_threads(), before);
}

// ---- bad arguments ---------------------------------------------------------------------------

void expect_invalid(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception, expected one mentioning '" << needle << "'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  } catch (...) {
    ADD_FAILURE() << "wrong exception type, expected std::invalid_argument";
  }
}

TEST(QGemmCpuArgs, RejectsBadArguments) {
  const QMatrix w = random_qmatrix(4, 32, 8, 64, 1u);
  const QMatrixView v = w.view();
  std::vector<float> x(64 * 4, 1.f), y(8 * 4, 7.f);
  auto call = [&](const float* xp, int M, QMatrixView wv, float* yp, int threads = 0, Isa isa = Isa::kAuto) {
    return [=] { qgemm_cpu(xp, M, wv, nullptr, yp, threads, isa); };
  };
  expect_invalid(call(nullptr, 1, v, y.data()), "x");
  expect_invalid(call(x.data(), 1, v, nullptr), "y");
  expect_invalid(call(x.data(), 0, v, y.data()), "M");
  expect_invalid(call(x.data(), -3, v, y.data()), "M");
  expect_invalid(call(x.data(), 1, v, y.data(), -1), "num_threads");
  expect_invalid(call(x.data(), 1, v, y.data(), 0, static_cast<Isa>(42)), "isa");
  QMatrixView b = v;
  b.bits = 5;
  expect_invalid(call(x.data(), 1, b, y.data()), "bits");
  b = v;
  b.bits = 1;
  expect_invalid(call(x.data(), 1, b, y.data()), "bits");
  b = v;
  b.group = 48;
  expect_invalid(call(x.data(), 1, b, y.data()), "group");
  b = v;
  b.group = 256;
  expect_invalid(call(x.data(), 1, b, y.data()), "group");
  b = v;
  b.N = 0;
  expect_invalid(call(x.data(), 1, b, y.data()), "N");
  b = v;
  b.K = 0;
  expect_invalid(call(x.data(), 1, b, y.data()), "K");
  b = v;
  b.K = -5;
  expect_invalid(call(x.data(), 1, b, y.data()), "K");
  b = v;
  b.codes = nullptr;
  expect_invalid(call(x.data(), 1, b, y.data()), "codes");
  b = v;
  b.scales = nullptr;
  expect_invalid(call(x.data(), 1, b, y.data()), "scales");
  b = v;
  b.zeros = nullptr;
  expect_invalid(call(x.data(), 1, b, y.data()), "zeros");
  for (float f : y) EXPECT_EQ(f, 7.f);  // nothing written on error

  expect_invalid([&] { qgemm_reference(x.data(), 0, v, nullptr, y.data()); }, "M");
  expect_invalid([&] { gemm_dense_reference(x.data(), 1, nullptr, 8, 64, nullptr, y.data()); }, "W");
  expect_invalid([&] { gemm_dense_reference(x.data(), 1, x.data(), 0, 64, nullptr, y.data()); }, "N");
}

}  // namespace
}  // namespace llmc::kernels
