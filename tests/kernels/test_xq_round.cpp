// The AVX2 activation rounding of the int16 paths (qgemm_impl.h: round_to_int16_avx2,
// xq_panel_avx2, xq_fused_avx2 through prepare_xq / prepare_xq_panel with Isa::kAvx2) against the scalar reference, bit
// for bit: q, sum and dx for every length 1..256 and many kinds of input (round-half-even ties,
// zeros, negative zeros, NaN / inf, tiny and huge magnitudes), and the whole prepared buffers of
// both AVX2 paths. Skipped on CPUs without AVX2.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "llmc_kernels/qformat.h"
#include "llmc_kernels/qgemm.h"
#include "qgemm_impl.h"

namespace llmc::kernels {
namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Input kinds for one length n (each a different way to hit an edge of the rounding).
enum Kind {
  kUniform,     // uniform [-1, 1]
  kTies,        // max|x| = 32767 * 2^e, so inv = 2^-e exactly: every x is (k + 0.5) 2^e, a tie
  kTiesUnit,    // max|x| = 32767 (inv = 1): x = k + 0.5 for small k and the +-32766.5 tie
  kZeros,       // all +0 / -0
  kSomeZeros,   // uniform with zeros and negative zeros mixed in
  kOneNaN,      // uniform with one NaN
  kPosInf,      // uniform with one +inf
  kNegInf,      // uniform with one -inf
  kNaNOnly,     // all NaN (max over nothing finite)
  kTiny,        // subnormal / tiny magnitudes: 32767 / max|x| overflows to inf
  kHuge,        // magnitudes near FLT_MAX
  kOneHot,      // one nonzero value, the rest zero
  kKindCount
};

std::vector<float> make_input(Kind kind, int n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::uniform_int_distribution<int> pos(0, n - 1);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = u(rng);
  switch (kind) {
    case kUniform: break;
    case kTies: {
      const int e = std::uniform_int_distribution<int>(-20, 5)(rng);
      std::uniform_int_distribution<int> k(-32767, 32766);
      for (auto& v : x) v = std::ldexp(static_cast<float>(k(rng)) + 0.5f, e);
      x[static_cast<size_t>(pos(rng))] = std::ldexp(32767.f, e) * (rng() % 2 ? 1.f : -1.f);
      break;
    }
    case kTiesUnit: {
      std::uniform_int_distribution<int> k(-4, 3);
      for (auto& v : x) v = static_cast<float>(k(rng)) + 0.5f;
      if (n > 2) x[1] = -32766.5f;
      if (n > 3) x[2] = 32766.5f;
      x[static_cast<size_t>(pos(rng))] = 32767.f;
      break;
    }
    case kZeros:
      for (auto& v : x) v = rng() % 2 ? 0.f : -0.f;
      break;
    case kSomeZeros:
      for (auto& v : x) {
        const unsigned r = rng() % 4;
        if (r == 0) v = 0.f;
        if (r == 1) v = -0.f;
      }
      break;
    case kOneNaN: x[static_cast<size_t>(pos(rng))] = kNaN; break;
    case kPosInf: x[static_cast<size_t>(pos(rng))] = kInf; break;
    case kNegInf: x[static_cast<size_t>(pos(rng))] = -kInf; break;
    case kNaNOnly:
      for (auto& v : x) v = kNaN;
      break;
    case kTiny: {
      const float scale = rng() % 2 ? std::numeric_limits<float>::denorm_min() * 1000.f : 1e-36f;
      for (auto& v : x) v = rng() % 3 == 0 ? 0.f : v * scale;
      break;
    }
    case kHuge:
      for (auto& v : x) v *= std::numeric_limits<float>::max();
      break;
    case kOneHot:
      for (auto& v : x) v = 0.f;
      x[static_cast<size_t>(pos(rng))] = u(rng) * 1e3f;
      break;
    default: break;
  }
  return x;
}

#define SKIP_WITHOUT_AVX2() \
  if (!isa_supported(Isa::kAvx2)) GTEST_SKIP() << "AVX2 (+FMA, F16C) not supported by this CPU: no AVX2 path to compare"

TEST(XqRoundAvx2, RoundToInt16BitExact) {
  SKIP_WITHOUT_AVX2();
  std::mt19937 rng(17);
  constexpr int16_t kGuard = 0x5a5a;
  for (int n = 1; n <= 256; ++n) {
    for (int kind = 0; kind < kKindCount; ++kind) {
      for (int rep = 0; rep < 3; ++rep) {
        SCOPED_TRACE("n=" + std::to_string(n) + " kind=" + std::to_string(kind) + " rep=" + std::to_string(rep));
        const std::vector<float> x = make_input(static_cast<Kind>(kind), n, rng);
        // 8 guard values past n: the AVX2 version must write exactly q[0, n).
        std::vector<int16_t> qs(static_cast<size_t>(n) + 8, kGuard), qv(qs.size(), kGuard);
        int ss = -1, sv = -2;
        const float ds = detail::round_to_int16_scalar(x.data(), n, qs.data(), &ss);
        const float dv = detail::round_to_int16_avx2(x.data(), n, qv.data(), &sv);
        ASSERT_EQ(bits_of(ds), bits_of(dv)) << "dx " << ds << " vs " << dv;
        ASSERT_EQ(ss, sv);
        ASSERT_EQ(0, std::memcmp(qs.data(), qv.data(), sizeof(int16_t) * qs.size()));
        for (int i = n; i < n + 8; ++i) ASSERT_EQ(qv[static_cast<size_t>(i)], kGuard);
      }
    }
  }
}

// The documented semantics of the reference itself, on a few hand-made inputs (so that the two
// versions cannot agree on something else).
TEST(XqRoundAvx2, ReferenceSemantics) {
  int16_t q[4];
  int s = 0;
  const float ties[4] = {0.5f, 1.5f, -2.5f, 32767.f};  // inv = 1: half to even
  EXPECT_EQ(detail::round_to_int16_scalar(ties, 4, q, &s), 1.f);
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[1], 2);
  EXPECT_EQ(q[2], -2);
  EXPECT_EQ(q[3], 32767);
  EXPECT_EQ(s, 32767);
  const float zeros[3] = {0.f, -0.f, 0.f};
  EXPECT_EQ(bits_of(detail::round_to_int16_scalar(zeros, 3, q, &s)), 0u);
  EXPECT_EQ(s, 0);
  const float bad[3] = {1.f, kInf, 2.f};
  EXPECT_TRUE(std::isnan(detail::round_to_int16_scalar(bad, 3, q, &s)));
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[1], -32767);
  EXPECT_EQ(q[2], 0);
  if (isa_supported(Isa::kAvx2)) {
    int sv = 0;
    int16_t qv[4];
    EXPECT_EQ(detail::round_to_int16_avx2(ties, 4, qv, &sv), 1.f);
    const int16_t want[4] = {0, 2, -2, 32767};
    EXPECT_EQ(0, std::memcmp(qv, want, sizeof qv));
    EXPECT_EQ(sv, 32767);
  }
}

