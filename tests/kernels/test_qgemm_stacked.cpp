// qgemm_cpu_stacked: the product with matrices stacked by rows, without a stacked copy (the
// runtime's q/k/v and gate/up). Held bit for bit to qgemm_cpu on the stacked matrix (the same
// path computes every row the same way), which the other tests hold to the fp64 reference.
#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>
#include <vector>

#include "llmc_kernels/qgemm.h"
#include "test_util.h"

namespace llmc::kernels::test {
namespace {

// The parts stacked into one matrix (the copy the runtime used to make).
QMatrix stack_parts(const std::vector<QMatrix>& parts) {
  QMatrix m;
  int N = 0;
  for (const auto& p : parts) N += p.layout.N;
  m.layout = make_layout(parts[0].layout.bits, parts[0].layout.group, N, parts[0].layout.K);
  for (const auto& p : parts) {
    m.codes.insert(m.codes.end(), p.codes.begin(), p.codes.end());
    m.scales.insert(m.scales.end(), p.scales.begin(), p.scales.end());
    m.zeros.insert(m.zeros.end(), p.zeros.begin(), p.zeros.end());
  }
  return m;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(QGemmStacked, BitIdenticalToStackedMatrix) {
  // Row counts as in SmolLM2's q/k/v (576, 192, 192 scaled down) and gate/up, plus odd ones that
  // end tasks and micro tiles inside a part; K with a partial last group.
  const std::vector<std::vector<int>> shapes = {{48, 16, 16}, {37, 5, 70}, {96, 96}, {1, 1, 1}, {200}};
  int checked = 0;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni, Isa::kAuto}) {
    if (!isa_supported(isa)) continue;
    for (int bits : {2, 3, 4, 8}) {
      for (int group : {32, 64, 128}) {
        for (const auto& Ns : shapes) {
          const int K = group == 64 ? 576 : 200;
          std::vector<QMatrix> parts;
          std::vector<QMatrixView> views;
          for (size_t i = 0; i < Ns.size(); ++i)
            parts.push_back(random_qmatrix(bits, group, Ns[i], K, 1000u * bits + 17u * group + static_cast<uint32_t>(i)));
          for (const auto& p : parts) views.push_back(p.view());
          const QMatrix st = stack_parts(parts);
          const int N = st.layout.N;
          const auto bias = random_vec(static_cast<size_t>(N), 7);
          for (int M : {1, 3, 15, 16, 33}) {
            for (int threads : {1, 2, 3}) {
              const auto x = random_vec(static_cast<size_t>(M) * K, 11u * M + bits);
              std::vector<float> y0(static_cast<size_t>(M) * N), y1(y0.size(), -1.f);
              const float* b = (M % 2) ? bias.data() : nullptr;
              qgemm_cpu(x.data(), M, st.view(), b, y0.data(), threads, isa);
              qgemm_cpu_stacked(x.data(), M, views.data(), static_cast<int>(views.size()), b, y1.data(), threads, isa);
              ASSERT_TRUE(same_bits(y0, y1)) << "isa=" << isa_name(isa) << " bits=" << bits << " group=" << group
                                             << " parts=" << Ns.size() << " N0=" << Ns[0] << " M=" << M
                                             << " threads=" << threads;
              ++checked;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 0);
}

TEST(QGemmStacked, RejectsBadArguments) {
  const QMatrix a = random_qmatrix(4, 64, 8, 128, 1), b4 = random_qmatrix(4, 32, 8, 128, 2),
                c = random_qmatrix(2, 64, 8, 128, 3), d = random_qmatrix(4, 64, 8, 64, 4);
  const auto x = random_vec(128, 5);
  std::vector<float> y(16);
  for (const QMatrix* other : {&b4, &c, &d}) {
    const QMatrixView v[2] = {a.view(), other->view()};
    EXPECT_THROW(qgemm_cpu_stacked(x.data(), 1, v, 2, nullptr, y.data()), std::invalid_argument);
  }
  const QMatrixView v[2] = {a.view(), a.view()};
  EXPECT_THROW(qgemm_cpu_stacked(x.data(), 1, nullptr, 2, nullptr, y.data()), std::invalid_argument);
  EXPECT_THROW(qgemm_cpu_stacked(x.data(), 1, v, 0, nullptr, y.data()), std::invalid_argument);
  EXPECT_THROW(qgemm_cpu_stacked(nullptr, 1, v, 2, nullptr, y.data()), std::invalid_argument);
  EXPECT_THROW(qgemm_cpu_stacked(x.data(), 1, v, 2, nullptr, nullptr), std::invalid_argument);
  EXPECT_NO_THROW(qgemm_cpu_stacked(x.data(), 1, v, 2, nullptr, y.data()));
}

}  // namespace
}  // namespace llmc::kernels::test
