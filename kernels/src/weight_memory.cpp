#include "llmc_kernels/weight_memory.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace llmc::kernels {

namespace {

bool huge_pages_allowed() {
  static const bool allowed = [] {
    const char* e = std::getenv("LLMC_HUGEPAGES");
    return e == nullptr || std::strcmp(e, "0") != 0;
  }();
  return allowed;
}

std::shared_ptr<uint8_t> aligned_buffer(size_t bytes) {
  const size_t n = (bytes + 63) / 64 * 64;
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(64, n));
  if (p == nullptr) throw std::bad_alloc();
  return std::shared_ptr<uint8_t>(p, [](uint8_t* q) { std::free(q); });
}

}  // namespace

std::shared_ptr<uint8_t> allocate_weight_buffer(size_t bytes, bool* advised) {
  if (bytes == 0) throw std::invalid_argument("allocate_weight_buffer: 0 bytes");
  if (advised) *advised = false;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (huge_pages_allowed()) {
    const size_t n = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
    // Map one huge page more than needed and cut to a 2 MiB-aligned start: mmap aligns to 4 KiB only.
    void* raw = ::mmap(nullptr, n + kHugePageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    const uintptr_t r = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t a = (r + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
    if (a > r) ::munmap(raw, a - r);
    if (const size_t tail = r + kHugePageBytes - a; tail > 0) ::munmap(reinterpret_cast<void*>(a + n), tail);
    auto* p = reinterpret_cast<uint8_t*>(a);
    const bool ok = ::madvise(p, n, MADV_HUGEPAGE) == 0;  // EINVAL: a kernel without THP; the pages stay 4 KiB
    if (advised) *advised = ok;
    return std::shared_ptr<uint8_t>(p, [n](uint8_t* q) { ::munmap(q, n); });
  }
#endif
  return aligned_buffer(bytes);
}

size_t collapse_to_huge_pages(const void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (!huge_pages_allowed() || p == nullptr) return 0;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uintptr_t lo = (a + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  const uintptr_t hi = (a + bytes) / kHugePageBytes * kHugePageBytes;
  if (hi <= lo) return 0;
  void* q = reinterpret_cast<void*>(lo);
  if (::madvise(q, hi - lo, MADV_HUGEPAGE) != 0) return 0;
#if !defined(MADV_COLLAPSE)
  constexpr int MADV_COLLAPSE = 25;  // <linux/mman.h>, Linux 6.1; older headers lack it
#endif
  return ::madvise(q, hi - lo, MADV_COLLAPSE) == 0 ? hi - lo : 0;
#else
  (void)p, (void)bytes;
  return 0;
#endif
}

}  // namespace llmc::kernels
