// Row-tiled 2/3/4-bit layout (qtiled.h) and its kernels against the fp64 reference of the canonical
// matrix. Error bound as in test_qgemm_cpu.cpp: max|y - ref| / max|ref| <= 1e-5.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "llmc_kernels/qgemm.h"
#include "llmc_kernels/qtiled.h"
#include "test_util.h"

namespace llmc::kernels {
namespace {

using namespace test;  // random_qmatrix, random_vec, rel_error

constexpr double kTol = 1e-5;  // the bound of test_qgemm_cpu.cpp

struct Shape {
  int N, K;
};
// N: one partial tile (13), several with a partial last one (37); K: one group, 172 (partial last
// group and block), 576 (SmolLM2: 18 of 20 blocks of g = 128 are real), 1100 (3 panels, the last
// partial; partial last group).
std::vector<Shape> shapes(int group) { return {{13, group}, {37, 172}, {37, 576}, {21, 1100}}; }

TEST(QTiled, LayoutSlicesCoverTheBufferFrontToBack) {
  for (int bits : {2, 3, 4})
    for (int g : {32, 64, 128})
      for (const Shape& s : shapes(g)) {
        const QTiledLayout l = make_tiled_layout(bits, g, s.N, s.K);
        EXPECT_EQ(l.tiles, (s.N + 15) / 16);
        EXPECT_EQ(l.blocks, (s.K + 31) / 32);
        EXPECT_EQ(l.panels, (l.blocks + 15) / 16);
        size_t next = 0;
        int blocks = 0, groups = 0;
        for (int p = 0; p < l.panels; ++p) {
          blocks += l.panel_blocks(p);
          groups += l.panel_groups(p);
          for (int t = 0; t < l.tiles; ++t) {
            EXPECT_EQ(l.slice_offset(p, t), next);
            EXPECT_EQ(l.slice_offset(p, t) % 64, 0u);
            next += l.slice_bytes(p);
          }
        }
        EXPECT_EQ(next, l.total_bytes);
        EXPECT_EQ(blocks, l.blocks);
        EXPECT_EQ(groups, l.groups);
        // Scale rows are 32-byte aligned (the kernel loads them with aligned 256-bit loads).
        for (int t = 0; t < l.tiles; ++t)
          for (int gi = 0; gi < l.groups; ++gi) {
            EXPECT_EQ(l.scales_offset(t, gi) % 32, 0u);
            EXPECT_EQ(l.zeros_offset(t, gi) % 32, 0u);
          }
      }
}

TEST(QTiled, TileUntileRoundTripIsExact) {
  uint32_t seed = 7;
  for (int bits : {2, 3, 4})
    for (int g : {32, 64, 128})
      for (const Shape& s : shapes(g)) {
        const QMatrix w = random_qmatrix(bits, g, s.N, s.K, ++seed);
        const QTiled t = tile(w.view());
        std::vector<uint8_t> back(static_cast<size_t>(s.N) * s.K, 0xff);
        untile_codes(t.view(), back.data());
        EXPECT_EQ(back, unpack_codes(w.view())) << "bits=" << bits << " g=" << g << " N=" << s.N << " K=" << s.K;
        // untile(): the whole canonical matrix (codes, scales, zeros) back, or a range of its rows.
        SCOPED_TRACE("bits=" + std::to_string(bits) + " g=" + std::to_string(g) + " N=" + std::to_string(s.N) +
                     " K=" + std::to_string(s.K));
        const QMatrix whole = untile(t.view());
        EXPECT_EQ(whole.codes, w.codes);
        EXPECT_EQ(whole.scales, w.scales);
        EXPECT_EQ(whole.zeros, w.zeros);
        // A row range (a part of a stacked matrix) is those rows of the canonical matrix.
        const int r0 = s.N / 3, rows = s.N - r0 - 1;
        const QMatrix part = untile(t.view(), r0, rows);
        const QLayout l = w.view().layout();
        ASSERT_EQ(part.layout.N, rows);
        EXPECT_TRUE(std::equal(part.codes.begin(), part.codes.end(), w.codes.begin() + r0 * l.row_bytes));
        EXPECT_TRUE(std::equal(part.scales.begin(), part.scales.end(), w.scales.begin() + r0 * l.groups_per_row));
        EXPECT_TRUE(std::equal(part.zeros.begin(), part.zeros.end(), w.zeros.begin() + r0 * l.groups_per_row));
      }
  const QTiled t = tile(random_qmatrix(2, 32, 20, 64, 1).view());
  EXPECT_THROW(untile(t.view(), 15, 6), std::invalid_argument);
  EXPECT_THROW(untile(t.view(), -1, 3), std::invalid_argument);
}

// (bits, group, isa)
class QTiledGemm : public ::testing::TestWithParam<std::tuple<int, int, Isa>> {};

TEST_P(QTiledGemm, MatchesFp64Reference) {
  const auto [bits, group, isa] = GetParam();
  if (!isa_supported(isa)) GTEST_SKIP() << isa_name(isa) << " not supported by this CPU";
  // M: 1..4 rows of x per pass, then several passes with remainders (5, 17, 128).
  const std::vector<int> Ms = {1, 2, 3, 4, 5, 17, 128};
  uint32_t seed = 3000u * bits + group;
  for (const Shape& s : shapes(group)) {
    const QMatrix w = random_qmatrix(bits, group, s.N, s.K, ++seed);
    const QTiled t = tile(w.view());
    const std::vector<float> bias = random_vec(s.N, ++seed);
    for (int M : Ms) {
      SCOPED_TRACE("bits=" + std::to_string(bits) + " g=" + std::to_string(group) + " N=" + std::to_string(s.N) +
                   " K=" + std::to_string(s.K) + " M=" + std::to_string(M) + " isa=" + isa_name(isa));
      const std::vector<float> x = random_vec(static_cast<size_t>(M) * s.K, ++seed);
      const float* b = (M % 2 == 1) ? bias.data() : nullptr;
      std::vector<float> ref(static_cast<size_t>(M) * s.N), y(ref.size(), -12345.f), y2(ref.size(), -1.f);
      qgemm_reference(x.data(), M, w.view(), b, ref.data());
      qgemm_tiled_cpu(x.data(), M, t.view(), b, y.data(), 2, isa);
      // On VNNI every width rounds x to int16 per (row, group) (4 bits at any M, 2/3 bits at M >= 16),
      // as the canonical integer kernels (test::gemm_error's bound); the other paths are fp32.
      EXPECT_LE(test::gemm_error(y, ref, x, M, w.view(), isa), kTol);
      {  // The same bits on one thread (one task takes every tile; 2 threads: a task per tile here).
        std::vector<float> y1(ref.size(), -3.f);
        qgemm_tiled_cpu(x.data(), M, t.view(), b, y1.data(), 1, isa);
        EXPECT_EQ(y1, y);
      }
      if ((isa == Isa::kAvx512Vnni || (isa == Isa::kAvx512 && bits < 4) || (isa == Isa::kAvx2 && bits == 4)) &&
          M >= kTiledMaxM) {
        // From M = 16 the canonical layout's panel kernel reads the tiled copy: the same weights,
        // the same order of operations, so the same bits as from the canonical matrix.
        std::vector<float> yc(ref.size(), -7.f);
        qgemm_cpu(x.data(), M, w.view(), b, yc.data(), 2, isa);
        EXPECT_EQ(y, yc);
      }
      // The overload given both layouts (bench_qgemm's decode timing): the tiled copy below 16 rows.
      qgemm_cpu(x.data(), M, w.view(), t.view(), b, y2.data(), 2, isa);
      EXPECT_LE(test::gemm_error(y2, ref, x, M, w.view(), isa), kTol);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, QTiledGemm,
                         ::testing::Combine(::testing::Values(2, 3, 4), ::testing::Values(32, 64, 128),
                                            ::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni)),
                         [](const auto& info) {
                           return "b" + std::to_string(std::get<0>(info.param)) + "_g" +
                                  std::to_string(std::get<1>(info.param)) + "_" + isa_name(std::get<2>(info.param));
                         });

// The zero point is folded into sums of x: an x with a large common offset makes the two terms
// of s * sum((q - c) x) + s * (c - z) * sum(x) large while y stays small. Centring the codes keeps
// the error within the bound even then (worst case here: z = 0 or 2^bits - 1 everywhere).
TEST(QTiled, ZeroPointFoldingStaysAccurateForOffsetInputs) {
  for (int bits : {2, 3}) {
    const int qmax = (1 << bits) - 1;
    for (float zero : {0.f, static_cast<float>(qmax), 1.f}) {
      const int N = 64, K = 4096, g = 128;
      std::vector<uint8_t> codes(static_cast<size_t>(N) * K);
      uint32_t st = 12345;
      for (auto& c : codes) {
        st = st * 1664525u + 1013904223u;
        c = static_cast<uint8_t>((st >> 24) % (qmax + 1));
      }
      const int G = K / g;
      std::vector<uint16_t> sc(static_cast<size_t>(N) * G, fp32_to_fp16(0.01f)), zr(sc.size(), fp32_to_fp16(zero));
      const QMatrix w = pack(bits, g, N, K, codes.data(), sc.data(), zr.data());
      const QTiled t = tile(w.view());
      const std::vector<float> x = random_vec(K, 99, 0.9f, 1.1f);  // mean 1: sum(x) ~ 4096
      std::vector<float> ref(N), y(N);
      qgemm_reference(x.data(), 1, w.view(), nullptr, ref.data());
      qgemm_tiled_cpu(x.data(), 1, t.view(), nullptr, y.data(), 1);
      EXPECT_LE(rel_error(y, ref), kTol) << "bits=" << bits << " zero=" << zero;
    }
  }
}

TEST(QTiled, ThreadCountsGiveTheSameResult) {
  const QMatrix w = random_qmatrix(3, 64, 300, 1100, 5);
  const QTiled t = tile(w.view());
  const std::vector<float> x = random_vec(3 * 1100, 6);
  std::vector<float> y1(3 * 300), y3(3 * 300);
  qgemm_tiled_cpu(x.data(), 3, t.view(), nullptr, y1.data(), 1);
  qgemm_tiled_cpu(x.data(), 3, t.view(), nullptr, y3.data(), 3);
  EXPECT_EQ(y1, y3);  // each tile is computed by one thread in the same order
  // The panel path (M >= 16 on AVX-512; the scalar path elsewhere): each output row by one thread.
  const std::vector<float> x40 = random_vec(40 * 1100, 7);
  std::vector<float> z1(40 * 300), z3(40 * 300);
  qgemm_tiled_cpu(x40.data(), 40, t.view(), nullptr, z1.data(), 1);
  qgemm_tiled_cpu(x40.data(), 40, t.view(), nullptr, z3.data(), 3);
  EXPECT_EQ(z1, z3);
}

// Which widths get tiled copies (the runtime and the LUT make them exactly there; every group).
TEST(QTiled, TiledFasterWidths) {
  const bool avx512 = best_isa() == Isa::kAvx512 || best_isa() == Isa::kAvx512Vnni;
  const bool vnni = best_isa() == Isa::kAvx512Vnni, avx2 = best_isa() == Isa::kAvx2;
  EXPECT_EQ(tiled_faster(2), avx512);
  EXPECT_EQ(tiled_faster(3), avx512);
  EXPECT_EQ(tiled_faster(4), vnni || avx2);
  EXPECT_FALSE(tiled_faster(8));
}

TEST(QTiled, BadArgumentsAreRejected) {
  const QMatrix w2 = random_qmatrix(2, 32, 20, 64, 1);
  const QMatrix w8 = random_qmatrix(8, 32, 20, 64, 1);
  const QTiled t = tile(w2.view());
  std::vector<float> x(64), y(20);
  EXPECT_THROW(make_tiled_layout(8, 32, 20, 64), std::invalid_argument);
  EXPECT_THROW(make_tiled_layout(2, 48, 20, 64), std::invalid_argument);
  EXPECT_THROW(make_tiled_layout(3, 32, 20, 0), std::invalid_argument);
  EXPECT_THROW(tile(w8.view()), std::invalid_argument);
  EXPECT_THROW(qgemm_tiled_cpu(nullptr, 1, t.view(), nullptr, y.data()), std::invalid_argument);
  EXPECT_THROW(qgemm_tiled_cpu(x.data(), 1, t.view(), nullptr, nullptr), std::invalid_argument);
  EXPECT_THROW(qgemm_tiled_cpu(x.data(), 0, t.view(), nullptr, y.data()), std::invalid_argument);
  EXPECT_THROW(qgemm_tiled_cpu(x.data(), 1, QTiledView{2, 32, 20, 64, nullptr}, nullptr, y.data()),
               std::invalid_argument);
  QTiledView misaligned = t.view();
  misaligned.data += 4;
  EXPECT_THROW(qgemm_tiled_cpu(x.data(), 1, misaligned, nullptr, y.data()), std::invalid_argument);
  std::vector<uint8_t> buf(make_tiled_layout(2, 32, 20, 64).total_bytes + 64);
  EXPECT_THROW(tile_into(w2.view(), buf.data() + (64 - reinterpret_cast<uintptr_t>(buf.data()) % 64) % 64 + 1),
               std::invalid_argument);
  // A tiled copy of another shape next to the canonical matrix.
  if (tiled_faster(2)) {
    const QMatrix other = random_qmatrix(2, 32, 21, 64, 2);
    const QTiled to = tile(other.view());
    EXPECT_THROW(qgemm_cpu(x.data(), 1, w2.view(), to.view(), nullptr, y.data()), std::invalid_argument);
  }
}

}  // namespace
}  // namespace llmc::kernels
