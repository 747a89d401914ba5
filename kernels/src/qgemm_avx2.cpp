// AVX2 + FMA (+F16C) kernels; compiled without -m flags like qgemm_avx512.cpp (same rules: the
// target pragma, anonymous namespace, no std templates below the pragma).
//
// Fused kernel (M < 16): x is rounded to int16 per (row, group) by the dispatcher; per group the
// integer sum Q = sum_k q_k * xq_k is exact in int32 (vpmaddwd on 16 code/x pairs at a time), then
// y += s * dx * Q, and the zero point enters once per group as - s * dx * z * sum_group(xq).
// Decoding a block costs 4 ALU ops per 32 codes for every width (codes16), twice for 3 bit, so
// the kernel does about half the work per weight of dequantizing to fp32 and FMAs (the earlier
// version of this file: 16-17 ops per 32 codes at 4 bit).
// Panel kernel (M >= 16): 6 rows x 256 columns decoded to int16 codes in L1, 6 x 16 micro kernel
// on int16 x pairs (vpmaddwd), fp32 accumulation per group.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "llmc_kernels/qformat.h"
#include "qgemm_impl.h"

#include "target_avx2_begin.inc"

namespace llmc::kernels::detail {
namespace {

inline int imin(int a, int b) { return a < b ? a : b; }

#include "fused_prefetch.inc"

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// 4-bit block broadcast to both 128-bit halves: lane i of step j (codes 8j + i) is word i % 4,
// nibble 2j + i / 4.
inline __m256i shifts4(int j) { return _mm256_add_epi32(_mm256_set1_epi32(8 * j), _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)); }
// 2/3-bit pair layout, qword broadcast: lane i of step j (code c = 8j + i) sees word i % 2 and
// needs a shift of 4 * ((c % 16) / 2) + 2 * (c / 16).
inline __m256i shifts_pair(int j) {
  return _mm256_add_epi32(_mm256_set1_epi32(16 * (j & 1) + 2 * (j >> 1)), _mm256_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12));
}
inline __m256i seq8(int j) { return _mm256_add_epi32(_mm256_set1_epi32(8 * j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Integer codes 8j .. 8j+7 of a 4-bit block whose four words are in both 128-bit halves of v.
inline __m256i codes8_4(__m256i v, int j) { return _mm256_and_si256(_mm256_srlv_epi32(v, shifts4(j)), _mm256_set1_epi32(15)); }

// Integer codes 8j .. 8j+7 of a block.
template <int BITS>
inline __m256i codes8(const uint8_t* blk, int j) {
  if constexpr (BITS <= 3) {
    int64_t w;
    std::memcpy(&w, blk, 8);
    const __m256i lo = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi64x(w), shifts_pair(j)), _mm256_set1_epi32(3));
    if constexpr (BITS == 2) {
      return lo;
    } else {
      const __m256i hb = _mm256_set1_epi32(static_cast<int>(load_u32(blk + 8)));
      const __m256i hi = _mm256_and_si256(_mm256_srlv_epi32(hb, seq8(j)), _mm256_set1_epi32(1));
      return _mm256_or_si256(lo, _mm256_slli_epi32(hi, 2));
    }
  } else if constexpr (BITS == 4) {
    return codes8_4(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk))), j);
  } else {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 8 * j)));
  }
}

// Codes of plane PLANE of a block as two vectors of 16 int16 lanes, in the order of
// avx2_lane_code() (qgemm_impl.h). 4 ALU ops per 32 codes for every width (8 bit: 2 loads).
template <int BITS, int PLANE>
inline void codes16(const uint8_t* blk, __m256i& a, __m256i& b) {
  if constexpr (BITS == 8) {
    a = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
    b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16)));
    return;
  }
  __m256i v, mask;
  if constexpr (BITS == 4) {
    const __m256i w = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
    v = _mm256_srlv_epi32(w, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    mask = _mm256_set1_epi16(15);
  } else if constexpr (PLANE == 0) {
    int64_t w;
    std::memcpy(&w, blk, 8);
    v = _mm256_srlv_epi32(_mm256_set1_epi64x(w), _mm256_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6));
    mask = _mm256_set1_epi16(3);
  } else {
    v = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(load_u32(blk + 8))), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    mask = _mm256_set1_epi16(1);
  }
  a = _mm256_and_si256(v, mask);
  b = _mm256_and_si256(_mm256_srli_epi32(v, 8), mask);
}

// Q += sum over the 32 codes of plane PLANE of a block of code * xq, as 8 int32 lanes (vpmaddwd:
// |code * xq| < 2^23, a group of <= 128 codes sums to < 2^28 per lane: exact).
template <int BITS, int PLANE>
inline __m256i dot32(const uint8_t* blk, __m256i xa, __m256i xb, __m256i Q) {
  __m256i a, b;
  codes16<BITS, PLANE>(blk, a, b);
  return _mm256_add_epi32(Q, _mm256_add_epi32(_mm256_madd_epi16(a, xa), _mm256_madd_epi16(b, xb)));
}

