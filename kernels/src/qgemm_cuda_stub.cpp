// Built instead of cuda/qgemm_cuda.cu when CUDA is not available: same API, clean errors.
#include <stdexcept>

#include "llmc_kernels/qgemm_cuda.h"

namespace llmc::kernels {

bool cuda_compiled() { return false; }
bool cuda_available() { return false; }

void qgemm_cuda(const void*, DType, int, const QMatrixView&, const void*, void*, void*) {
  throw std::runtime_error("qgemm_cuda: llmc_kernels was built without CUDA (LLMC_HAVE_CUDA off)");
}

}  // namespace llmc::kernels
