// kernels/weight_memory.h: the weight buffer on huge pages, and tiled copies sharing one buffer.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "llmc_kernels/qtiled.h"
#include "llmc_kernels/weight_memory.h"

using namespace llmc::kernels;

namespace {

// Whether this kernel has transparent huge pages (then MADV_HUGEPAGE is accepted whatever the mode).
bool kernel_has_thp() { return std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled").good(); }

// The VmFlags line of the mapping that holds address p (/proc/self/smaps), "" if none.
std::string vm_flags_of(const void* p) {
  std::ifstream f("/proc/self/smaps");
  std::string line;
  bool inside = false;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  while (std::getline(f, line)) {
    unsigned long lo = 0, hi = 0;
    char dash = 0;
    std::istringstream is(line);
    if (is >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = a >= lo && a < hi;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

}  // namespace

TEST(WeightMemory, HugePageAdvisedAlignedAndWritable) {
  EXPECT_THROW(allocate_weight_buffer(0), std::invalid_argument);
  const size_t n = 3 * kHugePageBytes + 5;
  bool advised = false;
  std::shared_ptr<uint8_t> b = allocate_weight_buffer(n, &advised);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.get()) % 64, 0u);
  std::memset(b.get(), 0x5a, n);  // every byte is ours
  EXPECT_EQ(b.get()[n - 1], 0x5a);
#if defined(__linux__)
  const char* env = std::getenv("LLMC_HUGEPAGES");
  if (env != nullptr && std::strcmp(env, "0") == 0) GTEST_SKIP() << "LLMC_HUGEPAGES=0";
  // A mapping of whole, aligned huge pages, advised (VmFlags "hg") where the kernel has THP.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.get()) % kHugePageBytes, 0u);
  EXPECT_EQ(advised, kernel_has_thp());
  if (advised) {
    const std::string flags = vm_flags_of(b.get());
    EXPECT_NE(flags.find(" hg"), std::string::npos) << flags;
  }
#endif
}

TEST(WeightMemory, TiledCopiesShareOneBuffer) {
  const QTiledLayout a = make_tiled_layout(4, 64, 48, 128), c = make_tiled_layout(2, 32, 16, 64);
  const size_t off = (a.total_bytes + 63) / 64 * 64;
  std::shared_ptr<uint8_t> buf = allocate_weight_buffer(off + c.total_bytes);
  QTiled ta = QTiled::within(buf, 0, a), tc = QTiled::within(buf, off, c);
  EXPECT_EQ(ta.view().data, buf.get());
  EXPECT_EQ(tc.view().data, buf.get() + off);
  EXPECT_EQ(tc.layout().bits, 2);
  EXPECT_EQ(buf.use_count(), 3);  // the copies keep the buffer alive
  const uint8_t* keep = tc.view().data;
  buf.reset();
  std::memset(tc.data(), 1, c.total_bytes);  // still ours
  EXPECT_EQ(keep[c.total_bytes - 1], 1);
  EXPECT_THROW(QTiled::within(nullptr, 0, a), std::invalid_argument);
  std::shared_ptr<uint8_t> b2 = allocate_weight_buffer(256);
  EXPECT_THROW(QTiled::within(b2, 8, c), std::invalid_argument);  // not 64-byte aligned
}

// A buffer written first (as a loaded matrix is), then collapsed: only its whole 2 MiB pages count,
// and its bytes are unchanged.
TEST(WeightMemory, CollapseCountsWholeHugePagesAndKeepsTheBytes) {
  const size_t n = 5 * kHugePageBytes;
  std::vector<uint8_t> v(n + kHugePageBytes);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(i * 7 + 3);
  EXPECT_EQ(collapse_to_huge_pages(v.data(), 1000), 0u);  // no whole huge page inside
  EXPECT_EQ(collapse_to_huge_pages(nullptr, n), 0u);
  const size_t got = collapse_to_huge_pages(v.data() + 100, n);
  EXPECT_EQ(got % kHugePageBytes, 0u);
  EXPECT_LE(got, n);
#if defined(__linux__)
  // At least 4 whole pages lie in any n bytes; where Linux collapsed any (6.1+ with THP), it was those.
  if (got > 0) {
    EXPECT_GE(got, 4 * kHugePageBytes);
  }
#endif
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], static_cast<uint8_t>(i * 7 + 3)) << i;
}