// y[m][n] = sum_g s_ng dx_mg (sum_k q_nk xq_mk - z_ng sum_k xq_mk): the integer sums are exact, so
// the only error beyond fp32 rounding is x's rounding to int16 (|x - dx xq| <= dx / 2 with
// dx = max|x over the group| / 32767).
template <int BITS, int MT, int NT>
void fused_tile(const Problem& p, int m0, int n0) {
  constexpr int PL = BITS == 3 ? 2 : 1;
  constexpr int kXb = 32 * PL;  // int16 of x per block
  const int bpg = p.group / kBlockCodes;
  const uint8_t* rows[NT];
  for (int n = 0; n < NT; ++n) rows[n] = p.codes + static_cast<size_t>(n0 + n) * p.row_bytes;
  const int16_t* xr[MT];
  for (int m = 0; m < MT; ++m) xr[m] = p.xq + static_cast<size_t>(m0 + m) * p.xq_row;
  __m256 acc[MT][NT];
  for (int m = 0; m < MT; ++m)
    for (int n = 0; n < NT; ++n) acc[m][n] = _mm256_setzero_ps();
  float zterm[MT][NT];
  for (int m = 0; m < MT; ++m)
    for (int n = 0; n < NT; ++n) zterm[m][n] = 0.f;

  const TilePrefetch<BITS, NT> pf(p, n0, 4096);
  const bool pf_on = pf.codes();

  for (int g = 0; g < p.G; ++g) {
    __m256i Q[MT][NT];
    for (int m = 0; m < MT; ++m)
      for (int n = 0; n < NT; ++n) Q[m][n] = _mm256_setzero_si256();
    for (int kb = g * bpg; kb < imin((g + 1) * bpg, p.Kb); ++kb) {
      if (pf_on) pf.block(kb);
      __m256i xa[MT], xb[MT];
      for (int m = 0; m < MT; ++m) {
        const int16_t* xk = xr[m] + static_cast<size_t>(kb) * kXb;
        xa[m] = _mm256_load_si256(reinterpret_cast<const __m256i*>(xk));
        xb[m] = _mm256_load_si256(reinterpret_cast<const __m256i*>(xk + 16));
      }
      for (int n = 0; n < NT; ++n) {
        const uint8_t* blk = rows[n] + static_cast<size_t>(kb) * (4 * BITS);
        for (int m = 0; m < MT; ++m) Q[m][n] = dot32<BITS, 0>(blk, xa[m], xb[m], Q[m][n]);
      }
      if constexpr (BITS == 3) {
        for (int m = 0; m < MT; ++m) {
          const int16_t* xk = xr[m] + static_cast<size_t>(kb) * kXb + 32;
          xa[m] = _mm256_load_si256(reinterpret_cast<const __m256i*>(xk));
          xb[m] = _mm256_load_si256(reinterpret_cast<const __m256i*>(xk + 16));
        }
        for (int n = 0; n < NT; ++n) {
          const uint8_t* blk = rows[n] + static_cast<size_t>(kb) * 12;
          for (int m = 0; m < MT; ++m) {
            // The bit plane weighs 4: its sums, shifted left by 2, join the low-pair sums.
            Q[m][n] = _mm256_add_epi32(Q[m][n], _mm256_slli_epi32(dot32<3, 1>(blk, xa[m], xb[m], _mm256_setzero_si256()), 2));
          }
        }
      }
    }
    for (int n = 0; n < NT; ++n) {
      const size_t gi = static_cast<size_t>(n0 + n) * p.G + g;
      const float s = h2f(p.scales[gi]), z = h2f(p.zeros[gi]);
      for (int m = 0; m < MT; ++m) {
        const size_t xi = static_cast<size_t>(m0 + m) * p.G + g;
        const float f = s * p.xdx[xi];
        acc[m][n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(Q[m][n]), _mm256_set1_ps(f), acc[m][n]);
        zterm[m][n] += f * z * p.xqs[xi];
      }
    }
  }
  for (int m = 0; m < MT; ++m) {
    for (int n = 0; n < NT; ++n) {
      float v = hsum(acc[m][n]) - zterm[m][n];
      if (p.bias) v += p.bias[n0 + n];
      p.y[static_cast<size_t>(m0 + m) * p.N + n0 + n] = v;
    }
  }
}

template <int BITS, int MT>
constexpr int fused_nt() {
  return MT == 1 ? 4 : (MT == 2 ? 2 : 1);
}

#include "fused_driver.inc"

// ---------------------------------------------------------------------------------------------
// Panel kernel (M >= 16), integer as the fused one: a 6-row x 256-column weight panel is decoded
// once to int16 codes in L1 (natural order), then a 6 x 16 micro kernel multiplies code pairs with
// pairs of int16 x (vpmaddwd: 16 products per instruction, twice the fp32 FMA's 8) in exact int32
// sums per group, which are scaled into fp32 accumulators yT at the group's end.
// 6 rows: 12 int32 accumulators + 2 x + a broadcast + a product are the 16 ymm registers; per
// column pair 12 vpmaddwd against 2 loads of x and 6 broadcasts (4 rows: 8 against 2 and 4).
constexpr int kNr = 6;
constexpr int kKc = kPanelKc;

