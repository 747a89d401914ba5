// Built instead of cuda/qgemm_cuda.cu when CUDA is not available: same API, clean errors.
#include <stdexcept>

#include "cuda_args.h"
#include "llmc_kernels/qgemm_cuda.h"

namespace llmc::kernels {

bool cuda_compiled() { return false; }
bool cuda_available() { return false; }

void qgemm_cuda(const void* x, DType dtype, int M, const QMatrixView& w, const void*, void* y, void*) {
  detail::check_cuda_args(x, dtype, M, w, y);  // bad arguments are reported as such everywhere
  throw std::runtime_error("qgemm_cuda: llmc_kernels was built without CUDA (LLMC_HAVE_CUDA off)");
}

}  // namespace llmc::kernels
