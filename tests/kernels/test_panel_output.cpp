// The panel kernels' last step (qgemm_impl.h: y = yT^T + bias) in its AVX2 and AVX-512 forms against
// the scalar write_panel_output, bit for bit: row counts around the 8 / 16-row blocks, output ranges
// with and without whole blocks and tails, with and without bias, and -0 / NaN / inf entries (the
// same float add per element, so +0 + -0 and NaN payloads come out alike). Skipped per ISA on CPUs
// without it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "llmc_kernels/qgemm.h"
#include "qgemm_impl.h"

namespace llmc::kernels {
namespace {

void check(void (*fast)(const detail::Problem&, int, int), int M, int N, int n0, int n1, bool bias,
           std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-4.f, 4.f);
  const int Mp = (M + 15) / 16 * 16;
  std::vector<float> yT(static_cast<size_t>(N) * Mp), b(static_cast<size_t>(N));
  for (auto& v : yT) v = u(rng);
  for (auto& v : b) v = u(rng);
  // Special values at random places (also in the rows past M, which must not be written).
  for (int i = 0; i < 8 && !yT.empty(); ++i) {
    yT[rng() % yT.size()] = -0.f;
    b[rng() % b.size()] = -0.f;
  }
  yT[rng() % yT.size()] = std::numeric_limits<float>::quiet_NaN();
  yT[rng() % yT.size()] = -std::numeric_limits<float>::infinity();
  detail::Problem p;
  p.M = M;
  p.N = N;
  p.Mp = Mp;
  p.yT = yT.data();
  p.bias = bias ? b.data() : nullptr;
  const float sentinel = 12345.f;
  std::vector<float> want(static_cast<size_t>(M) * N, sentinel), got = want;
  p.y = want.data();
  detail::write_panel_output(p, n0, n1);
  p.y = got.data();
  fast(p, n0, n1);
  ASSERT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0)
      << "M " << M << " N " << N << " rows [" << n0 << ", " << n1 << ") bias " << bias;
}

void run_cases(Isa isa, void (*fast)(const detail::Problem&, int, int)) {
  if (!isa_supported(isa)) GTEST_SKIP() << isa_name(isa) << " not supported by this CPU";
  std::mt19937 rng(7);
  for (int M : {1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 128})
    for (int N : {1, 5, 8, 16, 23, 48, 61})
      for (bool bias : {false, true}) {
        check(fast, M, N, 0, N, bias, rng);
        if (N > 3) check(fast, M, N, 1, N - 2, bias, rng);  // a task's range: unaligned start, tail
      }
}

TEST(PanelOutput, Avx2MatchesScalarBitForBit) { run_cases(Isa::kAvx2, detail::write_panel_output_avx2); }
TEST(PanelOutput, Avx512MatchesScalarBitForBit) { run_cases(Isa::kAvx512, detail::write_panel_output_avx512); }

}  // namespace
}  // namespace llmc::kernels