// Fills a scratch buffer with a pattern, so that values the AVX2 path forgets to write show up.
void poison(detail::Scratch& s, size_t floats) {
  float* p = s.get(floats);
  std::memset(p, 0xa5, floats * sizeof(float));
}

std::vector<float> random_rows(int M, int K, std::mt19937& rng) {
  std::vector<float> x(static_cast<size_t>(M) * K);
  std::uniform_real_distribution<float> u(-3.f, 3.f);
  for (auto& v : x) v = u(rng);
  // Some rows with ties (x = k + 0.5 with a 32767 in every group), some with NaN / inf / zeros.
  for (int m = 0; m < M; ++m) {
    float* r = x.data() + static_cast<size_t>(m) * K;
    switch (m % 7) {
      case 1:
        for (int k = 0; k < K; ++k) r[k] = static_cast<float>(static_cast<int>(rng() % 9) - 4) + 0.5f;
        for (int k = 0; k < K; k += 32) r[k] = 32767.f;
        break;
      case 3: r[rng() % static_cast<unsigned>(K)] = kNaN; break;
      case 4: r[rng() % static_cast<unsigned>(K)] = -kInf; break;
      case 5:
        for (int k = 0; k < K; ++k) r[k] = 0.f;
        break;
      default: break;
    }
  }
  return x;
}

detail::Problem problem(int M, int K, int group, int bits) {
  const QLayout l = make_layout(bits, group, 16, K);
  detail::Problem p;
  p.M = M;
  p.K = K;
  p.N = 16;
  p.bits = bits;
  p.group = group;
  p.Kp = l.K_padded;
  p.Kb = l.real_blocks;
  p.G = l.groups_per_row;
  p.Mp = (M + 15) / 16 * 16;
  return p;
}

