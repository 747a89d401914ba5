#include "llmc_kernels/qformat.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "llmc_kernels/group_quant.h"

namespace llmc::kernels {
namespace {

constexpr int kMaxDim = 1 << 30;

[[noreturn]] void bad(const std::string& msg) { throw std::invalid_argument(msg); }

void check_dims(const char* who, int bits, int group, int N, int K) {
  const std::string w(who);
  if (!valid_bits(bits)) bad(w + ": bits must be 2, 3, 4 or 8 (got " + std::to_string(bits) + ")");
  if (!valid_group(group)) bad(w + ": group must be 32, 64 or 128 (got " + std::to_string(group) + ")");
  if (N < 1 || N > kMaxDim) bad(w + ": N must be in [1, 2^30] (got " + std::to_string(N) + ")");
  if (K < 1 || K > kMaxDim) bad(w + ": K must be in [1, 2^30] (got " + std::to_string(K) + ")");
}

template <int BITS>
void pack_rows(const QLayout& l, const uint8_t* codes, uint8_t* out) {
  for (int n = 0; n < l.N; ++n) {
    const uint8_t* src = codes + static_cast<size_t>(n) * l.K;
    for (int kb = 0; kb < l.blocks_per_row; ++kb) {
      uint32_t words[BITS] = {};
      const int k0 = kb * kBlockCodes;
      const int cnt = std::min(kBlockCodes, l.K - k0);  // pad codes stay 0
      for (int c = 0; c < cnt; ++c) block_set_code<BITS>(words, c, src[k0 + c]);
      std::memcpy(out + block_offset(l.row_bytes, BITS, n, kb), words, sizeof words);
    }
  }
}

template <int BITS>
void unpack_rows(const QMatrixView& w, const QLayout& l, uint8_t* out) {
  for (int n = 0; n < l.N; ++n) {
    uint8_t* dst = out + static_cast<size_t>(n) * l.K;
    for (int kb = 0; kb < l.blocks_per_row; ++kb) {
      uint32_t words[BITS];
      std::memcpy(words, w.codes + block_offset(l.row_bytes, BITS, n, kb), sizeof words);
      const int k0 = kb * kBlockCodes;
      const int cnt = std::min(kBlockCodes, l.K - k0);
      for (int c = 0; c < cnt; ++c) dst[k0 + c] = static_cast<uint8_t>(block_code<BITS>(words, c));
    }
  }
}

}  // namespace

QLayout make_layout(int bits, int group, int N, int K) {
  check_dims("make_layout", bits, group, N, K);
  return QLayout::of(bits, group, N, K);
}

void validate(const QMatrixView& w, const char* who) {
  check_dims(who, w.bits, w.group, w.N, w.K);
  const std::string s(who);
  if (w.codes == nullptr) bad(s + ": w.codes is null");
  if (w.scales == nullptr) bad(s + ": w.scales is null");
  if (w.zeros == nullptr) bad(s + ": w.zeros is null");
}

void pack_codes(const QLayout& layout, const uint8_t* codes, uint8_t* out) {
  check_dims("pack_codes", layout.bits, layout.group, layout.N, layout.K);
  if (codes == nullptr) bad("pack_codes: codes is null");
  if (out == nullptr) bad("pack_codes: out is null");
  const QLayout l = QLayout::of(layout.bits, layout.group, layout.N, layout.K);
  const uint32_t limit = 1u << l.bits;
  for (size_t i = 0; i < static_cast<size_t>(l.N) * l.K; ++i) {
    if (codes[i] >= limit) {
      bad("pack_codes: codes[" + std::to_string(i) + "] = " + std::to_string(codes[i]) + " does not fit in " +
          std::to_string(l.bits) + " bits");
    }
  }
  switch (l.bits) {
    case 2: pack_rows<2>(l, codes, out); break;
    case 3: pack_rows<3>(l, codes, out); break;
    case 4: pack_rows<4>(l, codes, out); break;
    default: pack_rows<8>(l, codes, out); break;
  }
}

QMatrix pack(int bits, int group, int N, int K, const uint8_t* codes, const uint16_t* scales,
             const uint16_t* zeros) {
  check_dims("pack", bits, group, N, K);
  if (scales == nullptr) bad("pack: scales is null");
  if (zeros == nullptr) bad("pack: zeros is null");
  QMatrix m;
  m.layout = QLayout::of(bits, group, N, K);
  m.codes.assign(m.layout.code_bytes, 0);
  pack_codes(m.layout, codes, m.codes.data());
  m.scales.assign(scales, scales + m.layout.scale_count);
  m.zeros.assign(zeros, zeros + m.layout.scale_count);
  return m;
}

QMatrix stacked_copy(const QMatrixView* parts, size_t n) {
  if (parts == nullptr || n == 0) bad("stacked_copy: no parts");
  int N = 0;
  for (size_t i = 0; i < n; ++i) {
    validate(parts[i], "stacked_copy");
    if (parts[i].bits != parts[0].bits || parts[i].group != parts[0].group || parts[i].K != parts[0].K)
      bad("stacked_copy: parts differ in bits, group or K");
    N += parts[i].N;
  }
  QMatrix m;
  m.layout = make_layout(parts[0].bits, parts[0].group, N, parts[0].K);
  for (size_t i = 0; i < n; ++i) {  // rows are whole byte runs in each array, so stacking appends
    const QLayout l = parts[i].layout();
    m.codes.insert(m.codes.end(), parts[i].codes, parts[i].codes + l.code_bytes);
    m.scales.insert(m.scales.end(), parts[i].scales, parts[i].scales + l.scale_count);
    m.zeros.insert(m.zeros.end(), parts[i].zeros, parts[i].zeros + l.scale_count);
  }
  return m;
}

void unpack_codes(const QMatrixView& w, uint8_t* out) {
  validate(w, "unpack_codes");
  if (out == nullptr) bad("unpack_codes: out is null");
  const QLayout l = w.layout();
  switch (l.bits) {
    case 2: unpack_rows<2>(w, l, out); break;
    case 3: unpack_rows<3>(w, l, out); break;
    case 4: unpack_rows<4>(w, l, out); break;
    default: unpack_rows<8>(w, l, out); break;
  }
}

std::vector<uint8_t> unpack_codes(const QMatrixView& w) {
  validate(w, "unpack_codes");
  std::vector<uint8_t> out(static_cast<size_t>(w.N) * w.K);
  unpack_codes(w, out.data());
  return out;
}

QMatrix quantize_groups(const float* w, int N, int K, int bits, int group, const GroupRule& rule, const char* who) {
  check_dims(who, bits, group, N, K);
  if (w == nullptr) bad(std::string(who) + ": w is null");
  const QLayout l = QLayout::of(bits, group, N, K);
  const float qmax = static_cast<float>((1 << bits) - 1);
  std::vector<uint8_t> codes(static_cast<size_t>(N) * K);
  std::vector<uint16_t> scales(l.scale_count), zeros(l.scale_count);
  for (int n = 0; n < N; ++n) {
    const float* row = w + static_cast<size_t>(n) * K;
    for (int g = 0; g < l.groups_per_row; ++g) {
      const int k0 = g * group, k1 = std::min(K, k0 + group);
      float lo = row[k0], hi = row[k0];
      for (int k = k0; k < k1; ++k) {
        if (!std::isfinite(row[k])) {
          bad(std::string(who) + ": w[" + std::to_string(n) + "][" + std::to_string(k) + "] is not finite");
        }
        lo = std::min(lo, row[k]);
        hi = std::max(hi, row[k]);
      }
      const GroupParams p = rule(lo, hi);
      const float s = fp16_to_fp32(p.scale), z = p.zero;
      const size_t gi = static_cast<size_t>(n) * l.groups_per_row + g;
      scales[gi] = p.scale;
      zeros[gi] = fp32_to_fp16(z);
      for (int k = k0; k < k1; ++k) {
        const float q = p.round_with_zero ? std::nearbyint(row[k] / s + z) : std::nearbyint(row[k] / s) + z;
        codes[static_cast<size_t>(n) * K + k] = static_cast<uint8_t>(std::clamp(q, 0.f, qmax));
      }
    }
  }
  return pack(bits, group, N, K, codes.data(), scales.data(), zeros.data());
}

QMatrix quantize_rtn(const float* w, int N, int K, int bits, int group) {
  return quantize_groups(w, N, K, bits, group, [bits](float lo, float hi) { return rtn_group_params(lo, hi, bits); },
                         "quantize_rtn");
}

void dequantize(const QMatrixView& w, float* out) {
  validate(w, "dequantize");
  if (out == nullptr) bad("dequantize: out is null");
  const QLayout l = w.layout();
  std::vector<uint8_t> codes = unpack_codes(w);
  for (int n = 0; n < l.N; ++n) {
    for (int k = 0; k < l.K; ++k) {
      const size_t gi = group_index(l.groups_per_row, l.group, n, k);
      out[static_cast<size_t>(n) * l.K + k] =
          dequant(codes[static_cast<size_t>(n) * l.K + k], fp16_to_fp32(w.scales[gi]), fp16_to_fp32(w.zeros[gi]));
    }
  }
}

std::vector<float> dequantize(const QMatrixView& w) {
  validate(w, "dequantize");
  std::vector<float> out(static_cast<size_t>(w.N) * w.K);
  dequantize(w, out.data());
  return out;
}

}  // namespace llmc::kernels
