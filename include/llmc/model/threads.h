#pragma once
// Scoped libtorch (OpenMP) thread counts.
#include <ATen/Parallel.h>

#include <cstdlib>

namespace llmc {

// at::set_num_threads(n) for the scope (n <= 0 leaves the count alone); the previous count is
// restored on exit.
class ScopedTorchThreads {
 public:
  explicit ScopedTorchThreads(int n) : saved_(at::get_num_threads()), changed_(n > 0 && n != saved_) {
    if (changed_) at::set_num_threads(n);
  }
  ~ScopedTorchThreads() {
    if (changed_) at::set_num_threads(saved_);
  }
  ScopedTorchThreads(const ScopedTorchThreads&) = delete;
  ScopedTorchThreads& operator=(const ScopedTorchThreads&) = delete;
  int saved() const { return saved_; }

 private:
  int saved_;
  bool changed_;
};

// Whether idle OpenMP workers spin between parallel regions (libgomp's default active wait policy:
// OMP_WAIT_POLICY unset). On shared cores spinning workers starve the thread with serial work.
inline bool omp_workers_spin() { return std::getenv("OMP_WAIT_POLICY") == nullptr; }

}  // namespace llmc
