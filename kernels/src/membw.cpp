#include "llmc_kernels/membw.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>

#include "llmc_kernels/qgemm.h"
#include "llmc_kernels/weight_memory.h"
#include "qgemm_impl.h"  // detail::parallel_for: the kernels' own pool

namespace llmc::kernels {

uint64_t read_sum(const uint8_t* p, size_t n) {
  // Four independent accumulators, so the loop is bound by loads, not by one add chain. Plain
  // 64-bit loads suffice: on the 2-vCPU AVX2 VM one thread read 12.6 GB/s this way, what the 8-bit
  // GEMV reaches at best (docs/measurements.md).
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    uint64_t a, b, c, d;
    std::memcpy(&a, p + i, 8);
    std::memcpy(&b, p + i + 8, 8);
    std::memcpy(&c, p + i + 16, 8);
    std::memcpy(&d, p + i + 24, 8);
    s0 += a, s1 += b, s2 += c, s3 += d;
  }
  for (; i + 8 <= n; i += 8) {
    uint64_t a;
    std::memcpy(&a, p + i, 8);
    s0 += a;
  }
  for (; i < n; ++i) s0 += p[i];
  return s0 + s1 + s2 + s3;
}

namespace {

struct Probe {
  const uint8_t* p;
  size_t bytes;
  int threads;
  std::vector<uint64_t>* sums;  // one per thread: keeps the reads from being optimized away
};

void probe_task(void* c, int t) {
  const Probe& x = *static_cast<const Probe*>(c);
  const size_t lo = x.bytes * static_cast<size_t>(t) / static_cast<size_t>(x.threads) / 64 * 64;
  const size_t hi = t + 1 == x.threads ? x.bytes : x.bytes * static_cast<size_t>(t + 1) / static_cast<size_t>(x.threads) / 64 * 64;
  (*x.sums)[static_cast<size_t>(t)] += read_sum(x.p + lo, hi - lo);
}

}  // namespace

ReadBandwidth read_bandwidth(size_t bytes, int threads, int passes) {
  if (bytes < 4096) throw std::invalid_argument("read_bandwidth: bytes must be >= 4096");
  if (threads < 0) throw std::invalid_argument("read_bandwidth: threads must be >= 0");
  if (passes < 1) throw std::invalid_argument("read_bandwidth: passes must be >= 1");
  const int T = threads > 0 ? threads : default_num_threads();
  bytes = (bytes + 4095) / 4096 * 4096;
  // The memory the runtime streams its weights from (huge pages where Linux has them), so that a
  // decode's GB/s is compared with a read of the same kind of pages.
  const std::shared_ptr<uint8_t> buf = allocate_weight_buffer(bytes);
  for (size_t i = 0; i < bytes; ++i) buf.get()[i] = static_cast<uint8_t>(i * 131u + 7u);  // touches every page
  std::vector<uint64_t> sums(static_cast<size_t>(T), 0);
  Probe ctx{buf.get(), bytes, T, &sums};
  std::vector<double> gbps;
  for (int r = 0; r <= passes; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    detail::parallel_for(T, T, probe_task, &ctx);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) gbps.push_back(static_cast<double>(bytes) / s / 1e9);  // pass 0: warm-up (TLB, pool)
  }
  volatile uint64_t sink = 0;
  for (uint64_t s : sums) sink = sink + s;
  (void)sink;
  ReadBandwidth out;
  std::sort(gbps.begin(), gbps.end());
  out.best_gbps = gbps.back();
  out.median_gbps = gbps[(gbps.size() - 1) / 2];
  out.bytes = bytes;
  out.threads = T;
  out.passes = passes;
  return out;
}

}  // namespace llmc::kernels
