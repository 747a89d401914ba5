#pragma once
// The linear layer is the seam of the design: the reference model holds dense weights; the search
// swaps in masked mixed-precision linears; the runtime swaps in packed quantized ones; fine-tuning
// adds LoRA on top. Everything else in a block is written once against this interface.
#include <ATen/core/Tensor.h>

#include <memory>

#include "llmc_kernels/qformat.h"

namespace llmc {

class Linear {
 public:
  virtual ~Linear() = default;
  // x: (..., in_features) -> (..., out_features), same dtype as x.
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  // The dense (out, in) weight this layer computes with (dequantized if packed). Used by stages
  // that need the weights themselves (importance ordering, quantization, export).
  virtual at::Tensor dense_weight() const = 0;

  // How the weights are stored, so no stage needs to know the concrete class: the packed b-bit
  // matrix (kernels/qformat.h) a quantized linear computes with, nullptr for dense weights.
  virtual const kernels::QMatrix* packed_matrix() const { return nullptr; }
  // The packed matrix's layout alone (bits, group, shape), nullptr for dense weights: what every
  // question about the format reads, so that a layer holding another layout (the runtime's
  // row-tiled one, runtime/tiled_linear.h) answers it without making a canonical copy.
  virtual const kernels::QLayout* packed_layout() const {
    const kernels::QMatrix* q = packed_matrix();
    return q ? &q->layout : nullptr;
  }
  bool is_packed() const { return packed_layout() != nullptr; }
  int bits() const { return is_packed() ? packed_layout()->bits : 16; }
  // Bytes as stored: the packed layout, or out * in * dense_bytes.
  int64_t stored_bytes(int dense_bytes) const {
    return is_packed() ? static_cast<int64_t>(packed_layout()->total_bytes())
                       : out_features() * in_features() * dense_bytes;
  }
};

class DenseLinear final : public Linear {
 public:
  explicit DenseLinear(at::Tensor weight);  // weight: (out, in)
  at::Tensor forward(const at::Tensor& x) override;
  int64_t in_features() const override;
  int64_t out_features() const override;
  at::Tensor dense_weight() const override { return weight_; }
  at::Tensor& weight() { return weight_; }

 private:
  at::Tensor weight_;
};

}  // namespace llmc