TEST(XqRoundAvx2, PanelBuffersBitExact) {
  SKIP_WITHOUT_AVX2();
  std::mt19937 rng(1717);
  for (int group : {32, 64, 128}) {
    for (int K : {1, 7, 31, 33, 100, 128, 172, 576, 577, 1000}) {
      for (int M : {1, 5, 8, 15, 16, 17, 23, 40}) {
        SCOPED_TRACE("g=" + std::to_string(group) + " K=" + std::to_string(K) + " M=" + std::to_string(M));
        const std::vector<float> x = random_rows(M, K, rng);
        detail::Problem ps = problem(M, K, group, 4), pv = ps;
        detail::Scratch qs, gs, qv, gv;
        poison(qs, static_cast<size_t>(ps.Kp) * ps.Mp);
        poison(qv, static_cast<size_t>(pv.Kp) * pv.Mp);
        poison(gv, 4 * static_cast<size_t>(pv.G) * pv.Mp);
        detail::prepare_xq_panel(x.data(), ps, qs, gs, Isa::kScalar);
        detail::prepare_xq_panel(x.data(), pv, qv, gv, Isa::kAvx2);
        const size_t nq = static_cast<size_t>(ps.Kp) * ps.Mp, ng = static_cast<size_t>(ps.G) * ps.Mp;
        ASSERT_EQ(0, std::memcmp(ps.xq2, pv.xq2, nq * sizeof(int16_t)));
        ASSERT_EQ(0, std::memcmp(ps.xdxT, pv.xdxT, ng * sizeof(float)));
        ASSERT_EQ(0, std::memcmp(ps.xdxsT, pv.xdxsT, ng * sizeof(float)));
      }
    }
  }
}

TEST(XqRoundAvx2, FusedBuffersBitExact) {
  SKIP_WITHOUT_AVX2();
  std::mt19937 rng(7171);
  for (int bits : {2, 3, 4, 8}) {
    for (int group : {32, 64, 128}) {
      for (int K : {1, 33, 172, 576}) {
        for (int M : {1, 3, 15}) {
          SCOPED_TRACE("b=" + std::to_string(bits) + " g=" + std::to_string(group) + " K=" + std::to_string(K) +
                       " M=" + std::to_string(M));
          const std::vector<float> x = random_rows(M, K, rng);
          detail::Problem ps = problem(M, K, group, bits), pv = ps;
          detail::Scratch qs, gs, qv, gv;
          poison(qv, static_cast<size_t>(M) * ps.Kp);  // >= M * xq_row / 2
          poison(gv, 2 * static_cast<size_t>(M) * ps.G);
          detail::prepare_xq(x.data(), ps, qs, gs, Isa::kScalar);
          detail::prepare_xq(x.data(), pv, qv, gv, Isa::kAvx2);
          ASSERT_EQ(ps.xq_row, pv.xq_row);
          const size_t ng = static_cast<size_t>(M) * ps.G;
          ASSERT_EQ(0, std::memcmp(ps.xq, pv.xq, static_cast<size_t>(M) * ps.xq_row * sizeof(int16_t)));
          ASSERT_EQ(0, std::memcmp(ps.xdx, pv.xdx, ng * sizeof(float)));
          ASSERT_EQ(0, std::memcmp(ps.xqs, pv.xqs, ng * sizeof(float)));
        }
      }
    }
  }
}

// The int8 rounding of the int8-x prefill kernel (prefill_x_bits() == 8): its documented semantics
// on hand-made inputs, then the AVX-512 panel buffers against the scalar reference, bit for bit.
TEST(XqRoundInt8, ReferenceSemantics) {
  int8_t q[4];
  int s = 0;
  const float ties[4] = {0.5f, 1.5f, -2.5f, 127.f};  // inv = 1: half to even
  EXPECT_EQ(detail::round_to_int8_scalar(ties, 4, q, &s), 1.f);
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[1], 2);
  EXPECT_EQ(q[2], -2);
  EXPECT_EQ(q[3], 127);
  EXPECT_EQ(s, 127);
  const float scaled[3] = {-2.f, 1.f, 0.01f};  // dx = 2 / 127: -127, 63.5 -> 64, 0.635 -> 1
  EXPECT_EQ(detail::round_to_int8_scalar(scaled, 3, q, &s), 2.f / 127.f);
  EXPECT_EQ(q[0], -127);
  EXPECT_EQ(q[1], 64);
  EXPECT_EQ(q[2], 1);
  EXPECT_EQ(s, -62);
  const float bad[3] = {1.f, kNaN, 2.f};
  EXPECT_TRUE(std::isnan(detail::round_to_int8_scalar(bad, 3, q, &s)));
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[1], -127);
  EXPECT_EQ(q[2], 0);
}

