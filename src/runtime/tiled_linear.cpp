#include "llmc/runtime/tiled_linear.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "llmc/core/error.h"
#include "llmc/quant/quant.h"
#include "llmc_kernels/qgemm.h"

namespace llmc {

TiledLinear::TiledLinear(std::shared_ptr<const kernels::QTiled> tiled, int row0, int rows)
    : tiled_(std::move(tiled)), row0_(row0) {
  LLMC_CHECK(tiled_ != nullptr, "TiledLinear: no tiled matrix");
  const kernels::QTiledLayout& l = tiled_->layout();
  LLMC_CHECK(row0 >= 0 && rows >= 1 && row0 + rows <= l.N, "TiledLinear: rows [{}, {}) outside [0, {})", row0,
             row0 + rows, l.N);
  layout_ = kernels::make_layout(l.bits, l.group, rows, l.K);
}

at::Tensor TiledLinear::forward(const at::Tensor& x) {
  const kernels::QTiledView t = tiled_->view();
  return packed_forward(x, layout_.K, layout_.N, "TiledLinear", [&](const float* xp, int M, float* yp) {
    if (row0_ == 0 && layout_.N == t.N) return kernels::qgemm_tiled_cpu(xp, M, t, nullptr, yp);
    // A part of a stacked matrix: the whole product, then this part's columns. Only the libtorch
    // forward of a runtime model gets here (the engine runs the stacked product itself).
    std::vector<float> all(static_cast<size_t>(M) * t.N);
    kernels::qgemm_tiled_cpu(xp, M, t, nullptr, all.data());
    for (int m = 0; m < M; ++m)
      std::copy_n(all.data() + static_cast<size_t>(m) * t.N + row0_, layout_.N, yp + static_cast<size_t>(m) * layout_.N);
  });
}

// Untiled into a temporary: packed_matrix()'s copy is made only for stages that need packed codes.
at::Tensor TiledLinear::dense_weight() const { return dequantize(kernels::untile(tiled_->view(), row0_, layout_.N)); }

const kernels::QMatrix* TiledLinear::packed_matrix() const {
  std::call_once(once_, [this] {
    canonical_ = std::make_unique<kernels::QMatrix>(kernels::untile(tiled_->view(), row0_, layout_.N));
  });
  return canonical_.get();
}

namespace {

kernels::QMatrix owned_copy(const kernels::QMatrixView& v) {
  kernels::QMatrix m;
  m.layout = kernels::make_layout(v.bits, v.group, v.N, v.K);
  m.codes.assign(v.codes, v.codes + m.layout.code_bytes);
  m.scales.assign(v.scales, v.scales + m.layout.scale_count);
  m.zeros.assign(v.zeros, v.zeros + m.layout.scale_count);
  return m;
}

}  // namespace

PackedViewLinear::PackedViewLinear(std::shared_ptr<const uint8_t> buffer, kernels::QMatrixView view)
    : buffer_(std::move(buffer)), view_(view) {
  LLMC_CHECK(buffer_ != nullptr && view.codes && view.scales && view.zeros, "PackedViewLinear: no matrix");
  layout_ = kernels::make_layout(view.bits, view.group, view.N, view.K);
}

at::Tensor PackedViewLinear::forward(const at::Tensor& x) {
  return packed_forward(x, layout_.K, layout_.N, "PackedViewLinear",
                        [&](const float* xp, int M, float* yp) { kernels::qgemm_cpu(xp, M, view_, nullptr, yp); });
}

// Copied into a temporary: packed_matrix()'s copy is made only for stages that need packed codes.
at::Tensor PackedViewLinear::dense_weight() const { return dequantize(owned_copy(view_)); }

const kernels::QMatrix* PackedViewLinear::packed_matrix() const {
  std::call_once(once_, [this] { copy_ = std::make_unique<kernels::QMatrix>(owned_copy(view_)); });
  return copy_.get();
}

}  // namespace llmc
