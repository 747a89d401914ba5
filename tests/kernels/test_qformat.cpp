// Packed format: fp16/bf16 conversions, layout sizes, block layouts, pack/unpack, the RTN
// quantizer and the dequantization reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "llmc_kernels/qformat.h"
#include "test_util.h"

namespace llmc::kernels {
namespace {

using test::random_qmatrix;
using test::random_vec;

// ---- fp16 / bf16 -----------------------------------------------------------------------------

TEST(Fp16, RoundTripsEveryHalf) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    const bool is_nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
    if (is_nan) {
      EXPECT_TRUE(std::isnan(f)) << h;
      const uint16_t back = fp32_to_fp16(f);
      EXPECT_EQ(back & 0x7c00u, 0x7c00u) << h;
      EXPECT_NE(back & 0x3ffu, 0u) << h;
    } else {
      EXPECT_EQ(fp32_to_fp16(f), h) << "half 0x" << std::hex << h;
    }
  }
}

TEST(Fp16, KnownValues) {
  EXPECT_EQ(fp16_to_fp32(0x3c00), 1.0f);
  EXPECT_EQ(fp16_to_fp32(0xc000), -2.0f);
  EXPECT_EQ(fp16_to_fp32(0x7bff), 65504.0f);
  EXPECT_EQ(fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(fp16_to_fp32(0x0400), std::ldexp(1.0f, -14));
  EXPECT_TRUE(std::isinf(fp16_to_fp32(0x7c00)));
  EXPECT_EQ(fp32_to_fp16(65519.0f), 0x7bff);  // rounds down to max
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7c00);  // ties to even -> inf
  EXPECT_EQ(fp32_to_fp16(1e9f), 0x7c00);
  EXPECT_EQ(fp32_to_fp16(-1e9f), 0xfc00);
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);                 // tie -> even (0)
  EXPECT_EQ(fp32_to_fp16(std::nextafter(std::ldexp(1.0f, -25), 1.f)), 1);  // just above -> 1
  EXPECT_EQ(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);           // tie -> even
  EXPECT_EQ(fp32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);       // tie -> even (up)
  EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("f16c"))) uint16_t hw_fp16(float f) {
  return static_cast<uint16_t>(_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0));
}

TEST(Fp16, MatchesF16cHardware) {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_F16C)) GTEST_SKIP() << "no F16C";
  std::mt19937 rng(3);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    uint32_t u = bits(rng);
    if (i % 2) u = (u & 0x807fffffu) | ((100u + (u >> 23) % 50u) << 23);  // exponents near the half range
    float f;
    std::memcpy(&f, &u, 4);
    if (std::isnan(f)) continue;
    ASSERT_EQ(fp32_to_fp16(f), hw_fp16(f)) << "bits 0x" << std::hex << u;
  }
}
#endif

TEST(Bf16, RoundTripAndRounding) {
  EXPECT_EQ(bf16_to_fp32(fp32_to_bf16(1.5f)), 1.5f);
  EXPECT_EQ(fp32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // tie -> even
  EXPECT_EQ(fp32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // tie -> even (up)
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_fp32(static_cast<uint16_t>(h));
    if (!std::isnan(f)) {
      EXPECT_EQ(fp32_to_bf16(f), h);
    }
  }
}

// ---- layout ----------------------------------------------------------------------------------

TEST(QLayout, Sizes) {
  const QLayout l = make_layout(3, 128, 37, 172);
  EXPECT_EQ(l.K_padded, 256);
  EXPECT_EQ(l.groups_per_row, 2);
  EXPECT_EQ(l.blocks_per_row, 8);
  EXPECT_EQ(l.row_bytes, 96u);
  EXPECT_EQ(l.code_bytes, 37u * 96u);
  EXPECT_EQ(l.scale_count, 74u);
  EXPECT_EQ(l.scale_bytes, 148u);
  EXPECT_EQ(l.total_bytes(), 37u * 96u + 2u * 148u);
  const QLayout s = make_layout(4, 128, 1536, 576);  // SmolLM2: 576 = 4.5 groups of 128
  EXPECT_EQ(s.K_padded, 640);
  EXPECT_EQ(s.row_bytes, 320u);
  for (int bits : {2, 3, 4, 8}) {
    for (int g : {32, 64, 128}) {
      const QLayout a = make_layout(bits, g, 5, g);
      EXPECT_EQ(a.K_padded, g);
      EXPECT_EQ(a.row_bytes, static_cast<size_t>(g) * bits / 8);
      EXPECT_EQ(a.row_bytes % block_bytes(bits), 0u);
    }
  }
}

TEST(QLayout, RejectsBadArguments) {
  EXPECT_THROW(make_layout(5, 32, 1, 1), std::invalid_argument);
  EXPECT_THROW(make_layout(1, 32, 1, 1), std::invalid_argument);
  EXPECT_THROW(make_layout(16, 32, 1, 1), std::invalid_argument);
  EXPECT_THROW(make_layout(4, 16, 1, 1), std::invalid_argument);
  EXPECT_THROW(make_layout(4, 96, 1, 1), std::invalid_argument);
  EXPECT_THROW(make_layout(4, 32, 0, 1), std::invalid_argument);
  EXPECT_THROW(make_layout(4, 32, 1, 0), std::invalid_argument);
  EXPECT_THROW(make_layout(4, 32, -1, 5), std::invalid_argument);
  try {
    make_layout(4, 48, 1, 1);
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("group"), std::string::npos) << e.what();
  }
}

