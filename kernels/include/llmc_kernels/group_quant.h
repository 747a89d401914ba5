// The one round-to-nearest group loop behind every producer that picks each group's scale and zero
// from the group's range: quantize_rtn (qformat.h) and, in src/quant/quant.cpp, the fp16-offset
// (GGUF-exact) and min/max (Q4_1) variants. Each is a GroupRule over this loop, so the loop (range,
// finiteness check, code rounding, packing) is written once and only the rules differ.
// Kept out of qformat.h, which nearly every file includes, because only the producers need it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>

#include "llmc_kernels/qformat.h"

namespace llmc::kernels {

// A group's stored parameters and how its codes round.
struct GroupParams {
  uint16_t scale = 0x3c00;  // fp16 bits of s (finite, non-zero)
  float zero = 0;           // z, stored as fp16(z)
  // false: q = clamp(round(w / s) + z), for an integer z.
  // true:  q = clamp(round(w / s + z)), for a z that may be a fraction. (Not the same for an integer
  //        z: w / s + z can round up to a .5 tie in fp32.)
  bool round_with_zero = false;
};

// rule(lo, hi): the parameters of a group whose real columns have minimum lo and maximum hi (both
// finite; 0 need not lie in [lo, hi]).
using GroupRule = std::function<GroupParams(float lo, float hi)>;

// w: [N][K] row-major fp32 -> packed matrix, each group's scale and zero from rule(lo, hi), codes
// clamped to [0, 2^bits - 1]. Bad dims, a null w or a non-finite weight throw std::invalid_argument
// prefixed with `who`.
QMatrix quantize_groups(const float* w, int N, int K, int bits, int group, const GroupRule& rule,
                        const char* who = "quantize_groups");

// fp16((hi - lo) / (2^bits - 1)), kept finite and non-zero (1 when hi == lo). Inline: fake_mix.cpp
// (the search's fake quantization) calls it once per group in its hot loop.
inline uint16_t range_scale_fp16(float lo, float hi, int bits) {
  const int qmax = (1 << bits) - 1;
  const float s = (hi > lo) ? static_cast<float>((static_cast<double>(hi) - lo) / qmax) : 1.f;
  uint16_t sh = fp32_to_fp16(s);
  if ((sh & 0x7fffu) == 0) sh = 0x0001;      // underflow: smallest positive fp16
  if ((sh & 0x7fffu) >= 0x7c00u) sh = 0x7bff;  // overflow: largest finite fp16
  return sh;
}

// quantize_rtn's rule (see qformat.h): the range widened to hold 0, s = range_scale_fp16, integer
// z = clamp(round(-lo / s), 0, 2^bits - 1).
inline GroupParams rtn_group_params(float lo, float hi, int bits) {
  // 0.f first: std::min/max return their first argument on a tie, so a group with nothing below 0
  // gets lo = +0 (not -0.0), as the range taken from 0 upwards always did; z's stored sign bit
  // follows -lo.
  lo = std::min(0.f, lo);
  hi = std::max(0.f, hi);
  GroupParams p;
  p.scale = range_scale_fp16(lo, hi, bits);
  p.zero = std::clamp(std::nearbyint(-lo / fp16_to_fp32(p.scale)), 0.f, static_cast<float>((1 << bits) - 1));
  return p;  // z is an integer <= 255: exact in fp16
}

}  // namespace llmc::kernels