// The 32 codes of a block at out, natural order, as int16 (W = int16_t) or bytes (uint8_t);
// codes8(j): its codes 8j .. 8j + 7 as int32.
template <class W, class Codes8>
inline void store_block(W* out, Codes8 codes8) {
  if constexpr (sizeof(W) == 2) {
    for (int j = 0; j < 4; j += 2) {
      // Two steps of 8 int32 codes -> 16 int16 (packs interleaves 128-bit halves; permute fixes it).
      const __m256i q = _mm256_packs_epi32(codes8(j), codes8(j + 1));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * j), _mm256_permute4x64_epi64(q, 0xd8));
    }
  } else {
    // Bytes: dword d of packus(packs(c0, c1), packs(c2, c3)) holds codes 4 (d % 4) + ... of step
    // 2 (d % 4) + d / 4: dwords 0 4 1 5 2 6 3 7 are the block in order.
    const __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(codes8(0), codes8(1)), _mm256_packs_epi32(codes8(2), codes8(3)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
}

// Rows nb .. nb + nr - 1 (NR in all, rows >= nr zero) and columns kc0 .. kc0 + kcn - 1 of the
// weights as codes, wb[r * kKc + k]: int16 (W = int16_t, the int16-x kernel) or bytes (the int8-x one).
template <int BITS, int NR, class W>
void decode_panel(const Problem& p, int nb, int nr, int kc0, int kcn, W* wb) {
  for (int r = 0; r < NR; ++r) {
    W* dst = wb + r * kKc;
    if (r >= nr) {
      std::memset(dst, 0, sizeof(W) * static_cast<size_t>(kcn));
      continue;
    }
    const int kb0 = kc0 / kBlockCodes, kb1 = (kc0 + kcn) / kBlockCodes;
    if constexpr (BITS == 4) {
      if (p.tiled) {
        // A row-tiled copy (qgemm_tiled_panel): the chunk's blocks are consecutive tile blocks of one
        // tiled panel, 256 bytes apart (tile_block_word addresses the row's words in one). The four
        // words go to a register directly: stored to memory (tile_block_words) and loaded back as
        // 16 bytes they missed store forwarding (the tiled prefill was ~8% slower).
        static_assert(kPanelBlocks * kBlockCodes % kKc == 0, "a chunk lies in one tiled panel");
        const int n = nb + r, rr = n % kTileRows;
        const uint8_t* tb = p.tiled + p.tl.block_offset(n / kTileRows, kb0);
        for (int kb = kb0; kb < kb1; ++kb, tb += 4 * 64) {
          const __m256i words = _mm256_broadcastsi128_si256(
              _mm_setr_epi32(static_cast<int>(tile_block_word(tb, 0, rr)), static_cast<int>(tile_block_word(tb, 1, rr)),
                             static_cast<int>(tile_block_word(tb, 2, rr)), static_cast<int>(tile_block_word(tb, 3, rr))));
          store_block(dst + (kb * kBlockCodes - kc0), [&](int j) { return codes8_4(words, j); });
        }
        continue;
      }
    }
    const uint8_t* row = p.codes + static_cast<size_t>(nb + r) * p.row_bytes;
    for (int kb = kb0; kb < kb1; ++kb) {
      const uint8_t* blk = row + static_cast<size_t>(kb) * (4 * BITS);
      store_block(dst + (kb * kBlockCodes - kc0), [&](int j) { return codes8<BITS>(blk, j); });
    }
  }
}

// A group's exact int32 sums acc[r][v] (weight row r, x-rows 8v .. 8v + 7) into the fp32
// accumulators: y = first ? 0 : y; y += s dx Q - s z dx sum(xq) per (row, x-row).
template <int NR>
inline void group_out(const __m256i (&acc)[NR][2], int Mp, float* yT, int nr, bool first, const float* s, const float* sz,
                      const float* dx, const float* dxs) {
  const __m256 dxv[2] = {_mm256_loadu_ps(dx), _mm256_loadu_ps(dx + 8)};
  const __m256 dsv[2] = {_mm256_loadu_ps(dxs), _mm256_loadu_ps(dxs + 8)};
  for (int r = 0; r < nr && r < NR; ++r) {
    const __m256 sv = _mm256_set1_ps(s[r]), szv = _mm256_set1_ps(sz[r]);
    for (int v = 0; v < 2; ++v) {
      float* yp = yT + static_cast<size_t>(r) * Mp + 8 * v;
      __m256 y = first ? _mm256_setzero_ps() : _mm256_loadu_ps(yp);
      y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][v]), _mm256_mul_ps(sv, dxv[v]), y);
      _mm256_storeu_ps(yp, _mm256_fnmadd_ps(szv, dsv[v], y));
    }
  }
}

// Rows [0, nr) of the panel x 16 x-rows, k-pairs [0, nkp) of one group (wb and xq2 point at the
// group's first pair). y = first ? 0 : y; y += s dx Q - s z dx sum(xq) per (row, x-row).
void micro16(const int16_t* xq2, int Mp, const int16_t* wb, int nkp, float* yT, int nr, bool first,
             const float* s, const float* sz, const float* dx, const float* dxs) {
  // Named accumulators: GCC 12 kept an array of them partly on the stack inside the loop (spills
  // and register copies: 4 rows ran at about half the vpmaddwd rate).
  const __m256i z = _mm256_setzero_si256();
  __m256i a00 = z, a01 = z, a10 = z, a11 = z, a20 = z, a21 = z, a30 = z, a31 = z, a40 = z, a41 = z, a50 = z, a51 = z;
  const int16_t* xk = xq2;
  const size_t xstep = static_cast<size_t>(Mp) * 2;
  for (int kp = 0; kp < nkp; ++kp, xk += xstep) {
    const __m256i x0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(xk));
    const __m256i x1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(xk + 16));
