#pragma once
// Mixtures of fake-quantized weights computed on the fly (the memory-lean supernet,
// docs/lean-supernet.md): no quantized copy of a weight is ever stored. One pass over a weight
// slice computes, per row and group, every bit option's RTN scale and zero (the rule of
// kernels::quantize_rtn) and the dequantized values, bit-exactly fake_quantize(W_slice, bits, group),
// and uses them at once:
//   out[n, c]     += sum_b coef[b] * colw[c] * Q_b(W)[n, c] + coef16 * colw16[c] * W[n, c]
//   dots[b][c]    += sum_n dW[n, c] * Q_b(W)[n, c]      (b < nq: the quantized options)
//   dots[nq][c]   += sum_n dW[n, c] * W[n, c]           (the 16-bit option, identity)
// Q_b's groups start at the slice's column 0 (as fake_quantize of the sliced matrix does).
#include <array>
#include <cstdint>

namespace llmc {

struct FakeMixSlice {
  static constexpr int kMaxOptions = 8;
  // W[n, c] = w[n * ldw + c]: float32, or bfloat16 bit patterns (uint16) when bf16.
  const void* w = nullptr;
  bool bf16 = false;
  int64_t ldw = 0;
  int64_t N = 0, K = 0;
  int group = 128;                        // quantization group of the slice (32, 64 or 128)
  int nq = 0;                             // quantized options (bits < 16)
  std::array<int, kMaxOptions> bits{};    // 2, 3, 4 or 8
  std::array<float, kMaxOptions> coef{};  // mixture weight of each quantized option
  const float* colw = nullptr;            // (K) column weights of the quantized options; null: all 1
  float coef16 = 0;                       // mixture weight of W itself
  const float* colw16 = nullptr;          // (K) column weights of W itself; null: all 1
};

// out: (N, ldo) float32 or null. dW: (N, ldd) float32 or null; with dW, dots: (nq + 1, K) doubles,
// accumulated into. Without dW, options whose coefficient is 0 are skipped (a one-hot choice costs
// one fake quantization). Rows are split over the ATen thread pool.
void fake_mix(const FakeMixSlice& s, float* out, int64_t ldo, const float* dW, int64_t ldd, double* dots);

}  // namespace llmc
