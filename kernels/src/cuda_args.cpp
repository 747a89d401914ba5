#include "cuda_args.h"

#include <cstdint>
#include <stdexcept>
#include <string>

namespace llmc::kernels::detail {

void check_cuda_args(const void* x, DType dtype, int M, const QMatrixView& w, const void* y) {
  validate(w, "qgemm_cuda");
  if (x == nullptr) throw std::invalid_argument("qgemm_cuda: x is null");
  if (y == nullptr) throw std::invalid_argument("qgemm_cuda: y is null");
  if (dtype != DType::kF16 && dtype != DType::kBF16) {
    throw std::invalid_argument("qgemm_cuda: dtype must be DType::kF16 or DType::kBF16");
  }
  if (M < 1 || M > (1 << 22)) {
    throw std::invalid_argument("qgemm_cuda: M must be in [1, 2^22] (got " + std::to_string(M) + ")");
  }
  if (reinterpret_cast<std::uintptr_t>(w.codes) % 16 != 0) {
    throw std::invalid_argument("qgemm_cuda: w.codes must be 16-byte aligned");
  }
}

}  // namespace llmc::kernels::detail