// The documented bit positions of each block layout.
TEST(BlockLayout, DocumentedBitPositions) {
  {  // 2 bit pair layout: code c -> word (c%16)%2, bits 4*((c%16)/2) + 2*(c/16)
    uint32_t w[2] = {0, 0};
    block_set_code<2>(w, 0, 3);   // word 0 bits 0-1
    block_set_code<2>(w, 16, 1);  // word 0 bits 2-3
    block_set_code<2>(w, 5, 2);   // i=5: word 1, nibble 2 -> bits 8-9
    block_set_code<2>(w, 31, 3);  // i=15: word 1, nibble 7, upper half -> bits 30-31
    EXPECT_EQ(w[0], 0x7u);
    EXPECT_EQ(w[1], (2u << 8) | (3u << 30));
  }
  {  // 3 bit: low two bits as 2 bit, bit 2 in the plane word
    uint32_t w[3] = {0, 0, 0};
    block_set_code<3>(w, 17, 6);  // lo=2 at word 1 bits 2-3, hi plane bit 17
    EXPECT_EQ(w[0], 0u);
    EXPECT_EQ(w[1], 2u << 2);
    EXPECT_EQ(w[2], 1u << 17);
  }
  {  // 4 bit: code c -> word c%4, nibble c/4
    uint32_t w[4] = {0, 0, 0, 0};
    block_set_code<4>(w, 5, 0xa);   // word 1, nibble 1
    block_set_code<4>(w, 31, 0xf);  // word 3, nibble 7
    EXPECT_EQ(w[1], 0xa0u);
    EXPECT_EQ(w[3], 0xf0000000u);
  }
  {  // 8 bit: byte c
    uint32_t w[8] = {};
    block_set_code<8>(w, 6, 0xab);
    uint8_t bytes[32];
    std::memcpy(bytes, w, 32);
    EXPECT_EQ(bytes[6], 0xab);
  }
}

TEST(BlockLayout, SetGetRoundTripAllCodes) {
  std::mt19937 rng(5);
  for (int bits : {2, 3, 4, 8}) {
    for (int rep = 0; rep < 200; ++rep) {
      uint32_t w[8] = {};
      uint32_t q[32];
      for (int c = 0; c < 32; ++c) {
        q[c] = rng() & ((1u << bits) - 1u);
        block_set_code(bits, w, c, q[c]);
      }
      for (int c = 0; c < 32; ++c) ASSERT_EQ(block_code(bits, w, c), q[c]) << "bits=" << bits << " c=" << c;
    }
  }
}

// ---- pack / unpack ---------------------------------------------------------------------------

