// Memory for weights the kernels stream on every token (the runtime engine's copies of the packed matrices).
//
// A decode reads every weight byte once per token, so with 4 KiB pages each 4 KiB of weights costs a
// TLB miss and a page walk: on a 2-vCPU Xeon VM (THP in madvise mode, Debian's default) SmolLM2's
// 4-bit decode ran 1.15-1.5x faster at 1 thread and 1.08-1.11x at 2 with the weights on 2 MiB pages
// (docs/measurements.md, "Weights on huge pages"). Linux backs anonymous memory with transparent huge
// pages in madvise mode only where MADV_HUGEPAGE asked before the pages are touched, and only whole
// 2 MiB-aligned pages: one buffer for all of a model's copies, rather than one allocation per matrix
// (most matrices are smaller than 2 MiB).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace llmc::kernels {

constexpr size_t kHugePageBytes = size_t{2} << 20;

// An uninitialized buffer of `bytes` (> 0), 64-byte aligned; freed with its last reference. On Linux
// (unless LLMC_HUGEPAGES=0: the A/B switch) an anonymous mapping, 2 MiB aligned, rounded up to whole
// 2 MiB pages and advised MADV_HUGEPAGE before its first touch; `*advised` (if given) says whether
// the advice was taken (false: no THP in this kernel, or elsewhere, aligned_alloc). Throws
// std::bad_alloc when out of memory, std::invalid_argument for bytes = 0.
std::shared_ptr<uint8_t> allocate_weight_buffer(size_t bytes, bool* advised = nullptr);

// For memory already written (a loaded matrix of its own allocation): asks Linux to back the whole
// 2 MiB pages inside [p, p + bytes) with huge pages now (MADV_HUGEPAGE, then MADV_COLLAPSE, Linux >=
// 6.1; elsewhere khugepaged may do it later). Returns the bytes of those pages whose collapse
// succeeded (0 off Linux, with LLMC_HUGEPAGES=0, or where no whole huge page lies inside).
size_t collapse_to_huge_pages(const void* p, size_t bytes);

}  // namespace llmc::kernels