#define LLMC_ROW(R)                                                   \
  {                                                                   \
    int32_t pair;                                                     \
    std::memcpy(&pair, wb + (R) * kKc + 2 * kp, 4);                   \
    const __m256i w = _mm256_set1_epi32(pair);                        \
    a##R##0 = _mm256_add_epi32(a##R##0, _mm256_madd_epi16(x0, w));   \
    a##R##1 = _mm256_add_epi32(a##R##1, _mm256_madd_epi16(x1, w));   \
  }
    LLMC_ROW(0) LLMC_ROW(1) LLMC_ROW(2) LLMC_ROW(3) LLMC_ROW(4) LLMC_ROW(5)
#undef LLMC_ROW
  }
  static_assert(kNr == 6, "one LLMC_ROW per row");
  const __m256i acc[kNr][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}, {a40, a41}, {a50, a51}};
  group_out<kNr>(acc, Mp, yT, nr, first, s, sz, dx, dxs);
}

// The int8-x kernel (prefill_x_bits() == 8; 2/3/4-bit codes): a 3-row panel of byte codes, a 3 x 16
// micro kernel on x column quads (Problem::xq4). vpmaddubsw (codes the unsigned operand, x the
// signed one) gives per x-row and quad two int16 sums of two products (|.| <= 2 * 15 * 127 = 3810);
// 8 quads of them add in int16 (<= 30480: no saturation), then one vpmaddwd with ones widens them
// to int32 per x-row. Exact, so a group's int32 sums are those of the int8 x, and the epilogue is the
// int16 kernel's. Per quad 6 vpmaddubsw (192 products; twice a vpmaddwd's per instruction) against
// 3 broadcasts and 2 x loads. (2 rows: the loop's overhead per product made it no faster than the
// int16 kernel.)
constexpr int kNr8 = 3;
constexpr int kQuadsInt16 = 8;  // quads summed in int16 before widening
static_assert(kQuadsInt16 * 2 * 15 * 127 <= 32767, "an int16 lane (2 products a quad) of 4-bit codes times int8 x stays exact");

