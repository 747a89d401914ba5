// The runtime's vector helpers (src/runtime/simd.h) on every path this CPU has, against plain
// fp64 references: the vector exp within 4e-7 relative of std::exp (Cephes polynomial, ~2 ulp),
// SiLU * up within 1e-6, P V sums within 1e-6 of max |out|, and the attention built on them
// within 1e-5 of a naive fp64 softmax attention (masking, padding queries, GQA groups).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../../src/runtime/simd.h"
#include "llmc/runtime/ops.h"

using namespace llmc;

namespace {

std::vector<const rt::Simd*> paths() {
  std::vector<const rt::Simd*> v;
  for (const char* n : {"portable", "avx2", "avx512"})
    if (const rt::Simd* s = rt::simd_path(n)) v.push_back(s);
  return v;
}

std::vector<float> uniform(size_t n, float lo, float hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace

TEST(RuntimeSimd, ExpShiftSumMatchesStdExp) {
  const float inf = std::numeric_limits<float>::infinity();
  for (const rt::Simd* s : paths()) {
    // Arguments from -100 (flushed to 0) to +80, plus -inf (a masked score), odd length.
    std::vector<float> x = uniform(1001, -100.f, 80.f, 1);
    x[3] = -inf;
    x[500] = 0.f;
    std::vector<float> y = x;
    const float shift = 0.5f;
    const float sum = s->exp_shift_sum(y.data(), shift, static_cast<int64_t>(y.size()));
    double ref_sum = 0, worst = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double e = std::exp(static_cast<double>(x[i] - shift));  // the argument as computed, in fp32
      ref_sum += e;
      if (x[i] - shift < -87.33f) {
        EXPECT_LE(y[i], 1.2e-38f) << s->name << " x=" << x[i];  // 0 (vector) or tiny (std::exp)
        continue;
      }
      worst = std::max(worst, std::fabs(y[i] - e) / e);
    }
    EXPECT_EQ(y[3], 0.f) << s->name;
    EXPECT_LE(worst, 4e-7) << s->name;
    EXPECT_LE(std::fabs(sum - ref_sum) / ref_sum, 1e-6) << s->name;
  }
}

// NaN in, NaN out (a corrupt weight must reach the logits, where the first-forward check sees it);
// the clamps must not turn it into a finite value.
TEST(RuntimeSimd, ExpAndSiluPropagateNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const rt::Simd* s : paths()) {
    for (size_t at : {size_t(0), size_t(5), size_t(13)}) {  // vector lanes and the scalar tail
      std::vector<float> y = uniform(14, -3.f, 3.f, 4);
      y[at] = nan;
      const float sum = s->exp_shift_sum(y.data(), 0.f, static_cast<int64_t>(y.size()));
      EXPECT_TRUE(std::isnan(y[at])) << s->name << " at " << at;
      EXPECT_TRUE(std::isnan(sum)) << s->name << " at " << at;
      EXPECT_FALSE(std::isnan(y[at == 0 ? 1 : 0])) << s->name;  // the other lanes are untouched
      std::vector<float> g = uniform(14, -3.f, 3.f, 5), u(14, 1.f), out(14);
      g[at] = nan;
      s->silu_mul(g.data(), u.data(), out.data(), 14);
      EXPECT_TRUE(std::isnan(out[at])) << s->name << " at " << at;
    }
  }
}

TEST(RuntimeSimd, SiluMulMatchesReference) {
  for (const rt::Simd* s : paths()) {
    const std::vector<float> g = uniform(777, -100.f, 100.f, 2), u = uniform(777, -2.f, 2.f, 3);
    std::vector<float> out(g.size());
    s->silu_mul(g.data(), u.data(), out.data(), static_cast<int64_t>(g.size()));
    for (size_t i = 0; i < g.size(); ++i) {
      const double ref = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
      EXPECT_NEAR(out[i], ref, 1e-6 * std::max(1.0, std::fabs(ref))) << s->name << " g=" << g[i];
    }
    std::vector<float> inplace = g;  // out may alias g
    s->silu_mul(inplace.data(), u.data(), inplace.data(), static_cast<int64_t>(g.size()));
    EXPECT_EQ(inplace, out) << s->name;
  }
}

