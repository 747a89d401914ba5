#pragma once
// Linears over the runtime engine's copies of packed matrices (RuntimeEngine::take_copied_linears):
// TiledLinear (below) and PackedViewLinear (at the end).
//
// TiledLinear: a packed 2/3-bit (4-bit on AVX-512 VNNI) linear held in the runtime's row-tiled layout alone
// (kernels/qtiled.h).
//
// Why: on AVX-512 CPUs the runtime engine computes 2/3-bit products from a row-tiled copy (decode
// 1.2-1.9x faster than the canonical layout; 4-bit ones on VNNI CPUs, docs/measurements.md; prefill reads it through the panel kernel at the
// canonical speed). Keeping the canonical matrix next to it doubled those matrices' memory, so
// once the engine has its tiled copy, RuntimeLlama swaps each such QuantizedLinear of its weights
// for this class, which shares the engine's copy and holds nothing else.
//
// It answers everything a Linear does: the layout (bits, group, bytes as stored) from a header,
// forward() through qgemm_tiled_cpu, dense_weight() and packed_matrix() by untiling. packed_matrix()
// is for stages that read packed codes (export, QA-LoRA): it rebuilds the canonical matrix on
// first use and keeps it (its memory comes back then, and only then).
#include <memory>
#include <mutex>

#include "llmc/model/linear.h"
#include "llmc_kernels/qtiled.h"

namespace llmc {

class TiledLinear final : public Linear {
 public:
  // Rows [row0, row0 + rows) of `tiled` (a part of a stacked matrix: q of q/k/v), or all of it.
  TiledLinear(std::shared_ptr<const kernels::QTiled> tiled, int row0, int rows);
  at::Tensor forward(const at::Tensor& x) override;  // x: (..., K) float32 or bfloat16
  int64_t in_features() const override { return layout_.K; }
  int64_t out_features() const override { return layout_.N; }
  at::Tensor dense_weight() const override;
  const kernels::QMatrix* packed_matrix() const override;
  const kernels::QLayout* packed_layout() const override { return &layout_; }
  // Whether packed_matrix() has rebuilt (and now holds) the canonical matrix.
  bool holds_canonical() const { return canonical_ != nullptr; }

 private:
  std::shared_ptr<const kernels::QTiled> tiled_;
  int row0_ = 0;
  kernels::QLayout layout_;  // the canonical layout of rows [row0, row0 + N)
  mutable std::once_flag once_;
  mutable std::unique_ptr<kernels::QMatrix> canonical_;
};

// A packed linear in the canonical layout whose codes, scales and zeros lie in a buffer it shares:
// the runtime engine copies the matrices it reads in that layout (8-bit ones; every width where the
// CPU has no tiled path) into its weight buffer on huge pages, and RuntimeLlama swaps this in for
// the QuantizedLinear that held the matrix before, so each is held once. forward() runs qgemm_cpu
// on the view; packed_matrix() copies the matrix out on first use and keeps it (for stages that
// read packed codes: export, QA-LoRA).
class PackedViewLinear final : public Linear {
 public:
  // `view` points into `buffer`, which this keeps alive.
  PackedViewLinear(std::shared_ptr<const uint8_t> buffer, kernels::QMatrixView view);
  at::Tensor forward(const at::Tensor& x) override;  // x: (..., K) float32 or bfloat16
  int64_t in_features() const override { return layout_.K; }
  int64_t out_features() const override { return layout_.N; }
  at::Tensor dense_weight() const override;
  const kernels::QMatrix* packed_matrix() const override;
  const kernels::QLayout* packed_layout() const override { return &layout_; }
  // Whether packed_matrix() has made (and now holds) its own copy.
  bool holds_copy() const { return copy_ != nullptr; }

 private:
  std::shared_ptr<const uint8_t> buffer_;
  kernels::QMatrixView view_;
  kernels::QLayout layout_;
  mutable std::once_flag once_;
  mutable std::unique_ptr<kernels::QMatrix> copy_;
};

}  // namespace llmc
