// The read-only bandwidth probe (kernels/membw.h): its sum is exact (so the reads cannot be skipped
// by the compiler and every byte counts), and the probe reports what it measured.
#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>
#include <vector>

#include "llmc_kernels/membw.h"

using namespace llmc::kernels;

TEST(ReadBandwidth, SumIsEveryByteAsWords) {
  for (size_t n : {0u, 1u, 7u, 8u, 31u, 32u, 33u, 100u, 4099u}) {
    std::vector<uint8_t> b(n);
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(i * 37u + 11u);
    uint64_t want = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, b.data() + i, 8);
      want += w;
    }
    for (; i < n; ++i) want += b[i];
    EXPECT_EQ(read_sum(b.data(), n), want) << n;
  }
}

TEST(ReadBandwidth, ProbeReportsItsRun) {
  const ReadBandwidth r = read_bandwidth(5000, 2, 3);  // rounded up to whole 4 KiB pages
  EXPECT_EQ(r.bytes, 8192u);
  EXPECT_EQ(r.threads, 2);
  EXPECT_EQ(r.passes, 3);
  EXPECT_GT(r.median_gbps, 0);
  EXPECT_GE(r.best_gbps, r.median_gbps);
  EXPECT_THROW(read_bandwidth(4095, 1, 1), std::invalid_argument);
  EXPECT_THROW(read_bandwidth(1 << 20, -1, 1), std::invalid_argument);
  EXPECT_THROW(read_bandwidth(1 << 20, 1, 0), std::invalid_argument);
}