TEST(RuntimeSimd, WeightedRowSumMatchesReference) {
  for (const rt::Simd* s : paths()) {
    for (int64_t n : {64, 80, 7, 128}) {  // head_dim-like widths, one not a multiple of 16
      const int64_t rows = 37, ld = n + 3;
      const std::vector<float> V = uniform(static_cast<size_t>(rows * ld), -1.f, 1.f, 4), p = uniform(rows, 0.f, 1.f, 5);
      std::vector<float> out(static_cast<size_t>(n), -7.f);
      s->wsum(V.data(), ld, p.data(), rows, n, out.data());
      double mx = 0, err = 0;
      for (int64_t c = 0; c < n; ++c) {
        double ref = 0;
        for (int64_t r = 0; r < rows; ++r) ref += static_cast<double>(p[r]) * V[r * ld + c];
        mx = std::max(mx, std::fabs(ref));
        err = std::max(err, std::fabs(out[c] - ref));
      }
      EXPECT_LE(err, 1e-6 * mx) << s->name << " n=" << n;
    }
  }
}

// gemv_heads / wsum_heads (the query heads of one KV head at once) give the single calls' bits
// for every head count, row count around the 4-row blocks and width around the 16 / 64-column
// steps, on every path.
TEST(RuntimeSimd, HeadsCallsMatchSingleCallsBitForBit) {
  for (const rt::Simd* s : paths()) {
    for (int nh = 1; nh <= rt::Simd::kMaxHeads; ++nh)
      for (int64_t rows : {1, 3, 4, 7, 37})
        for (int64_t n : {64, 80, 7, 128, 16}) {
          const int64_t ld = n + 3, ldx = n + 5, ldp = rows + 2, ldo = n + 1;
          const std::vector<float> W = uniform(static_cast<size_t>(rows * n), -1.f, 1.f, 11);
          const std::vector<float> X = uniform(static_cast<size_t>(nh * ldx), -1.f, 1.f, 12);
          const std::vector<float> V = uniform(static_cast<size_t>(rows * ld), -1.f, 1.f, 13);
          const std::vector<float> P = uniform(static_cast<size_t>(nh * ldp), 0.f, 1.f, 14);
          std::vector<float> y(static_cast<size_t>(nh * ldp), -3.f), y1 = y;
          s->gemv_heads(W.data(), X.data(), ldx, nh, rows, n, y.data(), ldp);
          for (int h = 0; h < nh; ++h) s->gemv(W.data(), X.data() + h * ldx, rows, n, y1.data() + h * ldp);
          EXPECT_EQ(y, y1) << s->name << " gemv nh=" << nh << " rows=" << rows << " K=" << n;
          std::vector<float> o(static_cast<size_t>(nh * ldo), -3.f), o1 = o;
          s->wsum_heads(V.data(), ld, P.data(), ldp, nh, rows, n, o.data(), ldo);
          for (int h = 0; h < nh; ++h) s->wsum(V.data(), ld, P.data() + h * ldp, rows, n, o1.data() + h * ldo);
          EXPECT_EQ(o, o1) << s->name << " wsum nh=" << nh << " rows=" << rows << " n=" << n;
        }
  }
}

