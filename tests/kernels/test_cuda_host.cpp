// CUDA host API and the host/device helpers the CUDA kernels use (filled in with the CUDA work).
#include <gtest/gtest.h>

#include "llmc_kernels/qgemm_cuda.h"

TEST(CudaHost, CompiledFlagMatchesBuild) {
#if defined(LLMC_HAVE_CUDA)
  EXPECT_TRUE(llmc::kernels::cuda_compiled());
#else
  EXPECT_FALSE(llmc::kernels::cuda_compiled());
  EXPECT_FALSE(llmc::kernels::cuda_available());
#endif
}
