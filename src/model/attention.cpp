#include "llmc/model/attention.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace llmc {

at::Tensor attention_bias(const at::Tensor& allowed) {
  return at::zeros(allowed.sizes(), at::kFloat).masked_fill(allowed.logical_not(), -1e30f);
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                     double scale) {
  const bool grad = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  return grad ? attention_reference(q, k, v, bias, scale) : attention_blocked(q, k, v, bias, scale);
}

at::Tensor attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                               double scale) {
  auto scores = at::matmul(q, k.unsqueeze(2).transpose(-1, -2)).to(at::kFloat) * scale;  // (B,nkv,g,T,S)
  auto probs = at::softmax(scores + bias, -1).to(q.scalar_type());
  return at::matmul(probs, v.unsqueeze(2));  // (B, nkv, g, T, hd)
}

at::Tensor attention_blocked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                             double scale, int64_t block_bytes) {
  const int64_t B = q.size(0), nkv = q.size(1), g = q.size(2), T = q.size(3), hd = q.size(4), S = k.size(2);
  auto out = at::empty(q.sizes(), q.options());
  if (B == 0 || nkv == 0 || g == 0 || T == 0) return out;
  const int64_t row_bytes = nkv * g * std::max<int64_t>(S, 1) * 4;  // float32 scores of one query
  if (B * T * row_bytes <= block_bytes) return attention_reference(q, k, v, bias, scale);
  const int64_t rows = std::clamp<int64_t>(block_bytes / row_bytes, 1, T);
  for (int64_t b = 0; b < B; ++b) {
    auto kt = k[b].transpose(1, 2);  // (nkv, hd, S)
    auto vb = v[b];                  // (nkv, S, hd)
    for (int64_t t0 = 0; t0 < T; t0 += rows) {
      const int64_t n = std::min(rows, T - t0);
      // The g heads of a KV head become rows of one matrix: (nkv, g*n, hd) x (nkv, hd, S).
      auto qb = q[b].narrow(2, t0, n).reshape({nkv, g * n, hd});
      auto s = at::bmm(qb, kt).to(at::kFloat);
      s.mul_(scale);
      s.view({nkv, g, n, S}).add_(bias[bias.size(0) == 1 ? 0 : b].narrow(2, t0, n));  // (1, 1, n, S)
      auto p = at::softmax(s, -1).to(q.scalar_type());
      out[b].narrow(2, t0, n).copy_(at::bmm(p, vb).view({nkv, g, n, hd}));
    }
  }
  return out;
}

}  // namespace llmc
