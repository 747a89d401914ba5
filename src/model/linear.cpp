#include "llmc/model/linear.h"

#include <ATen/ATen.h>

namespace llmc {

DenseLinear::DenseLinear(at::Tensor weight) : weight_(std::move(weight)) {}

at::Tensor DenseLinear::forward(const at::Tensor& x) { return at::linear(x, weight_); }

int64_t DenseLinear::in_features() const { return weight_.size(1); }
int64_t DenseLinear::out_features() const { return weight_.size(0); }

}  // namespace llmc