// mask_scale_max: every path gives the portable loop's scores bit for bit and its maximum (== : the
// sign of a zero maximum may differ), with masked keys, NaN and inf scores, ties and -0, at lengths
// around the 16-lane step; all masked: -inf; a NaN among the unmasked: NaN; a NaN masked: ignored.
TEST(RuntimeSimd, MaskScaleMaxMatchesThePortableLoop) {
  const rt::Simd* ref = rt::simd_path("portable");
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (const rt::Simd* s : paths()) {
    for (int64_t n : {1, 5, 15, 16, 17, 31, 32, 33, 100}) {
      for (int kind = 0; kind < 6; ++kind) {
        std::vector<float> r = uniform(static_cast<size_t>(n), -3.f, 3.f, 20 + kind);
        std::vector<char> mc(static_cast<size_t>(n));
        for (int64_t j = 0; j < n; ++j) mc[static_cast<size_t>(j)] = (j * 7 + kind) % 5 != 0;
        if (kind == 1) r[static_cast<size_t>(n / 2)] = nan;          // NaN, maybe masked
        if (kind == 2) r[static_cast<size_t>(n - 1)] = inf;          // +inf
        if (kind == 3) std::fill(mc.begin(), mc.end(), char{0});     // every key masked
        if (kind == 4) for (auto& v : r) v = (v > 0 ? 0.f : -0.f);   // zeros of both signs, ties
        if (kind == 5) { r[0] = nan; mc[0] = 1; }                    // an unmasked NaN
        std::unique_ptr<bool[]> mask(new bool[static_cast<size_t>(n)]);
        for (int64_t j = 0; j < n; ++j) mask[static_cast<size_t>(j)] = mc[static_cast<size_t>(j)] != 0;
        std::vector<float> r0 = r, r1 = r;
        const float m0 = ref->mask_scale_max(r0.data(), mask.get(), 0.125f, n);
        const float m1 = s->mask_scale_max(r1.data(), mask.get(), 0.125f, n);
        SCOPED_TRACE(std::string(s->name) + " n=" + std::to_string(n) + " kind=" + std::to_string(kind));
        EXPECT_EQ(0, std::memcmp(r0.data(), r1.data(), sizeof(float) * r0.size()));
        if (std::isnan(m0)) EXPECT_TRUE(std::isnan(m1));
        else EXPECT_EQ(m0, m1);
        if (kind == 3) EXPECT_EQ(m0, -inf);
        if (kind == 5) EXPECT_TRUE(std::isnan(m0));
      }
    }
  }
}

