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

// Task sizes: a count of tasks that is a multiple of the threads and divides the units where one
// exists (2 to 8 a thread, nearest 4), so threads of one speed get the same work; else ~4 a thread;
// never more tasks than max_tasks or units; every unit in some task.
TEST(ThreadPool, UnitsPerTaskSplitsEvenly) {
  EXPECT_EQ(detail::units_per_task(36, 2, 36), 6);    // 6 tasks of 6 (was 8 tasks: 5 x 7 + 1)
  EXPECT_EQ(detail::units_per_task(60, 2, 60), 6);    // 10 tasks of 6 (6 and 10 tie: more tasks)
  EXPECT_EQ(detail::units_per_task(192, 2, 192), 24);  // 8 of 24
  EXPECT_EQ(detail::units_per_task(20, 2, 20), 2);    // 10 tasks of 2 (qkv on AMX: was 7 of 3, 3, .., 2)
  EXPECT_EQ(detail::units_per_task(48, 2, 12), 6);    // 8 of 6, max_tasks kept
  EXPECT_EQ(detail::units_per_task(48, 2, 3), 16);    // at most 3 tasks: no even count, ceil(48 / 3)
  EXPECT_EQ(detail::units_per_task(7, 2, 7), 1);      // no even count: ~4 a thread
  EXPECT_EQ(detail::units_per_task(1, 4, 1), 1);
  for (int units = 1; units <= 300; ++units)
    for (int threads : {1, 2, 3, 4, 8, 16})
      for (int max_tasks : {1, 2, 5, units}) {
        const int per = detail::units_per_task(units, threads, max_tasks), tasks = (units + per - 1) / per;
        ASSERT_GE(per, 1);
        ASSERT_LE(tasks, std::max(1, std::min(max_tasks, units))) << units << " " << threads << " " << max_tasks;
        if (threads > 1 && units % (4 * threads) == 0 && max_tasks == units) {
          ASSERT_EQ(tasks, 4 * threads) << units << " " << threads;
        }
      }
}

TEST(QGemmCpuArgs, RejectsOverlappingXAndY) {
  const QMatrix w = test::random_qmatrix(4, 32, 8, 64, 1u);
  std::vector<float> buf(64 + 8, 1.f);
  EXPECT_THROW(qgemm_cpu(buf.data(), 1, w.view(), nullptr, buf.data() + 60, 1), std::invalid_argument);
  EXPECT_NO_THROW(qgemm_cpu(buf.data(), 1, w.view(), nullptr, buf.data() + 64, 1));
}

}  // namespace
}  // namespace llmc::kernels
