#include "llmc/runtime/tiled_linear.h"

#include <ATen/ATen.h>

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
  const kernels::QTiledLayout& l = tiled_->layout();
  LLMC_CHECK(x.size(-1) == l.K, "TiledLinear: input has {} features, expected {}", x.size(-1), l.K);
  auto xf = x.to(at::kFloat).contiguous();
  const int64_t M = xf.numel() / l.K;
  std::vector<int64_t> out_shape = x.sizes().vec();
  out_shape.back() = layout_.N;
  auto y = at::empty(out_shape, at::kFloat);
  if (M == 0) return y.to(x.scalar_type());
  if (row0_ == 0 && layout_.N == l.N) {
    kernels::qgemm_tiled_cpu(xf.data_ptr<float>(), static_cast<int>(M), tiled_->view(), nullptr, y.data_ptr<float>());
  } else {
    // A part of a stacked matrix: the whole product, then this part's columns. Only the libtorch
    // forward of a runtime model gets here (the engine runs the stacked product itself).
    auto all = at::empty({M, l.N}, at::kFloat);
    kernels::qgemm_tiled_cpu(xf.data_ptr<float>(), static_cast<int>(M), tiled_->view(), nullptr,
                             all.data_ptr<float>());
    y.view({M, layout_.N}).copy_(all.narrow(1, row0_, layout_.N));
  }
  return y.to(x.scalar_type());
}

at::Tensor TiledLinear::dense_weight() const {
  if (canonical_) return dequantize(*canonical_);
  return dequantize(kernels::untile(tiled_->view(), row0_, layout_.N));
}

const kernels::QMatrix* TiledLinear::packed_matrix() const {
  std::call_once(once_, [this] {
    canonical_ = std::make_unique<kernels::QMatrix>(kernels::untile(tiled_->view(), row0_, layout_.N));
  });
  return canonical_.get();
}

}  // namespace llmc