TEST(Pack, RoundTripIsExact) {
  std::mt19937 rng(9);
  for (int bits : {2, 3, 4, 8}) {
    for (int g : {32, 64, 128}) {
      for (auto [N, K] : std::vector<std::pair<int, int>>{{13, g}, {37, 172}, {5, 576}, {3, 1}, {2, 33}}) {
        std::vector<uint8_t> codes(static_cast<size_t>(N) * K);
        for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1u));
        const QLayout l = make_layout(bits, g, N, K);
        std::vector<uint16_t> sc(l.scale_count, 0x3c00), zc(l.scale_count, 0);
        const QMatrix m = pack(bits, g, N, K, codes.data(), sc.data(), zc.data());
        ASSERT_EQ(m.codes.size(), l.code_bytes);
        EXPECT_EQ(unpack_codes(m.view()), codes) << "bits=" << bits << " g=" << g << " N=" << N << " K=" << K;
        // Padding codes are zero.
        for (int n = 0; n < N; ++n) {
          for (int k = K; k < l.K_padded; ++k) {
            uint32_t w[8];
            load_block_words(m.codes.data() + block_offset(l.row_bytes, bits, n, k / 32), bits, w);
            ASSERT_EQ(block_code(bits, w, k % 32), 0u);
          }
        }
      }
    }
  }
}

// Stacking copies by rows equals packing the stacked codes, scales and zeros; one part is a copy.
TEST(Pack, StackedCopyEqualsPackingTheStackedRows) {
  std::mt19937 rng(4);
  for (int bits : {3, 8}) {
    const int K = 172, g = 64;
    const int rows[] = {5, 2, 7};
    std::vector<uint8_t> codes;
    std::vector<uint16_t> sc, zc;
    std::vector<QMatrix> parts;
    for (int N : rows) {
      std::vector<uint8_t> c(static_cast<size_t>(N) * K);
      for (auto& x : c) x = static_cast<uint8_t>(rng() & ((1u << bits) - 1u));
      const QLayout l = make_layout(bits, g, N, K);
      std::vector<uint16_t> s(l.scale_count), z(l.scale_count);
      for (auto& x : s) x = static_cast<uint16_t>(0x3000 + (rng() & 0xff));
      for (auto& x : z) x = static_cast<uint16_t>(rng() & 0x3ff);
      parts.push_back(pack(bits, g, N, K, c.data(), s.data(), z.data()));
      codes.insert(codes.end(), c.begin(), c.end());
      sc.insert(sc.end(), s.begin(), s.end());
      zc.insert(zc.end(), z.begin(), z.end());
    }
    const QMatrix ref = pack(bits, g, 14, K, codes.data(), sc.data(), zc.data());
    const QMatrixView v[] = {parts[0].view(), parts[1].view(), parts[2].view()};
    const QMatrix got = stacked_copy(v, 3);
    EXPECT_EQ(got.layout.N, 14);
    EXPECT_EQ(got.codes, ref.codes);
    EXPECT_EQ(got.scales, ref.scales);
    EXPECT_EQ(got.zeros, ref.zeros);
    const QMatrix one = stacked_copy(v + 1, 1);
    EXPECT_EQ(one.codes, parts[1].codes);
    EXPECT_EQ(one.scales, parts[1].scales);
  }
  const QMatrix a = random_qmatrix(3, 64, 4, 64, 1), b = random_qmatrix(4, 64, 4, 64, 2);
  const QMatrixView mixed[] = {a.view(), b.view()};
  EXPECT_THROW(stacked_copy(mixed, 2), std::invalid_argument);
  EXPECT_THROW(stacked_copy(nullptr, 1), std::invalid_argument);
}

TEST(Pack, RejectsCodesOutOfRangeAndNulls) {
  const std::vector<uint8_t> codes = {0, 1, 2, 8};  // 8 does not fit in 3 bits
  const std::vector<uint16_t> s(1, 0x3c00), z(1, 0);
  EXPECT_THROW(pack(3, 32, 1, 4, codes.data(), s.data(), z.data()), std::invalid_argument);
  EXPECT_NO_THROW(pack(4, 32, 1, 4, codes.data(), s.data(), z.data()));
  EXPECT_THROW(pack(4, 32, 1, 4, nullptr, s.data(), z.data()), std::invalid_argument);
  EXPECT_THROW(pack(4, 32, 1, 4, codes.data(), nullptr, z.data()), std::invalid_argument);
  EXPECT_THROW(pack(4, 32, 1, 4, codes.data(), s.data(), nullptr), std::invalid_argument);
  EXPECT_THROW(pack(5, 32, 1, 4, codes.data(), s.data(), z.data()), std::invalid_argument);
  QMatrixView v;
  EXPECT_THROW(unpack_codes(v), std::invalid_argument);
  EXPECT_THROW(dequantize(v), std::invalid_argument);
  EXPECT_THROW(quantize_rtn(nullptr, 1, 1, 4, 32), std::invalid_argument);
}