TEST(XqRoundInt8, PanelBuffersBitExact) {
  if (!isa_supported(Isa::kAvx512Vnni) && !isa_supported(Isa::kAvx2)) GTEST_SKIP() << "no int8-x path on this CPU";
  for (const Isa isa : {Isa::kAvx512Vnni, Isa::kAvx2}) {
    if (!isa_supported(isa)) continue;
    SCOPED_TRACE(isa_name(isa));
    std::mt19937 rng(2727);
    for (int group : {32, 64, 128}) {
      for (int K : {1, 7, 31, 33, 100, 128, 172, 576, 577, 1000}) {
        for (int M : {1, 5, 16, 17, 40}) {
          SCOPED_TRACE("g=" + std::to_string(group) + " K=" + std::to_string(K) + " M=" + std::to_string(M));
          std::vector<float> x = random_rows(M, K, rng);
          for (auto& v : x) v = std::isfinite(v) && std::fabs(v) > 1e4f ? 127.f : v;  // ties at inv = 1 (random_rows: 32767)
          detail::Problem ps = problem(M, K, group, 4), pv = ps;
          ps.Mp = pv.Mp = (M + 31) / 32 * 32;
          detail::Scratch qs, gs, qv, gv;
          poison(qv, static_cast<size_t>(pv.Kp) * pv.Mp / 4);
          poison(gv, 2 * static_cast<size_t>(pv.G) * pv.Mp);
          detail::prepare_xq8_panel(x.data(), ps, qs, gs, Isa::kScalar);
          detail::prepare_xq8_panel(x.data(), pv, qv, gv, isa);
          const size_t nq = static_cast<size_t>(ps.Kp) * ps.Mp, ng = static_cast<size_t>(ps.G) * ps.Mp;
          ASSERT_EQ(0, std::memcmp(ps.xq4, pv.xq4, nq));
          ASSERT_EQ(0, std::memcmp(ps.xdxT, pv.xdxT, ng * sizeof(float)));
          ASSERT_EQ(0, std::memcmp(ps.xdxsT, pv.xdxsT, ng * sizeof(float)));
        }
      }
    }
  }
}

// The AMX kernel's x bytes (Problem::xlo / xhi), their scalar reference: every xq2 value comes back
// as 256 hi + lo at its place (row-major, each 32-column block in amx_column order), every xq4 value
// as hi, and amx_column is a permutation of a block's columns (4 bits: byte j of word h's nibbles).
TEST(XqSplitBytes, ReferenceRebuildsTheInt16) {
  SKIP_WITHOUT_AVX2();
  for (int bits : {4, 8}) {
    std::vector<int> seen(32, 0);
    for (int b = 0; b < 32; ++b) ++seen[detail::amx_column(bits, b)];
    EXPECT_EQ(seen, std::vector<int>(32, 1));
  }
  EXPECT_EQ(detail::amx_column(4, 0), 0);
  EXPECT_EQ(detail::amx_column(4, 1), 8);    // byte 1 of word 0, low nibble: code 8
  EXPECT_EQ(detail::amx_column(4, 4), 4);    // byte 0 of word 0, high nibble: code 4
  EXPECT_EQ(detail::amx_column(4, 31), 31);  // byte 3 of word 3, high nibble: code 8 * 3 + 4 + 3
  EXPECT_EQ(detail::amx_column(8, 13), 13);
  std::mt19937 rng(3737);
  for (int bits : {4, 8}) {
    for (int group : {32, 64, 128}) {
      for (int K : {1, 33, 172, 576, 1000}) {
        for (int M : {1, 16, 17, 40}) {
          SCOPED_TRACE("bits=" + std::to_string(bits) + " g=" + std::to_string(group) + " K=" + std::to_string(K) +
                       " M=" + std::to_string(M));
          const std::vector<float> x = random_rows(M, K, rng);
          detail::Problem p = problem(M, K, group, bits);
          p.Mp = (M + 31) / 32 * 32;
          detail::Scratch qs, gs;
          detail::prepare_xq_panel(x.data(), p, qs, gs, Isa::kAvx2);
          const size_t n = static_cast<size_t>(p.Kp) * p.Mp;
          std::vector<uint8_t> lo(n, 0xa5);
          std::vector<int8_t> hi(n, 0x55);
          detail::amx_x_bytes(p, lo.data(), hi.data());
          for (int m = 0; m < p.Mp; ++m) {
            for (int o = 0; o < p.Kp; ++o) {
              const int c = o / 32 * 32 + detail::amx_column(bits, o % 32);
              const int16_t v = p.xq2[(static_cast<size_t>(c / 2) * p.Mp + m) * 2 + c % 2];
              const size_t i = static_cast<size_t>(m) * p.Kp + o;
              ASSERT_EQ(256 * hi[i] + lo[i], v) << "m=" << m << " o=" << o;
            }
          }
          detail::Scratch q8, g8;
          detail::Problem p8 = p;
          detail::prepare_xq8_panel(x.data(), p8, q8, g8, Isa::kScalar);
          detail::amx_x_bytes(p8, nullptr, hi.data());
          for (int m = 0; m < p8.Mp; ++m) {
            for (int o = 0; o < p8.Kp; ++o) {
              const int c = o / 32 * 32 + detail::amx_column(bits, o % 32);
              ASSERT_EQ(hi[static_cast<size_t>(m) * p8.Kp + o], p8.xq4[(static_cast<size_t>(c / 4) * p8.Mp + m) * 4 + c % 4]);
            }
          }
        }
      }
    }
  }
}