void micro8(const int8_t* xq4, int Mp, const uint8_t* wb, int nkq, float* yT, int nr, bool first, const float* s,
            const float* sz, const float* dx, const float* dxs) {
  // 6 int16 + 6 int32 accumulators, the two x vectors, a broadcast, a product and the ones: the 16
  // ymm registers.
  const __m256i z = _mm256_setzero_si256(), ones = _mm256_set1_epi16(1);
  __m256i q00 = z, q01 = z, q10 = z, q11 = z, q20 = z, q21 = z;
  const int8_t* xk = xq4;
  const size_t xstep = static_cast<size_t>(Mp) * 4;
  for (int k0 = 0; k0 < nkq; k0 += kQuadsInt16) {
    __m256i h00 = z, h01 = z, h10 = z, h11 = z, h20 = z, h21 = z;
    for (int kq = k0; kq < imin(k0 + kQuadsInt16, nkq); ++kq, xk += xstep) {
      const __m256i* x = reinterpret_cast<const __m256i*>(xk);
      // One row's two products and adds at a time (asm barriers: GCC otherwise issued all six
      // vpmaddubsw first and copied registers to make room).
#define LLMC_ROW8(R)                                                                       \
  {                                                                                        \
    int32_t w;                                                                             \
    std::memcpy(&w, wb + (R) * kKc + 4 * kq, 4);                                           \
    const __m256i b = _mm256_set1_epi32(w);                                                \
    h##R##0 = _mm256_add_epi16(h##R##0, _mm256_maddubs_epi16(b, _mm256_load_si256(x)));     \
    h##R##1 = _mm256_add_epi16(h##R##1, _mm256_maddubs_epi16(b, _mm256_load_si256(x + 1))); \
    asm("" : "+x"(h##R##0), "+x"(h##R##1));                                                \
  }
      LLMC_ROW8(0) LLMC_ROW8(1) LLMC_ROW8(2)
#undef LLMC_ROW8
    }
    q00 = _mm256_add_epi32(q00, _mm256_madd_epi16(h00, ones));
    q01 = _mm256_add_epi32(q01, _mm256_madd_epi16(h01, ones));
    q10 = _mm256_add_epi32(q10, _mm256_madd_epi16(h10, ones));
    q11 = _mm256_add_epi32(q11, _mm256_madd_epi16(h11, ones));
    q20 = _mm256_add_epi32(q20, _mm256_madd_epi16(h20, ones));
    q21 = _mm256_add_epi32(q21, _mm256_madd_epi16(h21, ones));
  }
  static_assert(kNr8 == 3, "one LLMC_ROW8 per row");
  const __m256i acc[kNr8][2] = {{q00, q01}, {q10, q11}, {q20, q21}};
  group_out<kNr8>(acc, Mp, yT, nr, first, s, sz, dx, dxs);
}

inline void write_output(const Problem& p, int n0, int n1) { write_panel_output_avx2(p, n0, n1); }

#include "int_panel.inc"

template <int BITS>
void panel_rows(const Problem& p, int n0, int n1) {
  // A row-tiled copy (4 bits; qgemm_tiled_panel): the same codes and scales, so the same bits.
  auto scales = [&](int nb, int nr, int g, uint16_t* s16, uint16_t* z16) { tiled_panel_scales(p, nb, nr, g, s16, z16); };
  if constexpr (BITS <= 4) {
    if (p.xq4 != nullptr) {  // int8 x
      auto decode = [&](int nb, int nr, int kc0, int kcn, uint8_t* wb) { decode_panel<BITS, kNr8>(p, nb, nr, kc0, kcn, wb); };
      if (p.tiled == nullptr) int_panel_rows<kNr8, 16, int8_t, uint8_t>(p, p.xq4, n0, n1, decode, micro8);
      else int_panel_rows<kNr8, 16, int8_t, uint8_t>(p, p.xq4, n0, n1, decode, micro8, scales);
      return;
    }
  }
  auto decode = [&](int nb, int nr, int kc0, int kcn, int16_t* wb) { decode_panel<BITS, kNr>(p, nb, nr, kc0, kcn, wb); };
  if (p.tiled == nullptr) int_panel_rows<kNr, 16, int16_t, int16_t>(p, p.xq2, n0, n1, decode, micro16);
  else int_panel_rows<kNr, 16, int16_t, int16_t>(p, p.xq2, n0, n1, decode, micro16, scales);
}

// The 4-bit tile kernel (qtiled.h) on AVX2: row m of x times tile t, the tile's 16 weight rows as
// two vectors of 8 int32 lanes (the AVX-512 VNNI kernel's lanes, tile4_rows, in halves). Per tile
// block and word h (8 codes of each row): (w >> 4j) & 0x000f000f holds codes 4j + h and 4j + 16 + h
// of each row as two int16, and one vpmaddwd with the broadcast pair of x for those columns
// (TiledProblem::pairs) gives both products per row, added by one vpaddd. Per group the int32 sums
// are scaled by s dx with s the tile's 16 scales (two vectors) and s z dx sum(xq) is subtracted:
// none of the canonical fused kernel's per-row work (a scale and zero per row and group, a
// horizontal sum per row), and the tile's codes, scales and zeros are one stream front to back.
// The operations per lane are the VNNI kernel's, so the bits are too.
template <int BPG>
void tile4_row(const TiledProblem& p, int m, int t, bool prefetch) {
  const QTiledLayout& l = p.l;
  constexpr int gpp = kPanelBlocks / BPG;  // groups per tiled panel
  const __m256i mask = _mm256_set1_epi32(0x000f000f);
  __m256 acc[2], zacc[2];  // products and zero-point terms apart (one would chain two FMAs a group)
  acc[0] = acc[1] = zacc[0] = zacc[1] = _mm256_setzero_ps();
  for (int pn = 0; pn < l.panels; ++pn) {
    const TileSlice ts = tile_slice(p, pn, t);
    const int pg = ts.groups, pb = ts.blocks;
    const uint8_t *slice = ts.codes, *sc = ts.scales, *zr = ts.zeros;
    // The next tile's slice, spread over this slice's groups (as tile4_rows: the scales and zeros
    // are a sparse stream next to the codes that the hardware prefetcher misses).
    const int lines = prefetch && t + 1 < l.tiles ? static_cast<int>(ts.bytes / 64) : 0;
    const char* next = reinterpret_cast<const char*>(slice + ts.bytes);
    for (int gl = 0; gl < pg; ++gl) {
      const int g = pn * gpp + gl;
      for (int i = gl * lines / pg; i < (gl + 1) * lines / pg; ++i) _mm_prefetch(next + 64 * i, _MM_HINT_T0);
      __m256i Q[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
      const int kb0 = gl * BPG, kb1 = imin(kb0 + BPG, pb);
      for (int kbl = kb0; kbl < kb1; ++kbl) {
        const int kb = pn * kPanelBlocks + kbl;
        const uint8_t* tb = slice + static_cast<size_t>(kbl) * 4 * 64;
        const int32_t* pr = p.pairs + (static_cast<size_t>(m) * l.blocks + kb) * 16;
        for (int h = 0; h < 4; ++h) {
          __m256i w[2] = {_mm256_load_si256(reinterpret_cast<const __m256i*>(tb + 64 * h)),
                          _mm256_load_si256(reinterpret_cast<const __m256i*>(tb + 64 * h + 32))};
          asm("" : "+x"(w[0]), "+x"(w[1]));  // one load each, not one folded into every shift
          for (int j = 0; j < 4; ++j) {
            const __m256i xp = _mm256_set1_epi32(pr[4 * h + j]);
            for (int v = 0; v < 2; ++v) {
              const __m256i c = _mm256_and_si256(j ? _mm256_srli_epi32(w[v], 4 * j) : w[v], mask);
              Q[v] = _mm256_add_epi32(Q[v], _mm256_madd_epi16(c, xp));
            }
          }
        }
      }
      const size_t xi = static_cast<size_t>(m) * l.groups + g;
      const __m256 dx = _mm256_set1_ps(p.dx[xi]), xs = _mm256_set1_ps(p.xs[xi]);
      for (int v = 0; v < 2; ++v) {
        const __m256 s = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(sc + gl * kTileRows * 2 + 16 * v)));
        const __m256 z = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(zr + gl * kTileRows * 2 + 16 * v)));
        const __m256 f = _mm256_mul_ps(s, dx);
        acc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(Q[v]), f, acc[v]);
        zacc[v] = _mm256_fmadd_ps(_mm256_mul_ps(f, z), xs, zacc[v]);
      }
    }
  }
  alignas(32) float out[kTileRows];
  for (int v = 0; v < 2; ++v) _mm256_store_ps(out + 8 * v, _mm256_sub_ps(acc[v], zacc[v]));
  const int n0 = kTileRows * t, rows = imin(kTileRows, l.N - n0);
  float* y = p.y + static_cast<size_t>(m) * l.N + n0;
  for (int r = 0; r < rows; ++r) y[r] = p.bias ? out[r] + p.bias[n0 + r] : out[r];
}

