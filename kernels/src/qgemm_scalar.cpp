// Portable path: dequantize one weight row to fp32 (once), then dot it with every row of x.
#include <vector>

#include "llmc_kernels/qformat.h"
#include "qgemm_impl.h"

namespace llmc::kernels::detail {
namespace {

template <int BITS>
void dequant_row(const Problem& p, int n, float* out) {
  const uint8_t* row = p.codes + static_cast<size_t>(n) * p.row_bytes;
  const int bpg = p.group / kBlockCodes;
  for (int kb = 0; kb < p.Kp / kBlockCodes; ++kb) {
    uint32_t words[BITS];
    load_block_words(row + static_cast<size_t>(kb) * block_bytes(BITS), BITS, words);
    const size_t gi = static_cast<size_t>(n) * p.G + kb / bpg;
    const float s = fp16_to_fp32(p.scales[gi]);
    const float z = fp16_to_fp32(p.zeros[gi]);
    for (int c = 0; c < kBlockCodes; ++c) out[kb * kBlockCodes + c] = dequant(block_code<BITS>(words, c), s, z);
  }
}

float dot(const float* a, const float* b, int n) {
  // n is a multiple of 32; 8 partial sums (the compiler vectorizes this with baseline SSE2).
  float acc[8] = {};
  for (int k = 0; k < n; k += 8) {
    for (int i = 0; i < 8; ++i) acc[i] += a[k + i] * b[k + i];
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <int BITS>
void rows(const Problem& p, int n0, int n1) {
  thread_local std::vector<float> wrow;
  wrow.resize(static_cast<size_t>(p.Kp));
  for (int n = n0; n < n1; ++n) {
    dequant_row<BITS>(p, n, wrow.data());
    const float b = p.bias ? p.bias[n] : 0.f;
    for (int m = 0; m < p.M; ++m) {
      p.y[static_cast<size_t>(m) * p.N + n] = dot(p.xp + static_cast<size_t>(m) * p.Kp, wrow.data(), p.Kp) + b;
    }
  }
}

}  // namespace

void rows_scalar(const Problem& p, int n0, int n1) {
  switch (p.bits) {
    case 2: rows<2>(p, n0, n1); break;
    case 3: rows<3>(p, n0, n1); break;
    case 4: rows<4>(p, n0, n1); break;
    default: rows<8>(p, n0, n1); break;
  }
}

}  // namespace llmc::kernels::detail
