// CUDA quantized GEMM (fp16 / bf16 activations). This header needs no CUDA header: the stream is
// passed as void* (a cudaStream_t, nullptr = the legacy default stream).
//
// The functions always exist. When llmc_kernels is built without CUDA (LLMC_HAVE_CUDA off),
// cuda_available() is false and qgemm_cuda() throws std::runtime_error.
#pragma once

#include "llmc_kernels/qformat.h"

namespace llmc::kernels {

enum class DType { kF16 = 0, kBF16 = 1 };

bool cuda_compiled();   // the library contains the CUDA kernels
bool cuda_available();  // cuda_compiled() and at least one usable device (never throws)

// y[M][N] = x[M][K] * dequant(W)[N][K]^T (+ bias[N]) on the current device, asynchronously on
// `stream`. x, bias and y have element type `dtype` (row-major, dense); bias may be nullptr.
// Accumulation is fp32; y is rounded to `dtype` once. M >= 1 (M <= 8 uses a GEMV-style kernel,
// larger M a tiled tensor-core kernel). All pointers (x, y, bias, w.codes, w.scales, w.zeros) are
// device pointers; w.codes must be 16-byte aligned.
// Throws std::invalid_argument for bad arguments (checked before anything touches the device) and
// std::runtime_error when CUDA is not compiled in, no device is present, or a launch fails.
void qgemm_cuda(const void* x, DType dtype, int M, const QMatrixView& w, const void* bias, void* y,
                void* stream = nullptr);

}  // namespace llmc::kernels