template <int BPG>
void tiled4_tiles(const TiledProblem& p, int t0, int t1) {
  // Rows of x inner: the tile's slices (16 rows x K / 2 bytes + scales) stay in L1 for the next row.
  for (int t = t0; t < t1; ++t)
    for (int m = 0; m < p.M; ++m) tile4_row<BPG>(p, m, t, m == 0);
}

}  // namespace

void fused_rows_avx2(const Problem& p, int n0, int n1) { fused_rows_any(p, n0, n1); }

void tiled4_tiles_avx2(const TiledProblem& p, int t0, int t1) {
  switch (p.l.group) {
    case 32: tiled4_tiles<1>(p, t0, t1); break;
    case 64: tiled4_tiles<2>(p, t0, t1); break;
    default: tiled4_tiles<4>(p, t0, t1); break;
  }
}

void panel_rows_avx2(const Problem& p, int n0, int n1) {
  switch (p.bits) {
    case 2: panel_rows<2>(p, n0, n1); break;
    case 3: panel_rows<3>(p, n0, n1); break;
    case 4: panel_rows<4>(p, n0, n1); break;
    default: panel_rows<8>(p, n0, n1); break;
  }
}

// Activation rounding for the int16 paths (qgemm_impl.h: round_to_int16_*). Bit-identical to the
// scalar reference: max|x| is taken on the integer bits of |x| (for non-negative floats the integer
// order is the float order, and inf / NaN bits lie above every finite value, so the one maximum
// gives both max|x| and whether x is finite); 32767 / max|x| and max|x| / 32767 are the same scalar
// float divisions; q = cvtps_epi32(x * inv) rounds in the current mode as lrint does, and gives
// INT_MIN for NaN / inf products where lrint gives LONG_MIN (both clamp to -32767; finite products
// are within 32767 (1 + 2^-23), so no finite one overflows int32).
namespace {

inline int32_t hmax_epi32(__m256i v) {
  __m128i m = _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0x4e));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0xb1));
  return _mm_cvtsi128_si32(m);
}

inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// 16 int32 values (a, b) within T's range as T, in order.
template <class T>
inline void store16(T* q, __m256i a, __m256i b) {
  // packs works per 128-bit half (a0-3 b0-3 a4-7 b4-7); the qword permute restores the order.
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8);
  if constexpr (sizeof(T) == 2) _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), w);
  else _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)));
}
// 8 int32 values within T's range as T, in order (8 bytes for int8).
template <class T>
inline void store8(T* q, __m256i a) {
  const __m128i h = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  if constexpr (sizeof(T) == 2) _mm_storeu_si128(reinterpret_cast<__m128i*>(q), h);
  else _mm_storel_epi64(reinterpret_cast<__m128i*>(q), _mm_packs_epi16(h, h));
}

// Rounds x[0, n) as round_to_int16_scalar (T = int16_t, kQmax = 32767) or round_to_int8_scalar
// (int8_t, 127). PAD: also writes zeros to q[n, round_up(n, 8)) (q must have room); otherwise writes
// exactly q[0, n).
template <bool PAD, class T = int16_t, int kQmax = 32767>
inline float round_to_int(const float* x, int n, T* q, int* sum) {
  const __m256i absm = _mm256_set1_epi32(0x7fffffff);
  const int n8 = n & ~7, r = n - n8;
  // Lanes [0, r) of the tail; masked loads read 0 elsewhere (neutral for the maximum).
  const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i vmax0 = _mm256_setzero_si256(), vmax1 = _mm256_setzero_si256();
  int i = 0;
  for (; i + 16 <= n8; i += 16) {
    vmax0 = _mm256_max_epi32(vmax0, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), absm));
    vmax1 = _mm256_max_epi32(vmax1, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i + 8)), absm));
  }
  if (i < n8) vmax0 = _mm256_max_epi32(vmax0, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), absm));
  if (r) vmax1 = _mm256_max_epi32(vmax1, _mm256_and_si256(_mm256_maskload_epi32(reinterpret_cast<const int*>(x + n8), tail), absm));
  const int32_t abits = hmax_epi32(_mm256_max_epi32(vmax0, vmax1));
  const bool finite = abits < 0x7f800000;
  float amax;
  std::memcpy(&amax, &abits, 4);
  const float inv = finite && amax > 0.f ? static_cast<float>(kQmax) / amax : 0.f;

  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256i lo = _mm256_set1_epi32(-kQmax), hi = _mm256_set1_epi32(kQmax);
  __m256i vs = _mm256_setzero_si256();
  for (i = 0; i + 16 <= n8; i += 16) {
    __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vinv));
    a = _mm256_min_epi32(_mm256_max_epi32(a, lo), hi);
    b = _mm256_min_epi32(_mm256_max_epi32(b, lo), hi);
    vs = _mm256_add_epi32(vs, _mm256_add_epi32(a, b));
    store16(q + i, a, b);
  }
  if (i < n8) {
    __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    a = _mm256_min_epi32(_mm256_max_epi32(a, lo), hi);
    vs = _mm256_add_epi32(vs, a);
    store8(q + i, a);
  }
  if (r) {
    __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_maskload_ps(x + n8, tail), vinv));
    // Lanes past n are 0 * inv: 0, or NaN (-> -32767) when inv is inf (max|x| below 32767 / FLT_MAX).
    a = _mm256_and_si256(_mm256_min_epi32(_mm256_max_epi32(a, lo), hi), tail);
    vs = _mm256_add_epi32(vs, a);
    if constexpr (PAD) {
      store8(q + n8, a);
    } else {
      alignas(16) T t[16];
      store8(t, a);
      std::memcpy(q + n8, t, sizeof(T) * static_cast<size_t>(r));
    }
  }
  *sum = hsum_epi32(vs);
  return finite ? amax / static_cast<float>(kQmax) : __builtin_nanf("");
}