// ---- quantizer and dequantization --------------------------------------------------------------

TEST(QuantizeRtn, ErrorWithinHalfStep) {
  for (int bits : {2, 3, 4, 8}) {
    for (int g : {32, 64, 128}) {
      const int N = 7, K = 172;
      const std::vector<float> w = random_vec(static_cast<size_t>(N) * K, 21u + bits + g, -0.3f, 0.5f);
      const QMatrix q = quantize_rtn(w.data(), N, K, bits, g);
      const std::vector<float> d = dequantize(q.view());
      const std::vector<uint8_t> codes = unpack_codes(q.view());
      const QLayout l = q.layout;
      for (int n = 0; n < N; ++n) {
        for (int gi = 0; gi < l.groups_per_row; ++gi) {
          const float s = fp16_to_fp32(q.scales[n * l.groups_per_row + gi]);
          const float z = fp16_to_fp32(q.zeros[n * l.groups_per_row + gi]);
          EXPECT_GT(s, 0.f);
          EXPECT_EQ(z, std::round(z));  // integer zero point in [0, 2^bits - 1]
          EXPECT_GE(z, 0.f);
          EXPECT_LE(z, static_cast<float>((1 << bits) - 1));
          for (int k = gi * g; k < std::min(K, (gi + 1) * g); ++k) {
            const size_t i = static_cast<size_t>(n) * K + k;
            // Half a step (a little more for the fp16 rounding of the scale); codes clamped at
            // 0 or 2^bits - 1 can be off by up to one step because the zero point is rounded.
            const bool clamped = codes[i] == 0 || codes[i] == (1 << bits) - 1;
            EXPECT_LE(std::fabs(d[i] - w[i]), (clamped ? 1.0f : 0.5f) * s * 1.01f + 1e-7f)
                << "bits=" << bits << " g=" << g << " n=" << n << " k=" << k;
          }
        }
      }
    }
  }
}

TEST(QuantizeRtn, ExactCases) {
  // Zero rows quantize to exact zeros; values on the grid are reproduced exactly.
  const std::vector<float> zeros(64, 0.f);
  const QMatrix qz = quantize_rtn(zeros.data(), 1, 64, 4, 32);
  for (float v : dequantize(qz.view())) EXPECT_EQ(v, 0.f);
  std::vector<float> grid(32);
  for (int k = 0; k < 32; ++k) grid[k] = 0.25f * static_cast<float>(k % 16) - 1.0f;  // 16 levels, step 0.25
  const QMatrix qg = quantize_rtn(grid.data(), 1, 32, 4, 32);
  const std::vector<float> d = dequantize(qg.view());
  for (int k = 0; k < 32; ++k) EXPECT_EQ(d[k], grid[k]) << k;
  // A constant positive row keeps 0 representable and reproduces the constant.
  const std::vector<float> c(40, 0.75f);
  const QMatrix qc = quantize_rtn(c.data(), 1, 40, 2, 32);
  for (float v : dequantize(qc.view())) EXPECT_NEAR(v, 0.75f, 1e-3f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> bad = {1.f, nan};
  EXPECT_THROW(quantize_rtn(bad.data(), 1, 2, 4, 32), std::invalid_argument);
}

// The host/device helper dequant_at (used by the CUDA kernels) agrees with dequantize().
TEST(Dequantize, HostDeviceHelperMatchesReference) {
  for (int bits : {2, 3, 4, 8}) {
    for (int g : {32, 128}) {
      const QMatrix q = random_qmatrix(bits, g, 9, 172, 40u + bits + g);
      const std::vector<float> d = dequantize(q.view());
      const std::vector<uint8_t> codes = unpack_codes(q.view());
      const QLayout l = q.layout;
      for (int n = 0; n < 9; ++n) {
        for (int k = 0; k < 172; ++k) {
          const size_t gi = group_index(l.groups_per_row, g, n, k);
          const float ref = fp16_to_fp32(q.scales[gi]) * (static_cast<float>(codes[n * 172 + k]) - fp16_to_fp32(q.zeros[gi]));
          ASSERT_EQ(d[n * 172 + k], ref);
          ASSERT_EQ(dequant_at(q.view(), n, k), ref);
        }
      }
    }
  }
}

}  // namespace
}  // namespace llmc::kernels
