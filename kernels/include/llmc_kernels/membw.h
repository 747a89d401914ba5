// Read-only memory bandwidth: the limit a memory-bound GEMV can approach. A copy (memcpy) moves
// each byte twice (a read and a write), so "% of memcpy" overstates how close a kernel that only
// reads its weights is to the memory system's limit; this probe only reads, on the same thread
// pool as the kernels.
#pragma once

#include <cstddef>
#include <cstdint>

namespace llmc::kernels {

struct ReadBandwidth {
  double best_gbps = 0;    // the fastest pass: bytes / seconds / 1e9
  double median_gbps = 0;  // the median pass
  size_t bytes = 0;        // buffer size
  int threads = 0, passes = 0;
};

// Sums a buffer of `bytes` (rounded up to 4 KiB; from allocate_weight_buffer, as the runtime's weights;
// filled once, untimed) on `threads` threads of the
// kernels' pool (0 = default_num_threads()), each thread its contiguous slice, `passes` timed passes
// after one untimed one. Pick bytes well above the last-level cache to measure DRAM.
// Throws std::invalid_argument for bytes < 4096, threads < 0, passes < 1, and std::bad_alloc.
ReadBandwidth read_bandwidth(size_t bytes, int threads, int passes);

// The probe's inner loop, exposed for tests: the sum of the n bytes at p read as little-endian
// uint64 words (a tail of n % 8 bytes added byte by byte), mod 2^64.
uint64_t read_sum(const uint8_t* p, size_t n);

}  // namespace llmc::kernels
