#pragma once
// Weight quantization on top of the packed format in kernels/include/llmc_kernels/qformat.h:
// round-to-nearest (RTN) and GPTQ producers, fake quantization for the search (the exact values
// the packed kernels compute with), and the packed QuantizedLinear the runtime runs.
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

#include "llmc/model/arch.h"
#include "llmc/model/linear.h"
#include "llmc_kernels/qformat.h"

namespace llmc {

// effective_group(K, requested), the group a linear of K inputs is quantized with: model/arch.h.

// w: (N, K) float -> packed RTN quantization (kernels::quantize_rtn).
kernels::QMatrix quantize_rtn(const at::Tensor& w, int bits, int group);
// GGUF-exact groups. GGUF's Q4_1 stores a block as w = q*d + m (fp16 d and m). A group of ours,
// w = s*(q - z), is that block exactly when d = s and m = -s*z is itself an fp16 value: then
// q*d + m and s*(q - z) are the same real number and both exact in fp32. These variants pick, for
// every group, the fp16 scale nearest to the RTN scale (larger first) whose zero point z (from the
// same RTN rule) makes s*z an fp16 value; z = 0 always qualifies, and for b <= 4 bits a scale with
// at most 11 - b significant bits does, so s moves by at most ~2^-(11-b) relative.
// `export --format gguf|both` quantizes its 2-, 3- and 4-bit linears this way.
bool fp16_offset_exact(uint16_t scale_fp16, float zero);
// The scale (fp16 bits) and zero for a group with range [lo, hi] (lo <= 0 <= hi), starting from
// the RTN scale `scale_fp16`; writes the zero to *zero.
uint16_t fp16_offset_scale(uint16_t scale_fp16, double lo, int bits, float* zero);
// At 8 bits it quantizes symmetrically instead (z = 128, s = fp16(max|w| / 127)), so every block
// is exactly GGUF's Q8_0 (d = s, q - 128).
kernels::QMatrix quantize_rtn_fp16_offsets(const at::Tensor& w, int bits, int group);
// RTN with GGUF Q4_1's range rule: each group's own [min, max] (0 need not lie inside), s =
// fp16((max - min) / (2^bits - 1)), z = fp16(-min / s) (a fraction in general), q = clamp(round(w / s
// + z)). A weight matrix that already is Q4_1 at group 32 (a GGUF source) comes back with the same
// codes and scales, and its offsets to within fp16 rounding. A group whose z would exceed 64 in
// magnitude (a narrow range far from 0, where fp16 z is coarse) uses quantize_rtn's rule instead.
kernels::QMatrix quantize_rtn_minmax(const at::Tensor& w, int bits, int group);
// Packed -> (N, K) float32 dequantized weights.
at::Tensor dequantize(const kernels::QMatrix& q);
// Fake quantization Q_b(w): dequantize(quantize_rtn(w)), float32 (N, K); bits == 16 returns w.
at::Tensor fake_quantize(const at::Tensor& w, int bits, int group);
// Straight-through estimator: forward value wq, gradient of identity w.r.t. w.
at::Tensor straight_through(const at::Tensor& w, const at::Tensor& wq);

// GPTQ (Frantar et al. 2022): quantizes columns left to right, spreading each column's error over
// the not-yet-quantized columns through the inverse Hessian H = 2/n X^T X (K x K) of the layer's
// inputs. Group scales/zeros are chosen from the (error-updated) weights when a group starts,
// with the same rules as RTN, so the result is a normal packed matrix.
// W: (N, K), H: (K, K). damp: fraction of mean(diag(H)) added to the diagonal.
// fp16_offsets: choose every group's scale (and at 8 bits the symmetric zero) as
// quantize_rtn_fp16_offsets does.
kernels::QMatrix gptq_quantize(const at::Tensor& W, const at::Tensor& H, int bits, int group, double damp = 0.01,
                               bool fp16_offsets = false);

// Accumulates H = 2/n sum x^T x over calibration inputs x: (..., K).
class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t K);
  void add(const at::Tensor& x);
  at::Tensor hessian() const;  // (K, K) float64
  int64_t samples() const { return n_; }

 private:
  at::Tensor H_;
  int64_t n_ = 0;
};

// forward() of a linear over packed weights: x (..., K) float32 or bfloat16 -> (..., N) in x's
// dtype; gemm(x, M, y) computes the rows, x [M][K] and y [M][N] fp32. `who` names the layer in errors.
at::Tensor packed_forward(const at::Tensor& x, int64_t K, int64_t N, const char* who,
                          const std::function<void(const float* x, int M, float* y)>& gemm);

// A linear layer whose weights are packed b-bit codes; forward runs kernels::qgemm_cpu.
class QuantizedLinear final : public Linear {
 public:
  explicit QuantizedLinear(kernels::QMatrix q);
  at::Tensor forward(const at::Tensor& x) override;  // x: (..., K) float32 or bfloat16
  int64_t in_features() const override { return q_.layout.K; }
  int64_t out_features() const override { return q_.layout.N; }
  at::Tensor dense_weight() const override { return dequantize(q_); }
  const kernels::QMatrix& packed() const { return q_; }
  const kernels::QMatrix* packed_matrix() const override { return &q_; }

 private:
  kernels::QMatrix q_;
};

}  // namespace llmc
