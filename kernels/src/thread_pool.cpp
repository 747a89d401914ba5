// Minimal persistent thread pool for the CPU kernels.
//
// Workers spin briefly after each job (a forward pass issues many small GEMMs back to back, and a
// condition-variable wake-up costs tens of microseconds, comparable to a whole M=1 GEMV), then
// block on a condition variable. The calling thread always takes part in the work.
//
// Both spin loops call sched_yield every 16 pauses: on an oversubscribed machine the scheduler
// may put the caller and a spinning worker on the same core, and without yielding each would
// burn its time slice waiting for the other (measured: every call took the full spin window,
// 300 us, under a load of 6 on 2 cores; with yields the round trip is ~1.6 us).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LLMC_PAUSE() _mm_pause()
#else
#define LLMC_PAUSE() std::this_thread::yield()
#endif

#include "qgemm_impl.h"

namespace llmc::kernels::detail {
namespace {

// Workers spin (yielding every few iterations) this long after a job before blocking.
constexpr auto kSpin = std::chrono::microseconds(1000);

// True on pool workers and on a caller while it runs a job: a nested parallel_for (e.g. a task
// that itself calls qgemm_cpu) then runs serially instead of deadlocking on the pool.
thread_local bool t_in_pool = false;

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  void run(int nthreads, int ntasks, void (*fn)(void*, int), void* ctx) {
    std::lock_guard<std::mutex> call(call_mu_);
    const int nworkers = std::min(nthreads, ntasks) - 1;
    // A new worker starts from the current epoch, so it takes part in the job published below
    // even if the thread only starts running after the publication.
    const uint64_t current = state_.load(std::memory_order_relaxed) >> 16;
    while (static_cast<int>(workers_.size()) < nworkers) {
      const int idx = static_cast<int>(workers_.size());
      workers_.emplace_back([this, idx, current] { worker_main(idx, current); });
    }
    fn_ = fn;
    ctx_ = ctx;
    ntasks_ = ntasks;
    next_.store(0, std::memory_order_relaxed);
    remaining_.store(nworkers, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lk(mu_);
      // state = epoch << 16 | number of participating workers (workers with idx < active).
      const uint64_t epoch = (state_.load(std::memory_order_relaxed) >> 16) + 1;
      state_.store(epoch << 16 | static_cast<uint64_t>(nworkers), std::memory_order_release);
    }
    cv_.notify_all();
    t_in_pool = true;
    work();
    t_in_pool = false;
    unsigned spins = 0;
    while (remaining_.load(std::memory_order_acquire) != 0) {
      LLMC_PAUSE();
      if ((++spins & 15u) == 0) std::this_thread::yield();  // let a co-scheduled worker run
    }
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

 private:
  // Runs tasks until none is left. A throwing task stops further tasks; the first exception is
  // rethrown to the caller of run().
  void work() {
    for (int t = next_.fetch_add(1, std::memory_order_relaxed); t < ntasks_;
         t = next_.fetch_add(1, std::memory_order_relaxed)) {
      try {
        fn_(ctx_, t);
      } catch (...) {
        std::lock_guard<std::mutex> lk(error_mu_);
        if (!error_) error_ = std::current_exception();
        next_.store(ntasks_, std::memory_order_relaxed);
      }
    }
  }

  void worker_main(int idx, uint64_t seen) {
    t_in_pool = true;
    for (;;) {
      uint64_t s = state_.load(std::memory_order_acquire);
      if ((s >> 16) == seen) {
        const auto t0 = std::chrono::steady_clock::now();
        unsigned i = 0;
        while (((s = state_.load(std::memory_order_acquire)) >> 16) == seen) {
          LLMC_PAUSE();
          if ((++i & 15u) == 0) {
            // On an oversubscribed machine the caller may be waiting for this very core.
            std::this_thread::yield();
            if (std::chrono::steady_clock::now() - t0 > kSpin) break;
          }
        }
        if ((s >> 16) == seen) {
          std::unique_lock<std::mutex> lk(mu_);
          cv_.wait(lk, [&] { return stop_ || (state_.load(std::memory_order_acquire) >> 16) != seen; });
          if (stop_) return;
          s = state_.load(std::memory_order_acquire);
        }
      }
      seen = s >> 16;
      if (idx < static_cast<int>(s & 0xffffu)) {
        work();
        remaining_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  std::mutex call_mu_;  // one job at a time
  std::mutex mu_;       // guards stop_ and the sleep/wake protocol
  std::condition_variable cv_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> state_{0};
  std::atomic<int> next_{0};
  std::atomic<int> remaining_{0};
  std::mutex error_mu_;
  std::exception_ptr error_;
  // Job fields: written by run() before publishing state_, read by participating workers only.
  void (*fn_)(void*, int) = nullptr;
  void* ctx_ = nullptr;
  int ntasks_ = 0;
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

int units_per_task(int units, int nthreads, int max_tasks) {
  units = std::max(units, 1);
  nthreads = std::max(nthreads, 1);
  max_tasks = std::max(1, std::min(max_tasks, units));
  const int want = std::min(4 * nthreads, max_tasks);
  int best = 0;
  for (int c = 2 * nthreads; c <= 8 * nthreads && c <= max_tasks; c += nthreads)
    if (units % c == 0 && (best == 0 || std::abs(c - want) <= std::abs(best - want))) best = c;
  return best > 0 ? units / best : (units + want - 1) / want;
}

void parallel_for(int nthreads, int ntasks, void (*fn)(void*, int), void* ctx) {
  if (ntasks <= 0) return;
  if (nthreads <= 1 || ntasks == 1 || t_in_pool) {
    for (int t = 0; t < ntasks; ++t) fn(ctx, t);
    return;
  }
  pool().run(std::min(nthreads, 65535), ntasks, fn, ctx);
}

}  // namespace llmc::kernels::detail
