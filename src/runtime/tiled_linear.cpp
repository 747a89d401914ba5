#include "llmc/runtime/tiled_linear.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "llmc/core/error.h"
#include "llmc/quant/quant.h"
#include "llmc_kernels/qgemm.h"

namespace llmc {

// Through a temporary: the kept canonical matrix is made only for stages that need packed codes.
at::Tensor EngineCopyLinear::dense_weight() const { return dequantize(make_canonical()); }

const kernels::QMatrix* EngineCopyLinear::packed_matrix() const {
  std::call_once(once_, [this] { canonical_ = std::make_unique<kernels::QMatrix>(make_canonical()); });
  return canonical_.get();
}

namespace {

kernels::QLayout tiled_rows_layout(const kernels::QTiled* tiled, int row0, int rows) {
  LLMC_CHECK(tiled != nullptr, "TiledLinear: no tiled matrix");
  const kernels::QTiledLayout& l = tiled->layout();
  LLMC_CHECK(row0 >= 0 && rows >= 1 && row0 + rows <= l.N, "TiledLinear: rows [{}, {}) outside [0, {})", row0,
             row0 + rows, l.N);
  return kernels::make_layout(l.bits, l.group, rows, l.K);
}

}  // namespace

TiledLinear::TiledLinear(std::shared_ptr<const kernels::QTiled> tiled, int row0, int rows)
    : EngineCopyLinear(tiled_rows_layout(tiled.get(), row0, rows)), tiled_(std::move(tiled)), row0_(row0) {}

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

kernels::QMatrix TiledLinear::make_canonical() const { return kernels::untile(tiled_->view(), row0_, layout_.N); }

namespace {

kernels::QLayout view_layout(const uint8_t* buffer, const kernels::QMatrixView& v) {
  LLMC_CHECK(buffer != nullptr && v.codes && v.scales && v.zeros, "PackedViewLinear: no matrix");
  return kernels::make_layout(v.bits, v.group, v.N, v.K);
}

}  // namespace

PackedViewLinear::PackedViewLinear(std::shared_ptr<const uint8_t> buffer, kernels::QMatrixView view)
    : EngineCopyLinear(view_layout(buffer.get(), view)), buffer_(std::move(buffer)), view_(view) {}

at::Tensor PackedViewLinear::forward(const at::Tensor& x) {
  return packed_forward(x, layout_.K, layout_.N, "PackedViewLinear",
                        [&](const float* xp, int M, float* yp) { kernels::qgemm_cpu(xp, M, view_, nullptr, yp); });
}

kernels::QMatrix PackedViewLinear::make_canonical() const { return kernels::stacked_copy(&view_, 1); }

}  // namespace llmc