// In-place transpose of an 8 x 8 matrix of int32 (row i = v[i]).
inline void transpose8_epi32(__m256i v[8]) {
  const __m256i t0 = _mm256_unpacklo_epi32(v[0], v[1]), t1 = _mm256_unpackhi_epi32(v[0], v[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(v[2], v[3]), t3 = _mm256_unpackhi_epi32(v[2], v[3]);
  const __m256i t4 = _mm256_unpacklo_epi32(v[4], v[5]), t5 = _mm256_unpackhi_epi32(v[4], v[5]);
  const __m256i t6 = _mm256_unpacklo_epi32(v[6], v[7]), t7 = _mm256_unpackhi_epi32(v[6], v[7]);
  const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
  const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
  const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
  const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
  v[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
  v[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
  v[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
  v[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
  v[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
  v[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
  v[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
  v[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

// pshufb controls that put a block of 32 int16 (natural order) into avx2_lane_code order: output
// vector o (lanes 16o .. 16o + 15) of plane pl is the OR over source quarters qd (codes 8qd ..
// 8qd + 7, broadcast to both 128-bit halves) of pshufb(quarter, c[pl][o][qd]); bytes of lanes
// whose code lies in another quarter are 0x80 (zero).
struct LaneOrder {
  alignas(32) uint8_t c[2][2][4][32];
};

LaneOrder make_lane_order(int bits) {
  LaneOrder t;
  for (int pl = 0; pl < avx2_planes(bits); ++pl)
    for (int o = 0; o < 2; ++o)
      for (int qd = 0; qd < 4; ++qd)
        for (int b = 0; b < 32; ++b) {
          const int src = avx2_lane_code(bits, pl, 16 * o + b / 2);
          t.c[pl][o][qd][b] = src / 8 == qd ? static_cast<uint8_t>(2 * (src % 8) + b % 2) : 0x80;
        }
  return t;
}

const LaneOrder& lane_order(int bits) {
  static const LaneOrder t2 = make_lane_order(2), t3 = make_lane_order(3), t4 = make_lane_order(4);
  return bits == 2 ? t2 : bits == 3 ? t3 : t4;
}

}  // namespace

float round_to_int16_avx2(const float* x, int n, int16_t* q, int* sum) { return round_to_int<false>(x, n, q, sum); }

void xq_fused_avx2(const float* x, const Problem& p, int16_t* xq, float* dx, float* xs) {
  const int planes = avx2_planes(p.bits), bpg = p.group / kBlockCodes;
  const LaneOrder* lo = p.bits == 8 ? nullptr : &lane_order(p.bits);
  alignas(32) int16_t t[kXqMaxGroup];
  for (int m = 0; m < p.M; ++m) {
    const float* xr = x + static_cast<size_t>(m) * p.K;
    int16_t* dst = xq + static_cast<size_t>(m) * p.xq_row;
    for (int g = 0; g < p.G; ++g) {
      const int k0 = g * p.group, n = imin(p.K, k0 + p.group) - k0, n8 = (n + 7) & ~7;
      int sum = 0;
      const float d = round_to_int<true>(xr + k0, n, t, &sum);
      std::memset(t + n8, 0, sizeof(int16_t) * static_cast<size_t>(p.group - n8));
      dx[static_cast<size_t>(m) * p.G + g] = d;
      xs[static_cast<size_t>(m) * p.G + g] = static_cast<float>(sum);
      for (int b = 0; b < bpg; ++b) {
        const int16_t* src = t + b * kBlockCodes;
        int16_t* blk = dst + static_cast<size_t>(g * bpg + b) * planes * kBlockCodes;
        if (!lo) {  // 8 bit: natural order
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(blk), _mm256_load_si256(reinterpret_cast<const __m256i*>(src)));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(blk + 16), _mm256_load_si256(reinterpret_cast<const __m256i*>(src + 16)));
          continue;
        }
        __m256i qv[4];
        for (int qd = 0; qd < 4; ++qd) qv[qd] = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(src + 8 * qd)));
        for (int pl = 0; pl < planes; ++pl)
          for (int o = 0; o < 2; ++o) {
            const uint8_t (*c)[32] = lo->c[pl][o];
            __m256i v = _mm256_shuffle_epi8(qv[0], _mm256_load_si256(reinterpret_cast<const __m256i*>(c[0])));
            for (int qd = 1; qd < 4; ++qd)
              v = _mm256_or_si256(v, _mm256_shuffle_epi8(qv[qd], _mm256_load_si256(reinterpret_cast<const __m256i*>(c[qd]))));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(blk + pl * kBlockCodes + 16 * o), v);
          }
      }
    }
  }
}

namespace {
// The panel kernels' x: int16 column pairs (T = int16_t, xq2) or int8 column quads (int8_t, xq4), a
// 32-bit unit of kPack columns per x-row, [Kp / kPack][Mp][kPack].
template <class T, int kQmax>
void xq_panel(const float* x, const Problem& p, T* xq, float* dxT, float* dxsT) {
  constexpr int kPack = 4 / sizeof(T);
  const size_t Mp = static_cast<size_t>(p.Mp);
  const int nunits = p.group / kPack;  // a multiple of 8
  // 16 x-rows of one group, rounded (zero past the group's real columns and for rows >= M). 16
  // rows of a unit are one 64-byte line of xq, written whole. Groups outermost: the group's units
  // are one contiguous range of xq, filled front to back (nunits write streams) instead of touching
  // every line of xq for each 16 rows.
  alignas(32) T t[16][kXqMaxGroup];
  for (int g = 0; g < p.G; ++g) {
    const int k0 = g * p.group, n = imin(p.K, k0 + p.group) - k0, n8 = (n + 7) & ~7;
    for (int m0 = 0; m0 < p.Mp; m0 += 16) {
      for (int r = 0; r < 16; ++r) {
        const int m = m0 + r;
        float dx = 0.f, dxs = 0.f;
        if (m < p.M) {
          int sum = 0;
          dx = round_to_int<true, T, kQmax>(x + static_cast<size_t>(m) * p.K + k0, n, t[r], &sum);
          dxs = dx * static_cast<float>(sum);
          std::memset(t[r] + n8, 0, sizeof(T) * static_cast<size_t>(p.group - n8));
        } else {
          std::memset(t[r], 0, sizeof(T) * static_cast<size_t>(p.group));
        }
        dxT[static_cast<size_t>(g) * Mp + m] = dx;
        dxsT[static_cast<size_t>(g) * Mp + m] = dxs;
      }
      // Unit j of row r is the int32 at t[r] + kPack j; xq holds unit k0 / kPack + j of rows
      // m0..m0+15 in one 64-byte run.
      T* dst = xq + (static_cast<size_t>(k0 / kPack) * Mp + m0) * kPack;
      for (int j0 = 0; j0 < nunits; j0 += 8) {
        for (int h = 0; h < 2; ++h) {
          __m256i v[8];
          for (int r = 0; r < 8; ++r) v[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(t[8 * h + r] + kPack * j0));
          transpose8_epi32(v);
          for (int c = 0; c < 8; ++c)
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + static_cast<size_t>(j0 + c) * Mp * kPack + 8 * kPack * h), v[c]);
        }
      }
    }
  }
}
}  // namespace

void xq_panel_avx2(const float* x, const Problem& p, int16_t* xq2, float* dxT, float* dxsT) {
  xq_panel<int16_t, 32767>(x, p, xq2, dxT, dxsT);
}

void xq8_panel_avx2(const float* x, const Problem& p, int8_t* xq4, float* dxT, float* dxsT) {
  xq_panel<int8_t, 127>(x, p, xq4, dxT, dxsT);
}

// y[m][n] = yT[n][m] + bias[n], blocks of 8 x 8 (rows m of x, outputs n) through a register transpose.
void write_panel_output_avx2(const Problem& p, int n0, int n1) {
  const int nv = n0 + (n1 - n0) / 8 * 8;  // whole blocks of 8 outputs up to here
  for (int m0 = 0; m0 < p.M; m0 += 8) {  // Mp is a multiple of 16: 8 rows of yT are always there
    const int mb = imin(8, p.M - m0);
    float* y = p.y + static_cast<size_t>(m0) * p.N;
    for (int n = n0; n < nv; n += 8) {
      __m256i v[8];  // v[j]: yT[n + j][m0 .. m0 + 7]; after the transpose v[i]: y[m0 + i][n .. n + 7]
      for (int j = 0; j < 8; ++j)
        v[j] = _mm256_castps_si256(_mm256_loadu_ps(p.yT + static_cast<size_t>(n + j) * p.Mp + m0));
      transpose8_epi32(v);
      const __m256 b = p.bias ? _mm256_loadu_ps(p.bias + n) : _mm256_setzero_ps();
      for (int i = 0; i < mb; ++i)
        _mm256_storeu_ps(y + static_cast<size_t>(i) * p.N + n, _mm256_add_ps(_mm256_castsi256_ps(v[i]), b));
    }
  }
  write_panel_output(p, nv, n1);  // the outputs past the last whole block: the scalar reference
}

}  // namespace llmc::kernels::detail

#include "target_end.inc"
