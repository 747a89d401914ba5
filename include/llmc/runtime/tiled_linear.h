#pragma once
// Linears over the runtime engine's copies of packed matrices (RuntimeEngine::take_copied_linears):
// TiledLinear and PackedViewLinear. RuntimeLlama swaps them into its weights for the QuantizedLinears
// whose matrices the engine copied, so that each matrix is held once.
//
// TiledLinear: a packed 2/3-bit (4-bit on AVX-512 VNNI) linear held in the runtime's row-tiled layout
// alone (kernels/qtiled.h). Why: on AVX-512 CPUs the runtime engine computes 2/3-bit products from a
// row-tiled copy (decode 1.2-1.9x faster than the canonical layout; 4-bit ones on VNNI CPUs,
// docs/measurements.md; prefill reads it through the panel kernel at the canonical speed). Keeping
// the canonical matrix next to it doubled those matrices' memory.
//
// PackedViewLinear: a packed linear in the canonical layout whose codes, scales and zeros lie in the
// engine's weight buffer on huge pages (the matrices it reads in that layout: 8-bit ones; every width
// where the CPU has no tiled path).
//
// Both answer everything a Linear does: the layout (bits, group, bytes as stored) from a header,
// forward() on the engine's copy, dense_weight() through a temporary canonical matrix.
// packed_matrix() is for stages that read packed codes (export, QA-LoRA): it makes the canonical
// matrix on first use and keeps it (its memory comes back then, and only then).
#include <memory>
#include <mutex>

#include "llmc/model/linear.h"
#include "llmc_kernels/qtiled.h"

namespace llmc {

// What the two share: the canonical layout, and the canonical matrix made on demand.
class EngineCopyLinear : public Linear {
 public:
  int64_t in_features() const override { return layout_.K; }
  int64_t out_features() const override { return layout_.N; }
  at::Tensor dense_weight() const override;
  const kernels::QMatrix* packed_matrix() const override;
  const kernels::QLayout* packed_layout() const override { return &layout_; }
  // Whether packed_matrix() has made (and now holds) the canonical matrix.
  bool holds_canonical() const { return canonical_ != nullptr; }

 protected:
  explicit EngineCopyLinear(kernels::QLayout layout) : layout_(layout) {}
  virtual kernels::QMatrix make_canonical() const = 0;  // a fresh canonical copy of the matrix
  kernels::QLayout layout_;  // the canonical layout

 private:
  mutable std::once_flag once_;
  mutable std::unique_ptr<kernels::QMatrix> canonical_;
};

class TiledLinear final : public EngineCopyLinear {
 public:
  // Rows [row0, row0 + rows) of `tiled` (a part of a stacked matrix: q of q/k/v), or all of it.
  TiledLinear(std::shared_ptr<const kernels::QTiled> tiled, int row0, int rows);
  at::Tensor forward(const at::Tensor& x) override;  // x: (..., K) float32 or bfloat16; qgemm_tiled_cpu

 private:
  kernels::QMatrix make_canonical() const override;  // by untiling
  std::shared_ptr<const kernels::QTiled> tiled_;
  int row0_ = 0;
};

class PackedViewLinear final : public EngineCopyLinear {
 public:
  // `view` points into `buffer`, which this keeps alive.
  PackedViewLinear(std::shared_ptr<const uint8_t> buffer, kernels::QMatrixView view);
  at::Tensor forward(const at::Tensor& x) override;  // x: (..., K) float32 or bfloat16; qgemm_cpu

 private:
  kernels::QMatrix make_canonical() const override;  // by copying
  std::shared_ptr<const uint8_t> buffer_;
  kernels::QMatrixView view_;
};

}  // namespace llmc
