// Argument checks of qgemm_cuda, shared by the CUDA build and the no-CUDA stub.
#pragma once

#include "llmc_kernels/qgemm_cuda.h"

namespace llmc::kernels::detail {

// Throws std::invalid_argument naming the bad argument (pointers are only null-checked, plus the
// 16-byte alignment of w.codes).
void check_cuda_args(const void* x, DType dtype, int M, const QMatrixView& w, const void* y);

}  // namespace llmc::kernels::detail