// rt::attention (whatever path simd() picked) against a naive fp64 softmax attention; 3 query heads
// per KV head (one pass of the heads calls) and 5 (4 + 1: Simd::kMaxHeads at a time).
class RuntimeAttention : public ::testing::TestWithParam<int64_t> {};
INSTANTIATE_TEST_SUITE_P(QueryHeads, RuntimeAttention, ::testing::Values(6, 10));
TEST_P(RuntimeAttention, MatchesNaiveSoftmax) {
  const int64_t nq = GetParam();
  const int64_t B = 2, T = 3, past = 5, nkv = 2, hd = 64, max_len = 12, S = past + T, g = nq / nkv;
  const std::vector<float> q = uniform(static_cast<size_t>(B * T * nq * hd), -1.f, 1.f, 6);
  const std::vector<float> k = uniform(static_cast<size_t>(B * nkv * max_len * hd), -1.f, 1.f, 7);
  const std::vector<float> v = uniform(static_cast<size_t>(B * nkv * max_len * hd), -1.f, 1.f, 8);
  // Row 1: the first 6 slots are padding, so its first query (slot 5) sees no key at all.
  std::vector<uint8_t> mask_bytes(static_cast<size_t>(B * S), 1);
  for (int64_t j = 0; j < 6; ++j) mask_bytes[S + j] = 0;
  std::vector<bool> visible(mask_bytes.begin(), mask_bytes.end());
  bool mask[B * S];
  for (int64_t i = 0; i < B * S; ++i) mask[i] = mask_bytes[i] != 0;
  std::vector<float> out(static_cast<size_t>(B * T * nq * hd), -5.f);
  rt::AttentionArgs a;
  a.q = q.data(), a.k = k.data(), a.v = v.data(), a.mask = mask, a.out = out.data();
  a.B = B, a.T = T, a.past = past, a.nq = nq, a.nkv = nkv, a.hd = hd, a.max_len = max_len;
  a.scale = 0.125f;
  rt::attention(a, 1);
  double mx = 0, err = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t hq = 0; hq < nq; ++hq) {
        const int64_t h = hq / g, last = past + t;
        const float* qr = q.data() + ((b * T + t) * nq + hq) * hd;
        const float* K = k.data() + (b * nkv + h) * max_len * hd;
        const float* V = v.data() + (b * nkv + h) * max_len * hd;
        std::vector<double> p(static_cast<size_t>(last + 1), 0.0);
        double m = -1e300, sum = 0;
        for (int64_t j = 0; j <= last; ++j) {
          if (!visible[b * S + j]) continue;
          double d = 0;
          for (int64_t c = 0; c < hd; ++c) d += static_cast<double>(qr[c]) * K[j * hd + c];
          p[j] = d * a.scale;
          m = std::max(m, p[j]);
        }
        for (int64_t j = 0; j <= last; ++j) {
          p[j] = visible[b * S + j] ? std::exp(p[j] - m) : 0.0;
          sum += p[j];
        }
        const float* o = out.data() + ((b * T + t) * nq + hq) * hd;
        for (int64_t c = 0; c < hd; ++c) {
          double ref = 0;
          if (sum > 0)
            for (int64_t j = 0; j <= last; ++j) ref += p[j] / sum * V[j * hd + c];
          mx = std::max(mx, std::fabs(ref));
          err = std::max(err, std::fabs(o[c] - ref));
        }
      }
  EXPECT_LE(err, 1e-5 * mx);
  // The padding query (row 1, t = 0) has no visible key: output exactly 0.
  for (int64_t c = 0; c < nq * hd; ++c) EXPECT_EQ(out[(1 * T + 0) * nq * hd + c], 0.f);
  // The T queries at once (query pairs where 2g heads fit one heads call) give the bits of T
  // one-query calls, each over the keys in its reach.
  for (int64_t t = 0; t < T; ++t) {
    std::vector<float> q1(static_cast<size_t>(B * nq * hd)), o1(q1.size(), -9.f);
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(q.data() + (b * T + t) * nq * hd, nq * hd, q1.data() + b * nq * hd);
    bool mask1[B * (past + T)];
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < past + t + 1; ++j) mask1[b * (past + t + 1) + j] = mask[b * S + j];
    rt::AttentionArgs a1 = a;
    a1.q = q1.data(), a1.out = o1.data(), a1.mask = mask1, a1.T = 1, a1.past = past + t;
    rt::attention(a1, 1);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < nq * hd; ++c)
        ASSERT_EQ(o1[b * nq * hd + c], out[(b * T + t) * nq * hd + c]) << "b=" << b << " t=" << t << " c=" << c;
  }
}

// The row-wise ops split over the kernels' threads (the engine passes its thread count) give the
// single-thread bits: rows are independent. Sizes on both sides of the split threshold (2^14 values),
// and M not a multiple of the thread count.
TEST(RuntimeOps, RowOpsOnThreadsMatchOneThreadBitForBit) {
  std::mt19937 rng(77);
  std::normal_distribution<float> nd(0.f, 2.f);
  for (int64_t M : {1, 7, 45, 128}) {
    const int64_t H = 576, I = 1536;
    std::vector<float> x(static_cast<size_t>(M * H)), w(static_cast<size_t>(H)), gu(static_cast<size_t>(M * 2 * I)),
        d(static_cast<size_t>(M * H));
    for (auto* v : {&x, &w, &gu, &d})
      for (auto& f : *v) f = nd(rng);
    for (int threads : {2, 3}) {
      SCOPED_TRACE("M=" + std::to_string(M) + " threads=" + std::to_string(threads));
      std::vector<float> y1(x.size(), -1.f), yt(x.size(), -2.f);
      rt::rms_norm_rows(x.data(), w.data(), M, H, 1e-5, y1.data());
      rt::rms_norm_rows(x.data(), w.data(), M, H, 1e-5, yt.data(), threads);
      EXPECT_EQ(0, std::memcmp(y1.data(), yt.data(), y1.size() * sizeof(float)));
      std::vector<float> s1(static_cast<size_t>(M * I), -1.f), st(s1.size(), -2.f);
      rt::swiglu_fused(gu.data(), M, I, s1.data());
      rt::swiglu_fused(gu.data(), M, I, st.data(), threads);
      EXPECT_EQ(0, std::memcmp(s1.data(), st.data(), s1.size() * sizeof(float)));
      std::vector<float> a1 = x, at = x;
      rt::add_inplace(a1.data(), d.data(), M * H);
      rt::add_inplace(at.data(), d.data(), M * H, threads);
      EXPECT_EQ(0, std::memcmp(a1.data(), at.data(), a1.size() * sizeof(float)));
      for (size_t i = 0; i < a1.size(); i += 997) EXPECT_EQ(a1[i], x[i] + d[i]);
    }
  }
}