// The AMX kernel's x straight from x (xq_rows_avx512) against the reference chain: the scalar
// rounding (int16 into column pairs, int8 into quads), then amx_x_bytes; bytes, dx and dx sum(xq)
// bit for bit, with non-finite groups, partial groups and rows past M, at 1 and 2 threads.
TEST(XqSplitBytes, StraightFromXMatchesRoundThenSplit) {
  if (!isa_supported(Isa::kAvx512Vnni)) GTEST_SKIP() << "AVX-512 VNNI not supported by this CPU: no AMX x path to compare";
  std::mt19937 rng(4747);
  for (int x_bits : {8, 16}) {
    for (int bits : {4, 8}) {
      for (int group : {32, 64, 128}) {
        for (int K : {1, 33, 172, 576, 577, 1000}) {
          for (int M : {1, 16, 17, 40}) {
            SCOPED_TRACE("x_bits=" + std::to_string(x_bits) + " bits=" + std::to_string(bits) + " g=" +
                         std::to_string(group) + " K=" + std::to_string(K) + " M=" + std::to_string(M));
            std::vector<float> x = random_rows(M, K, rng);
            if (x_bits == 8)  // ties at inv = 1 (random_rows puts them at 32767)
              for (auto& v : x) v = std::isfinite(v) && std::fabs(v) > 1e4f ? 127.f : v;
            detail::Problem p = problem(M, K, group, bits);
            p.Mp = (M + 31) / 32 * 32;
            detail::Scratch qs, gs;
            if (x_bits == 8) detail::prepare_xq8_panel(x.data(), p, qs, gs, Isa::kScalar);
            else detail::prepare_xq_panel(x.data(), p, qs, gs, Isa::kScalar);
            const size_t n = static_cast<size_t>(p.Kp) * p.Mp, ng = static_cast<size_t>(p.G) * p.Mp;
            std::vector<uint8_t> lo(n, 0xa5), lov(n);
            std::vector<int8_t> hi(n, 0x55), hiv(n);
            detail::amx_x_bytes(p, lo.data(), hi.data());
            for (int threads : {1, 2}) {
              std::vector<float> dx(2 * ng, -7.f);
              std::fill(lov.begin(), lov.end(), 0xa5);  // int8: lo untouched
              std::fill(hiv.begin(), hiv.end(), -0x56);
              detail::xq_rows_avx512(x.data(), p, x_bits, lov.data(), hiv.data(), dx.data(), dx.data() + ng, threads);
              ASSERT_EQ(lo, lov);
              ASSERT_EQ(hi, hiv);
              ASSERT_EQ(0, std::memcmp(p.xdxT, dx.data(), ng * sizeof(float)));
              ASSERT_EQ(0, std::memcmp(p.xdxsT, dx.data() + ng, ng * sizeof(float)));
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace llmc::kernels
