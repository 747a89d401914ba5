// The kernels' thread pool (detail::parallel_for, also used directly by the runtime) and
// qgemm_cpu under concurrent / nested use.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "llmc_kernels/qgemm.h"
#include "qgemm_impl.h"
#include "test_util.h"

namespace llmc::kernels {
namespace {

TEST(ThreadPool, RunsEveryTaskOnce) {
  for (int threads : {1, 2, 3, 8}) {
    for (int ntasks : {0, 1, 2, 7, 100}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(ntasks));
      detail::parallel_for(
          threads, ntasks, [](void* c, int t) { (*static_cast<std::vector<std::atomic<int>>*>(c))[t]++; }, &hits);
      for (int t = 0; t < ntasks; ++t) EXPECT_EQ(hits[t].load(), 1) << "threads=" << threads << " task=" << t;
    }
  }
}

TEST(ThreadPool, NestedCallRunsSerially) {
  std::atomic<int> count{0};
  detail::parallel_for(
      4, 8,
      [](void* c, int) {
        detail::parallel_for(
            4, 5, [](void* c2, int) { static_cast<std::atomic<int>*>(c2)->fetch_add(1); }, c);
      },
      &count);
  EXPECT_EQ(count.load(), 40);
}

TEST(ThreadPool, RethrowsTaskException) {
  EXPECT_THROW(detail::parallel_for(
                   3, 50,
                   [](void*, int t) {
                     if (t == 17) throw std::runtime_error("task 17");
                   },
                   nullptr),
               std::runtime_error);
  // The pool still works afterwards.
  std::atomic<int> count{0};
  detail::parallel_for(3, 10, [](void* c, int) { static_cast<std::atomic<int>*>(c)->fetch_add(1); }, &count);
  EXPECT_EQ(count.load(), 10);
}

TEST(ThreadPool, ConcurrentAndNestedQgemm) {
  const QMatrix w = test::random_qmatrix(4, 64, 150, 640, 3u);
  const std::vector<float> x = test::random_vec(640 * 3, 4u);
  std::vector<float> ref(3 * 150);
  qgemm_reference(x.data(), 3, w.view(), nullptr, ref.data());
  // Several user threads at once.
  std::vector<std::thread> users;
  std::vector<double> errs(4, 1.0);
  for (int u = 0; u < 4; ++u) {
    users.emplace_back([&, u] {
      std::vector<float> y(ref.size());
      for (int rep = 0; rep < 20; ++rep) qgemm_cpu(x.data(), 3, w.view(), nullptr, y.data(), 2);
      errs[u] = test::gemm_error(y, ref, x, 3, w.view(), Isa::kAuto);
    });
  }
  for (auto& t : users) t.join();
  for (double e : errs) EXPECT_LE(e, 1e-5);
  // qgemm_cpu from inside a pool task.
  struct Ctx {
    const QMatrix* w;
    const std::vector<float>* x;
    std::vector<std::vector<float>> ys;
  } ctx{&w, &x, std::vector<std::vector<float>>(4, std::vector<float>(ref.size()))};
  detail::parallel_for(
      2, 4,
      [](void* c, int t) {
        auto& k = *static_cast<Ctx*>(c);
        qgemm_cpu(k.x->data(), 3, k.w->view(), nullptr, k.ys[t].data(), 2);
      },
      &ctx);
  for (const auto& y : ctx.ys) EXPECT_LE(test::gemm_error(y, ref, x, 3, w.view(), Isa::kAuto), 1e-5);
}

TEST(QGemmCpuArgs, RejectsOverlappingXAndY) {
  const QMatrix w = test::random_qmatrix(4, 32, 8, 64, 1u);
  std::vector<float> buf(64 + 8, 1.f);
  EXPECT_THROW(qgemm_cpu(buf.data(), 1, w.view(), nullptr, buf.data() + 60, 1), std::invalid_argument);
  EXPECT_NO_THROW(qgemm_cpu(buf.data(), 1, w.view(), nullptr, buf.data() + 64, 1));
}

}  // namespace
}  // namespace llmc::kernels