// RMSNorm's fp64 sums of squares, rows in vector lanes: each path gives the portable loop's sums bit
// for bit (squares of floats are exact in fp64, and each lane adds in the loop's order), for row counts
// around the lane width, a row stride past the row, and NaN / inf / denormal / huge values.
TEST(RuntimeSimd, SumOfSquaresRowsMatchThePortableLoopBitForBit) {
  const rt::Simd* plain = rt::simd_path("portable");
  std::vector<float> x = uniform(40 * 600, -3.f, 3.f, 91);
  x[5] = std::numeric_limits<float>::quiet_NaN();
  x[600 * 3 + 17] = std::numeric_limits<float>::infinity();
  x[600 * 9 + 1] = 1e-42f;
  x[600 * 11 + 2] = 3e38f;
  for (size_t i = 600 * 20; i < 600 * 21; ++i) x[i] *= 1e7f;  // a row whose sum rounds at every add
  for (const rt::Simd* s : paths()) {
    for (int64_t rows : {1, 7, 8, 9, 17, 40}) {
      for (int64_t n : {1, 7, 576, 600}) {
        SCOPED_TRACE(std::string(s->name) + " rows=" + std::to_string(rows) + " n=" + std::to_string(n));
        std::vector<double> a(static_cast<size_t>(rows) + 1, -1.0), b(a.size(), -1.0);
        plain->sumsq_rows(x.data(), 600, rows, n, a.data());
        s->sumsq_rows(x.data(), 600, rows, n, b.data());
        EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(double)));  // b[rows] untouched too
      }
    }
  }
}

// Attention of one sequence (too few (row, KV head) pairs for the threads) runs in query chunks on
// threads: the bits of the one-thread call, for even and odd T, with and without a cache prefix,
// with segments, and for two rows.
TEST(RuntimeOps, AttentionInQueryChunksMatchesOneThreadBitForBit) {
  const int64_t nq = 9, nkv = 3, hd = 64;
  for (int64_t B : {1, 2})
    for (int64_t T : {40, 41})
      for (int64_t past : {0, 7})
        for (bool segs : {false, true}) {
          const int64_t S = past + T, max_len = S + 3;
          const std::vector<float> q = uniform(static_cast<size_t>(B * T * nq * hd), -1.f, 1.f, 21);
          const std::vector<float> k = uniform(static_cast<size_t>(B * nkv * max_len * hd), -1.f, 1.f, 22);
          const std::vector<float> v = uniform(static_cast<size_t>(B * nkv * max_len * hd), -1.f, 1.f, 23);
          std::unique_ptr<bool[]> mask(new bool[static_cast<size_t>(B * S)]);
          for (int64_t i = 0; i < B * S; ++i) mask[i] = i % S >= 2;  // two padding slots a row
          std::vector<int32_t> seg(static_cast<size_t>(B * T));
          for (int64_t i = 0; i < B * T; ++i) seg[i] = static_cast<int32_t>(i % T < 17 ? 0 : 1 + (i % T - 17) / 9);
          rt::AttentionArgs a;
          a.q = q.data(), a.k = k.data(), a.v = v.data(), a.mask = mask.get(), a.seg = segs ? seg.data() : nullptr;
          a.B = B, a.T = T, a.past = past, a.nq = nq, a.nkv = nkv, a.hd = hd, a.max_len = max_len, a.scale = 0.125f;
          std::vector<float> one(static_cast<size_t>(B * T * nq * hd), -7.f), two(one.size(), -8.f);
          a.out = one.data();
          rt::attention(a, 1);
          a.out = two.data();
          rt::attention(a, 2);
          ASSERT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0)
              << "B " << B << " T " << T << " past " << past << " segments " << segs;
        }
}

// attention_inputs (split, RoPE, cache append; rows on threads) against the three ops in turn on one
// thread, bit for bit, with a position past the RoPE table (computed from inv_freq).
TEST(RuntimeOps, AttentionInputsMatchTheOpsInTurnBitForBit) {
  const int64_t B = 2, T = 23, nq = 9, nkv = 3, hd = 64, half = hd / 2, M = B * T, past = 4, max_len = 40,
                max_pos = 30;
  std::vector<float> inv_freq(static_cast<size_t>(half)), cos, sin;
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(10000.f, -2.f * static_cast<float>(i) / hd);
  rt::rope_tables(inv_freq.data(), half, max_pos, &cos, &sin);
  std::vector<int64_t> pos(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) pos[m] = past + m % T + (m == M - 1 ? 20 : 0);  // the last one past max_pos
  const std::vector<float> qkv = uniform(static_cast<size_t>(M * (nq + 2 * nkv) * hd), -1.f, 1.f, 31);
  std::vector<float> q1(static_cast<size_t>(M * nq * hd)), k1(static_cast<size_t>(M * nkv * hd)), v1(k1.size());
  std::vector<float> q2(q1.size()), k2(k1.size()), v2(k1.size());
  std::vector<float> kc1(static_cast<size_t>(B * nkv * max_len * hd), 0.f), vc1(kc1.size(), 0.f), kc2(kc1), vc2(kc1);
  rt::split_qkv(qkv.data(), M, nq, nkv, hd, q1.data(), k1.data(), v1.data());
  rt::rope_rows(q1.data(), M, nq, hd, pos.data(), cos.data(), sin.data(), max_pos, inv_freq.data());
  rt::rope_rows(k1.data(), M, nkv, hd, pos.data(), cos.data(), sin.data(), max_pos, inv_freq.data());
  rt::kv_append(k1.data(), v1.data(), B, T, nkv, hd, past, max_len, kc1.data(), vc1.data());
  rt::AttentionInputs in;
  in.qkv = qkv.data(), in.q = q2.data(), in.k = k2.data(), in.v = v2.data();
  in.B = B, in.T = T, in.nq = nq, in.nkv = nkv, in.hd = hd;
  in.positions = pos.data(), in.cos = cos.data(), in.sin = sin.data(), in.inv_freq = inv_freq.data();
  in.max_pos = max_pos, in.past = past, in.max_len = max_len, in.kcache = kc2.data(), in.vcache = vc2.data();
  rt::attention_inputs(in, 2);
  EXPECT_EQ(std::memcmp(q1.data(), q2.data(), q1.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(kc1.data(), kc2.data(), kc1.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(vc1.data(), vc2.data(), vc1.size() * sizeof(float)), 0);
  // Separate q/k/v (no fused product): RoPE and append only.
  std::vector<float> kc3(kc1.size(), 0.f), vc3(kc1.size(), 0.f), q3(q1.size()), k3(k1.size()), v3(k1.size());
  rt::split_qkv(qkv.data(), M, nq, nkv, hd, q3.data(), k3.data(), v3.data());
  in.qkv = nullptr, in.q = q3.data(), in.k = k3.data(), in.v = v3.data(), in.kcache = kc3.data(), in.vcache = vc3.data();
  rt::attention_inputs(in, 2);
  EXPECT_EQ(std::memcmp(q1.data(), q3.data(), q1.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(kc1.data(), kc3.data(), kc1.size() * sizeof(float)), 0);
}
