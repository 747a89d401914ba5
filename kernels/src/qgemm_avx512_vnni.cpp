// AVX-512 VNNI kernels, integer like the AVX2 ones (qgemm_avx2.cpp) and on the same activations:
// x rounded to int16 per (row, group). Compiled without -m flags (target pragma; the rules of
// qgemm_avx512.cpp: anonymous namespace, no std templates below it).
//
// Fused kernel (M < 16: decode), on Problem::xq (blocks of 32 columns in avx2_lane_code() order,
// prepared by xq_fused_avx2). A block's 32 codes of one bit plane decode into ONE vector of 32
// int16 lanes in exactly that lane order (lanes 0-15 = the AVX2 kernel's first vector, 16-31 its
// second), so a block costs
//   4 bit: broadcast of the 16-byte block to the four 128-bit lanes, vpsrlvd by 0 / 4 / 8 / 12, and;
//   8 bit: vpmovzxbw of 32 bytes;
//   2 bit: qword broadcast, vpsrlvd by 0, 0, 2, 2, ... 14, 14, and;
//   3 bit: the 2-bit plane plus the bit-plane word broadcast, vpsrlvd by 0..15, and, shift by 2;
// and one vpdpwssd (32 int16 products summed into 16 int32 lanes) per row of x: 3 instructions
// per 32 weights at 4 bit against the AVX2 kernel's 9 and the fp32 AVX-512 kernel's
// dequantize-and-FMA (5 per 16 weights). The sums are exact in int32 (|code * xq| < 2^23, a group
// of <= 128 codes adds < 2^26 per lane), so the result differs from the AVX2 kernel's only in the
// order of the fp32 sums: y = sum_g s dx (Q - z sum(xq)).
//
// 4-bit tile kernel (tile4_rows: M < 16 on a row-tiled copy, qtiled.h), on the same rounding of x:
// one row per lane, two codes per lane and instruction, scales as vectors of 16 rows. And the
// panel kernel (M >= 16) also reads 4-bit tiled copies (decode_panel), with the canonical bits.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "llmc_kernels/qformat.h"
#include "qgemm_impl.h"

#include "target_avx512vnni_begin.inc"

namespace llmc::kernels::detail {
namespace {

inline int imin(int a, int b) { return a < b ? a : b; }

#include "fused_prefetch.inc"

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

constexpr int kGC = 64;  // groups whose scale factors are prepared at a time

inline __mmask16 tail_mask(int r) { return static_cast<__mmask16>(r >= 16 ? 0xffffu : ((1u << r) - 1u)); }

inline float hsum16(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// A 4-bit block's 32 codes (its four words) as 32 int16 lanes in avx2_lane_code() order.
inline __m512i codes32_4(__m128i block) {
  const __m512i sh = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12);
  return _mm512_and_si512(_mm512_srlv_epi32(_mm512_broadcast_i32x4(block), sh), _mm512_set1_epi16(15));
}

// Codes of plane PLANE of a block as 32 int16 lanes in avx2_lane_code() order (the 3-bit bit
// plane already multiplied by its weight 4).
template <int BITS, int PLANE>
inline __m512i codes32(const uint8_t* blk) {
  if constexpr (BITS == 8) {
    return _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
  } else if constexpr (BITS == 4) {
    return codes32_4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
  } else if constexpr (PLANE == 0) {
    int64_t w;
    std::memcpy(&w, blk, 8);
    const __m512i sh = _mm512_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14);
    return _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi64(w), sh), _mm512_set1_epi16(3));
  } else {
    int32_t w;
    std::memcpy(&w, blk + 8, 4);
    const __m512i sh = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(w), sh), _mm512_set1_epi16(1)), 2);
  }
}

// MT rows of x (m0..) times NT weight rows (n0..), whole K.
// Per group the int32 sums Q are scaled by f = s * dx into fp32 lanes; f and the zero-point term
// s z dx sum(xq) are computed 16 groups per instruction for kGC groups at a time (per group and
// row the epilogue is then a convert and an FMA from a broadcast f: at K = 576, group 64, a group is
// only 2 blocks, and scalar fp16 conversions per group cost as much as decoding it).
template <int BITS, int MT, int NT>
void fused_tile(const Problem& p, int m0, int n0) {
  constexpr int PL = BITS == 3 ? 2 : 1;
  constexpr int kXb = 32 * PL;  // int16 of x per block
  const int bpg = p.group / kBlockCodes;
  const uint8_t* rows[NT];
  for (int n = 0; n < NT; ++n) rows[n] = p.codes + static_cast<size_t>(n0 + n) * p.row_bytes;
  const int16_t* xr[MT];
  for (int m = 0; m < MT; ++m) xr[m] = p.xq + static_cast<size_t>(m0 + m) * p.xq_row;
  __m512 acc[MT][NT], zacc[MT][NT];
  for (int m = 0; m < MT; ++m)
    for (int n = 0; n < NT; ++n) acc[m][n] = zacc[m][n] = _mm512_setzero_ps();
  alignas(64) float f[MT][NT][kGC];

  // Software prefetch of a tile ahead, a slice per block (as qgemm_avx2.cpp): about 4 KB ahead,
  // 16 KB at 8 bits (SmolLM2's 8-bit lm_head, 49152 x 576, 2 threads: 1.1-1.3 ms a token against
  // 1.5-1.6 at 4 KB; without the prefetch 2.6-2.8 ms; Zen 4 VM, three alternated rounds).
  const TilePrefetch<BITS, NT> pf(p, n0, BITS == 8 ? 16384 : 4096);
  const bool pf_on = pf.codes();

  for (int g0 = 0; g0 < p.G; g0 += kGC) {
    const int gc = imin(kGC, p.G - g0);
    for (int i = 0; i < gc; i += 16) {
      const __mmask16 k = tail_mask(gc - i);  // lanes past gc: s = z = dx = 0
      for (int n = 0; n < NT; ++n) {
        const size_t gi = static_cast<size_t>(n0 + n) * p.G + g0 + i;
        const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p.scales + gi));
        const __m512 z = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p.zeros + gi));
        for (int m = 0; m < MT; ++m) {
          const size_t xi = static_cast<size_t>(m0 + m) * p.G + g0 + i;
          const __m512 fv = _mm512_mul_ps(s, _mm512_maskz_loadu_ps(k, p.xdx + xi));
          _mm512_store_ps(f[m][n] + i, fv);
          zacc[m][n] = _mm512_fmadd_ps(_mm512_mul_ps(fv, z), _mm512_maskz_loadu_ps(k, p.xqs + xi), zacc[m][n]);
        }
      }
    }
    for (int gi = 0; gi < gc; ++gi) {
      const int g = g0 + gi;
      __m512i Q[MT][NT];
      for (int m = 0; m < MT; ++m)
        for (int n = 0; n < NT; ++n) Q[m][n] = _mm512_setzero_si512();
      for (int kb = g * bpg; kb < imin((g + 1) * bpg, p.Kb); ++kb) {
        if (pf_on) pf.block(kb);
        __m512i xv[MT];
        for (int m = 0; m < MT; ++m) xv[m] = _mm512_load_si512(xr[m] + static_cast<size_t>(kb) * kXb);
        for (int n = 0; n < NT; ++n) {
          const __m512i c = codes32<BITS, 0>(rows[n] + static_cast<size_t>(kb) * (4 * BITS));
          for (int m = 0; m < MT; ++m) Q[m][n] = _mm512_dpwssd_epi32(Q[m][n], c, xv[m]);
        }
        if constexpr (BITS == 3) {
          for (int m = 0; m < MT; ++m) xv[m] = _mm512_load_si512(xr[m] + static_cast<size_t>(kb) * kXb + 32);
          for (int n = 0; n < NT; ++n) {
            const __m512i c = codes32<3, 1>(rows[n] + static_cast<size_t>(kb) * 12);
            for (int m = 0; m < MT; ++m) Q[m][n] = _mm512_dpwssd_epi32(Q[m][n], c, xv[m]);
          }
        }
      }
      for (int n = 0; n < NT; ++n)
        for (int m = 0; m < MT; ++m)
          acc[m][n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(Q[m][n]), _mm512_set1_ps(f[m][n][gi]), acc[m][n]);
    }
  }
  for (int m = 0; m < MT; ++m) {
    for (int n = 0; n < NT; ++n) {
      float v = hsum16(_mm512_sub_ps(acc[m][n], zacc[m][n]));
      if (p.bias) v += p.bias[n0 + n];
      p.y[static_cast<size_t>(m0 + m) * p.N + n0 + n] = v;
    }
  }
}

// Weight rows per tile for MT rows of x: MT x NT int32 and fp32 accumulators + MT x vectors stay
// within the 32 vector registers.
template <int BITS, int MT>
constexpr int fused_nt() {
  return MT <= 2 ? 4 : 2;
}

#include "fused_driver.inc"

// ---------------------------------------------------------------------------------------------
// Panel kernel (M >= 16), the AVX2 panel kernel's scheme on 512-bit vectors: 12 weight rows x 256
// columns decoded once to int16 codes in natural order (L1), then a 12 x 32 micro kernel over
// Problem::xq2 (x rounded to int16, column pairs x 32 rows of x in two vectors): one vpdpwssd per
// weight row and x vector per column pair (32 products, against the fp32 kernel's 16 per FMA), int32
// sums per group scaled into fp32 accumulators yT at the group's end. 24 accumulators + 2 x fit the
// 32 vector registers. Mp (rows of xq2) is a multiple of 32.
constexpr int kNr = kPanelNr512;  // 12 rows: divides kRowQuantum, so tasks hold whole panels
constexpr int kKc = kPanelKc;

// idx[c] = the lane of codes32<BITS, 0>'s vector that holds code c (avx2_lane_code inverted): a
// vpermw with it puts the codes in natural order; idx1 the same for the 3-bit plane (codes32<3, 1>).
struct NaturalOrder {
  alignas(64) int16_t idx[32];
  alignas(64) int16_t idx1[32];
};
inline NaturalOrder natural_order(int bits) {
  NaturalOrder t;
  for (int l = 0; l < 32; ++l) {
    t.idx[avx2_lane_code(bits, 0, l)] = static_cast<int16_t>(l);
    t.idx1[avx2_lane_code(3, 1, l)] = static_cast<int16_t>(l);
  }
  return t;
}

// A 4-bit block's 32 codes as bytes in natural order (the int8-x kernels'): code c sits in word
// c % 4, nibble c / 4, i.e. byte 4 (c % 4) + c / 8, high nibble when c / 4 is odd.
inline __m256i codes32_u8_4(__m128i block) {
  const __m256i idx = _mm256_setr_epi8(0, 4, 8, 12, 0, 4, 8, 12, 1, 5, 9, 13, 1, 5, 9, 13, 2, 6, 10, 14, 2, 6, 10, 14, 3, 7,
                                       11, 15, 3, 7, 11, 15);
  const __m256i g = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(block), idx), m = _mm256_set1_epi8(15);
  return _mm256_mask_blend_epi8(0xf0f0f0f0u, _mm256_and_si256(g, m), _mm256_and_si256(_mm256_srli_epi16(g, 4), m));
}

// One canonical block (4 * BITS bytes) as 32 codes of type W in natural order at dst (natural16 /
// natural16_plane: NaturalOrder's idx / idx1 for BITS).
template <int BITS, class W>
inline void store_codes(const uint8_t* blk, const __m512i& natural16, const __m512i& natural16_plane, W* dst) {
  if constexpr (BITS == 8 && sizeof(W) == 1) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(dst), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
  } else if constexpr (BITS == 4 && sizeof(W) == 1) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(dst), codes32_u8_4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk))));
  } else {
    __m512i c = codes32<BITS, 0>(blk);
    if constexpr (BITS != 8) c = _mm512_permutexvar_epi16(natural16, c);
    if constexpr (BITS == 3) c = _mm512_add_epi16(c, _mm512_permutexvar_epi16(natural16_plane, codes32<3, 1>(blk)));
    if constexpr (sizeof(W) == 2) _mm512_store_si512(dst, c);
    else _mm256_store_si256(reinterpret_cast<__m256i*>(dst), _mm512_cvtepi16_epi8(c));  // 2/3 bits, int8 x
  }
}

// Codes of rows nb..nb+nr-1, columns kc0..kc0+kcn-1 as W (int16 for the int16-x kernel, uint8 for the
// int8-x ones) in wb[r * kKc + k] (rows nr..NR-1 zero). 2, 3, 4 and 8 bits; at 2-4 bits also from a
// row-tiled copy (Problem::tiled): the same codes, so the same bits as from the canonical matrix.
template <int BITS, int NR, class W>
void decode_panel(const Problem& p, const NaturalOrder& no, int nb, int nr, int kc0, int kcn, W* wb) {
  static_assert(BITS == 2 || BITS == 3 || BITS == 4 || BITS == 8, "2, 3, 4 and 8 bits");
  const __m512i i0 = _mm512_load_si512(no.idx), i1 = _mm512_load_si512(no.idx1);
  for (int r = nr; r < NR; ++r) std::memset(wb + r * kKc, 0, static_cast<size_t>(kcn) * sizeof(W));
  const int kb0 = kc0 / kBlockCodes, kb1 = (kc0 + kcn) / kBlockCodes;
  if (BITS < 4 && p.tiled != nullptr) {
    // 2 and 3 bits (the VNNI kernel without AMX): each row's canonical block from its words in the
    // tile block, a word at a time (the chunk lies in one tiled panel, as below).
    const int pn = kb0 / kPanelBlocks;
    const uint8_t* slice0 = p.tiled + p.tl.slice_offset(pn, 0);
    const size_t sb = p.tl.slice_bytes(pn);
    for (int r = 0; r < nr; ++r) {
      const int n = nb + r;
      const uint8_t* tile = slice0 + static_cast<size_t>(n / kTileRows) * sb;
      for (int kb = kb0; kb < kb1; ++kb) {
        alignas(16) uint32_t w[4] = {0, 0, 0, 0};
        tile_block_words(tile + static_cast<size_t>(kb - pn * kPanelBlocks) * BITS * 64, BITS, n % kTileRows, w);
        store_codes<BITS>(reinterpret_cast<const uint8_t*>(w), i0, i1, wb + r * kKc + (kb * kBlockCodes - kc0));
      }
    }
    return;
  }
  if (p.tiled != nullptr) {
    // 4 bits (qtiled.h): word h of a tile block is one vector of its 16 rows; a 4 x 16 transpose
    // (8 unpacks) gives each row's four words, i.e. its canonical block. A 12-row panel straddles
    // two tiles every other time, so tiles are transposed ~1.5 times each: the prefill kernels run
    // 2-6% slower than on canonical codes (docs/measurements.md).
    alignas(64) uint32_t tw[4][kTileRows];  // row lane L's block: tw[L % 4][4 (L / 4) ..]
    // The chunk lies in one tiled panel (kPanelKc divides its 512 columns): its slices' offsets once
    // (the layout's helpers divide by the group size).
    static_assert(kPanelBlocks * kBlockCodes % kKc == 0, "a panel-kernel chunk lies in one tiled panel");
    const int pn = kb0 / kPanelBlocks;
    const uint8_t* slice0 = p.tiled + p.tl.slice_offset(pn, 0);
    const size_t sb = p.tl.slice_bytes(pn);
    // The next panel's tiles are prefetched block by block: the tile streams are short (the chunk's 8
    // blocks, 2 KB per tile) and the hardware prefetcher missed them (the first load of a block was
    // ~30% of the panel decode at 128 tokens, weights in L3; Xeon with AMX).
    const int tnext = (nb + NR) / kTileRows, tend = imin(p.tl.tiles, (nb + 2 * NR + kTileRows - 1) / kTileRows);
    for (int kb = kb0; kb < kb1; ++kb) {
      for (int t = tnext; t < tend; ++t) {
        const char* nt = reinterpret_cast<const char*>(slice0 + static_cast<size_t>(t) * sb +
                                                       static_cast<size_t>(kb - pn * kPanelBlocks) * 4 * 64);
        for (int l = 0; l < 4; ++l) _mm_prefetch(nt + 64 * l, _MM_HINT_T0);
      }
      for (int t = nb / kTileRows; t * kTileRows < nb + nr; ++t) {
        const uint8_t* tb = slice0 + static_cast<size_t>(t) * sb + static_cast<size_t>(kb - pn * kPanelBlocks) * 4 * 64;
        const __m512i w0 = _mm512_load_si512(tb), w1 = _mm512_load_si512(tb + 64), w2 = _mm512_load_si512(tb + 128),
                      w3 = _mm512_load_si512(tb + 192);
        const __m512i a = _mm512_unpacklo_epi32(w0, w1), b = _mm512_unpackhi_epi32(w0, w1);
        const __m512i c = _mm512_unpacklo_epi32(w2, w3), d = _mm512_unpackhi_epi32(w2, w3);
        _mm512_store_si512(tw[0], _mm512_unpacklo_epi64(a, c));
        _mm512_store_si512(tw[1], _mm512_unpackhi_epi64(a, c));
        _mm512_store_si512(tw[2], _mm512_unpacklo_epi64(b, d));
        _mm512_store_si512(tw[3], _mm512_unpackhi_epi64(b, d));
        const int r0 = t * kTileRows > nb ? t * kTileRows - nb : 0;  // the panel's rows in tile t
        const int r1 = imin(nr, (t + 1) * kTileRows - nb);
        for (int r = r0; r < r1; ++r) {
          const int L = (nb + r) % kTileRows;
          store_codes<4>(reinterpret_cast<const uint8_t*>(&tw[L % 4][4 * (L / 4)]), i0, i1, wb + r * kKc + (kb * kBlockCodes - kc0));
        }
      }
    }
    return;
  }
  for (int r = 0; r < nr; ++r) {
    const uint8_t* row = p.codes + static_cast<size_t>(nb + r) * p.row_bytes;
    for (int kb = kb0; kb < kb1; ++kb)
      store_codes<BITS>(row + static_cast<size_t>(kb) * (4 * BITS), i0, i1, wb + r * kKc + (kb * kBlockCodes - kc0));
  }
}

// 16 x-rows of one weight row's group epilogue: *yp = (first ? 0 : *yp) + s dx Q - s z dx sum(xq),
// from its int32 sums Q (sv = s, szv = s z broadcast; dxv, dsv = dx and dx sum(xq) of the x-rows).
inline void group_out16(__m512i q, float* yp, bool first, __m512 sv, __m512 szv, __m512 dxv, __m512 dsv) {
  __m512 y = first ? _mm512_setzero_ps() : _mm512_loadu_ps(yp);
  y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), _mm512_mul_ps(sv, dxv), y);
  _mm512_storeu_ps(yp, _mm512_fnmadd_ps(szv, dsv, y));
}

// yT rows [0, nr) x 32 x-rows (stride Mp) by group_out16, from the int32 sums Q = acc[r][v] (x-rows
// 16 v ..) of a group.
inline void panel_group_out(const __m512i (&acc)[kNr][2], int Mp, float* yT, int nr, bool first, const float* s,
                            const float* sz, const float* dx, const float* dxs) {
  const __m512 dxv[2] = {_mm512_loadu_ps(dx), _mm512_loadu_ps(dx + 16)};
  const __m512 dsv[2] = {_mm512_loadu_ps(dxs), _mm512_loadu_ps(dxs + 16)};
#pragma GCC unroll 12
  for (int r = 0; r < kNr; ++r) {
    if (r >= nr) break;
    const __m512 sv = _mm512_set1_ps(s[r]), szv = _mm512_set1_ps(sz[r]);
#pragma GCC unroll 2
    for (int v = 0; v < 2; ++v)
      group_out16(acc[r][v], yT + static_cast<size_t>(r) * Mp + 16 * v, first, sv, szv, dxv[v], dsv[v]);
  }
}

// Rows [0, nr) of the panel x 32 x-rows, columns of one group in packs of 4 / sizeof(X) (wb and xq
// point at the group's first pack, xq at x-row m0; nk packs). yT = first ? 0 : yT; yT += s dx Q - s z
// dx sum(xq). X = int16 (Problem::xq2, column pairs): one vpdpwssd (32 products) per weight row and
// x vector per pair. X = int8 (Problem::xq4, prefill_x_bits() == 8, column quads) with uint8 codes:
// one vpdpbusd (uint8 codes x int8 x, 64 products) per quad. Exact int32 sums either way (int8: a lane
// adds at most 128 products of |code| <= 255 and |xq| <= 127, < 2^23).
template <class X, class W>
void micro32(const X* xq, int Mp, const W* wb, int nk, float* yT, int nr, bool first, const float* s, const float* sz,
             const float* dx, const float* dxs) {
  constexpr int kPack = 4 / sizeof(X);
  // Every loop over r is unrolled, so acc[r] are registers (with a run-time bound in the epilogue
  // GCC 12 kept a copy of acc on the stack, stored on every iteration: 1.4x slower than fp32).
  __m512i acc[kNr][2];
#pragma GCC unroll 12
  for (int r = 0; r < kNr; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
  for (int k = 0; k < nk; ++k) {
    const X* xk = xq + static_cast<size_t>(k) * Mp * kPack;
    const __m512i x0 = _mm512_load_si512(xk), x1 = _mm512_load_si512(xk + 16 * kPack);  // x-rows 0-15, 16-31
#pragma GCC unroll 12
    for (int r = 0; r < kNr; ++r) {
      int32_t pack;
      std::memcpy(&pack, wb + r * kKc + kPack * k, 4);
      const __m512i w = _mm512_set1_epi32(pack);
      if constexpr (sizeof(X) == 2) {
        acc[r][0] = _mm512_dpwssd_epi32(acc[r][0], x0, w);
        acc[r][1] = _mm512_dpwssd_epi32(acc[r][1], x1, w);
      } else {
        acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], w, x0);
        acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], w, x1);
      }
    }
  }
  panel_group_out(acc, Mp, yT, nr, first, s, sz, dx, dxs);
}

inline void write_output(const Problem& p, int n0, int n1) { write_panel_output_avx512(p, n0, n1); }

#include "int_panel.inc"

// ---------------------------------------------------------------------------------------------
// AMX (CPUs with AMX-INT8, where amx_usable()): the integer panel kernels' arithmetic on tiles, for
// either x width. x is the A operand (16 x-rows x 64 bytes, straight from Problem::xhi / xlo's
// row-major bytes) and the weights are B (16 column quads x 16 weight rows): B's rows are a 4-bit
// word of 16 weight rows split into its low and high nibbles (the row-tiled copy holds exactly those
// words; x's columns are stored in the matching order, amx_column), so the codes need no decoded
// panel; 8-bit rows and canonical 4-bit rows are transposed 16 x 16 words at a time. A C tile of 16 x
// 16 exact int32 sums Q (16 x 16 x 64 products an instruction) is then 16 x-rows x 16 weight rows:
// rows of y as they are stored.
//   int8 x (prefill_x_bits() == 8): Q = xq . codes by tdpbsud (int8 x uint8).
//   int16 x (the default): tiles multiply bytes, so each xq = 256 hi + lo is split in two and Q =
// 256 (hi . codes) + (lo . codes), by tdpbsud and tdpbuud (uint8 x uint8), both exact in int32 (64
// products of < 2^8 x 2^8 a tile column), and so is Q (|Q| < 2^26 as in micro32).
// Either way the epilogue is micro32's (group_out16's operations in its order), so the results are
// the VNNI kernels' bit for bit (tests QGemmCpuInt8X / QGemmCpuInt16X.AmxMatchesVnniBitForBit) --
// except in a block of 16 weight rows whose zeros are all integers (RTN / GPTQ exports; 8 bits: 128):
// there B holds code - z as int8 (amx_weights), Q = xq . (codes - z) by tdpbssd (and tdpbusd for lo),
// and the epilogue has no zero term: one fp32 operation a sum less, and exact where s z dx sum(xq)
// cancelled against s dx Q in fp32 (tests *.AmxWithIntegerZerosEqualsTheReferenceOnRoundedX).
// Group 32 runs tiles of K = 32 (the tile config's A width and B height), group 128 two of K = 64.
//
// A group's sums must leave the tiles for their own fp32 scale, so at group 64 a group costs tile
// stores and a vector epilogue as long as its products (on the Xeon the stores do not overlap the
// vector work). The kernel keeps the rest small: per block of 16 weight rows the B rows of all of K
// and the scales once; per 16 x-rows the fp32 accumulators (16 x 16) stay in 16 registers over all
// groups, the next group's products are issued before the current group's epilogue (two tile sets in
// turn, sums in two L1 buffers), and y (+ bias) is written once. Against the first AMX kernels (32
// weight rows x 16 or 32 x-rows a group from a decoded panel, fp32 sums in L1, write_panel_output
// after), see kernels/README.md.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};  // bytes per row of tile i
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "ldtilecfg reads 64 bytes");

// tmm0-3: C (16 x 16 int32); tmm4-5: A (16 x-rows x kq quads of x bytes); tmm6-7: B (kq quads x 16
// weight rows). kq = column quads per tdp (16, or 8 at group 32).
__attribute__((target("amx-tile,amx-int8"))) void amx_begin(int kq) {
  TileConfig c;
  for (int t = 0; t < 4; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = 64;
  }
  for (int t = 4; t < 6; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = static_cast<uint16_t>(4 * kq);
  }
  for (int t = 6; t < 8; ++t) {
    c.rows[t] = static_cast<uint8_t>(kq);
    c.colsb[t] = 64;
  }
  // Not _tile_loadconfig: GCC 12's asm names only the config's first 8 bytes as its input, so the
  // stores of the rest may be dropped (seen: zero tile shapes, then tilezero faulted).
  asm volatile("ldtilecfg %0" ::"m"(c));
}
__attribute__((target("amx-tile,amx-int8"))) void amx_end() { _tile_release(); }


// GCC's tile intrinsics paste their tile number into the asm text: literal numbers only, hence a
// macro per tile set (TC / TC1: C of hi / lo, or TC of int8 x; TA: x's A (hi, or int8), TA1: lo's A;
// TB: the weights' B). int16: A tiles 4 / 5 shared by both sets; int8: A tile 4 or 5 per set.
#define LLMC_AMX_GROUP(TC, TC1, TA, TA1, TB) \
  _tile_zero(TC);                             \
  if constexpr (kSplit) _tile_zero(TC1);      \
  asm volatile("" ::: "memory");              \
  for (int k = 0; k < nkq; k += kq) {         \
    _tile_loadd(TB, b + 64 * k, 64);          \
    _tile_loadd(TA, ah + 4 * k, xs);          \
    if constexpr (kIntZ) _tile_dpbssd(TC, TA, TB); \
    else _tile_dpbsud(TC, TA, TB);            \
    if constexpr (kSplit) {                   \
      _tile_loadd(TA1, al + 4 * k, xs);       \
      if constexpr (kIntZ) _tile_dpbusd(TC1, TA1, TB); \
      else _tile_dpbuud(TC1, TA1, TB);        \
    }                                         \
  }
#define LLMC_AMX_STORE(TC, TC1)                      \
  asm volatile("" ::: "memory");                     \
  _tile_stored(TC, c[0], 64);                        \
  if constexpr (kSplit) _tile_stored(TC1, c[1], 64); \
  asm volatile("" ::: "memory")

// The sums of one group (nkq quads): ah = x's hi bytes (or int8 x), al = lo bytes, of the block's
// first x-row at the group's first column (row stride xs bytes), b = the group's B rows (64 bytes
// each) into tile set P's C tiles; amx_store then writes them to c[0] (and c[1]: lo), one group
// later: the tile stores wait for their products, so each group's stores follow the next group's
// products (+3% prefill at int16 x, 1 thread, 3 rounds alternated). The asm memory barriers: the tile loads and
// stores are asm the compiler does not see touch memory, so B must be stored before the loads, and
// c read only after the stores. Always inlined, as is the epilogue: the accumulators stay in
// registers only if nothing takes their address.
template <int P, bool kSplit, bool kIntZ>
__attribute__((always_inline)) inline void amx_group(int kq, const int8_t* ah, const uint8_t* al, const uint8_t* b,
                                                     long xs, int nkq) {
  if constexpr (P == 0) {
    LLMC_AMX_GROUP(0, 1, 4, 5, 6);
  } else if constexpr (kSplit) {
    LLMC_AMX_GROUP(2, 3, 4, 5, 7);
  } else {
    LLMC_AMX_GROUP(2, 3, 5, 5, 7);
  }
}
// Tile set P's sums into c[0] (and c[1]: lo).
template <int P, bool kSplit>
__attribute__((always_inline)) inline void amx_store(int32_t (&c)[2][16][16]) {
  if constexpr (P == 0) {
    LLMC_AMX_STORE(0, 1);
  } else {
    LLMC_AMX_STORE(2, 3);
  }
}
#undef LLMC_AMX_GROUP
#undef LLMC_AMX_STORE

// One group's epilogue for 16 x-rows x 16 weight rows: y[i] (x-row i, lanes = weight rows) += s dx Q
// - s z dx sum(xq), group_out16's operations in its order (sv / szv: the rows' s and s z).
// kIntZ (the block's zeros are integers, subtracted from the codes in the B rows: amx_weights): Q is
// already sum xq (code - z), so there is no zero term.
template <bool kSplit, bool kIntZ>
__attribute__((always_inline)) inline void amx_epilogue(const int32_t (&c)[2][16][16], __m512 sv, __m512 szv,
                                                        const float* dx, const float* dxs, __m512 (&y)[16]) {
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) {
    __m512i q = _mm512_load_si512(c[0][i]);
    if constexpr (kSplit) q = _mm512_add_epi32(_mm512_slli_epi32(q, 8), _mm512_load_si512(c[1][i]));
    y[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), _mm512_mul_ps(sv, _mm512_set1_ps(dx[i])), y[i]);
    if constexpr (!kIntZ) y[i] = _mm512_fnmadd_ps(szv, _mm512_set1_ps(dxs[i]), y[i]);
  }
}

#include "transpose16.inc"


// The AMX functions' target: the file's and AVX-512 VBMI (vpermb, vpmultishiftqb), which every AMX
// CPU has (amx_available checks it); they only run where amx_usable().
#define LLMC_AMX_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma,f16c,bmi,bmi2")))

// vpmultishiftqb control for the third bits of B row (h, j) at 3 bits: byte n of each 32-bit lane
// takes bit s + 4n of that lane's plane word (s = 16 (j % 2) + 2 (j / 2) + h: the codes amx_column
// puts in the row), the upper lane of a 64-bit pair at bit 32 + s + 4n.
constexpr uint64_t third_bit_control(int h, int j) {
  const int s = 16 * (j % 2) + 2 * (j / 2) + h;
  uint64_t c = 0;
  for (int n = 0; n < 4; ++n)
    c |= static_cast<uint64_t>(s + 4 * n) << (8 * n) | static_cast<uint64_t>(32 + s + 4 * n) << (8 * (n + 4));
  return c;
}

// The 8 B rows of one 2- or 3-bit block of 16 weight rows from its words as vectors of the 16 rows
// (w0, w1: the pair-layout words; plane: the 3-bit plane, else unused): row q = 4h + j is
// (word h >> 2j) & 0x03030303, plus 4 x the codes' third bits at 3 bits, minus z.
template <int BITS>
LLMC_AMX_TARGET inline void amx_rows_23(__m512i w0, __m512i w1, __m512i plane, __m512i z, uint8_t* out) {
  const __m512i m2 = _mm512_set1_epi32(0x03030303), m1 = _mm512_set1_epi8(1);
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      __m512i c = _mm512_and_si512(_mm512_srli_epi32(h ? w1 : w0, 2 * j), m2);
      if constexpr (BITS == 3) {
        const __m512i third = _mm512_and_si512(
            _mm512_multishift_epi64_epi8(_mm512_set1_epi64(static_cast<long long>(third_bit_control(h, j))), plane), m1);
        c = _mm512_or_si512(c, _mm512_slli_epi16(third, 2));  // bytes 0 / 1 -> 0 / 4, within their byte
      }
      _mm512_store_si512(out + (4 * h + j) * 64, _mm512_sub_epi8(c, z));
    }
}

// The B rows of weight rows n..n+hr-1 (hr <= 16; rows past hr zero) for blocks [kb0, kb1): row
// 8 (kb - kb0) + q of out (64 bytes: 16 rows x 4 codes) holds the codes of the block's columns
// amx_column(BITS, 4q .. 4q + 3). 4 bits from the row-tiled copy (n a multiple of 16): word h of a
// tile block is one vector of 16 rows; its low nibbles are row q = 2h, its high ones q = 2h + 1.
// 2 and 3 bits: amx_rows_23 from the tile's words. From canonical rows the same words, transposed.
// zb (or null): per group, each row's integer zero in all four bytes of its lane (amx_scales): the
// B rows then hold code - z as int8 (the kernel's signed-B products).
template <int BITS>
LLMC_AMX_TARGET void amx_weights(const Problem& p, int n, int hr, int kb0, int kb1, uint8_t* out, const int32_t* zb) {
  const __mmask16 rows = tail_mask(hr);
  const __m512i nib = _mm512_set1_epi8(15);
  auto zeros_of = [&](int kb) {  // the zero bytes of block kb's group
    return zb ? _mm512_load_si512(zb + 16 * (kb * kBlockCodes / p.group)) : _mm512_setzero_si512();
  };
  auto split = [&](__m512i w, __m512i z, uint8_t* o) {
    _mm512_store_si512(o, _mm512_sub_epi8(_mm512_and_si512(w, nib), z));
    _mm512_store_si512(o + 64, _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi32(w, 4), nib), z));
  };
  if (BITS <= 4 && p.tiled != nullptr) {
    static_assert(kPanelBlocks * kBlockCodes % kKc == 0, "a chunk lies in one tiled panel");
    const int pn = kb0 / kPanelBlocks, t = n / kTileRows;
    const size_t sb = p.tl.slice_bytes(pn);
    const uint8_t* tb = p.tiled + p.tl.slice_offset(pn, 0) + static_cast<size_t>(t) * sb;
    for (int kb = kb0; kb < kb1; ++kb) {
      const uint8_t* blk = tb + static_cast<size_t>(kb - pn * kPanelBlocks) * BITS * 64;
      // The tile's next block pair and the next tile's block: short streams the prefetcher misses.
      _mm_prefetch(reinterpret_cast<const char*>(blk + sb), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(blk + sb + 128), _MM_HINT_T0);
      const __m512i z = zeros_of(kb);
      auto word = [&](int h) { return _mm512_maskz_mov_epi32(rows, _mm512_load_si512(blk + 64 * h)); };
      if constexpr (BITS == 4) {
        for (int h = 0; h < 4; ++h) split(word(h), z, out + (8 * (kb - kb0) + 2 * h) * 64);
      } else {
        amx_rows_23<BITS>(word(0), word(1), BITS == 3 ? word(2) : _mm512_setzero_si512(), z, out + 8 * (kb - kb0) * 64);
      }
    }
    return;
  }
  // Canonical rows: 16 / BITS blocks of each of the 16 rows (64 bytes: 2 blocks at 8 bits, 4 at 4, 8
  // at 2; 3 bits: 5 blocks, 15 of the 16 words; masked at the chunk's end), one 16 x 16 transpose of
  // 32-bit words: vector v = word v of every row (gathers, a word per row, took 1.3x the old panel
  // decode at 8 bits). Then each word's bytes (8 bits) or nibbles (4 bits), or each block's words as
  // from a tile (2 and 3 bits).
  const uint8_t* base = p.codes + static_cast<size_t>(n) * p.row_bytes;
  constexpr int kBlocks = 16 / BITS;
  for (int kb = kb0; kb < kb1; kb += kBlocks) {
    const int nb = imin(kBlocks, kb1 - kb), words = nb * BITS;
    const __mmask16 wm = tail_mask(words);
    __m512i v[16];
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r)
      v[r] = r < hr ? _mm512_maskz_loadu_epi32(wm, base + static_cast<size_t>(r) * p.row_bytes + static_cast<size_t>(kb) * 4 * BITS)
                    : _mm512_setzero_si512();
    transpose16_epi32(v);
    if constexpr (BITS < 4) {
      for (int b = 0; b < nb; ++b)
        amx_rows_23<BITS>(v[BITS * b], v[BITS * b + 1], BITS == 3 ? v[BITS * b + 2] : _mm512_setzero_si512(), zeros_of(kb + b),
                          out + 8 * (kb + b - kb0) * 64);
    } else {
      for (int w = 0; w < words; ++w) {
        const __m512i z = zeros_of(kb + w / BITS);
        if constexpr (BITS == 4) split(v[w], z, out + (8 * (kb - kb0) + 2 * w) * 64);  // word w % 4 of block kb + w / 4
        else _mm512_store_si512(out + (8 * (kb - kb0) + w) * 64, _mm512_sub_epi8(v[w], z));
      }
    }
  }
}

// s = scale and sz = scale * zero (fp32) of weight rows n..n+hr-1 in group g as vectors of 16 rows
// (rows past hr: 0): int_panel_rows's values (fp16 to fp32 is exact), one conversion per vector.
// Also: zb = each row's zero as an integer in all four bytes of its lane (rows past hr: 0), and
// whether the zeros are all integers that keep code - z in int8 (4 bits: 0..15; 8 bits: 128, the
// symmetric 8-bit zero): then amx_weights may subtract them from the codes.
// The fp16 values are read as vectors: a row-tiled copy's 16 scales (zeros) of (tile, group) are
// contiguous (QTiledLayout::scales_offset / zeros_offset), canonical rows' are G apart (a gather). (Copied a value at a time into a stack array
// and loaded back as one vector, the loads waited on those stores: ~30% of the kernel's time outside
// its tile products, stores and epilogues; the change made a prefill's linears 4-6% faster.)
// more_rows: row n + hr is this matrix's too (a stacked product's part ends where its tasks do).
template <int BITS>
inline bool amx_scales(const Problem& p, int n, int hr, bool more_rows, int g, float* s, float* sz, int32_t* zb) {
  const __mmask16 rows = tail_mask(hr);
  __m256i s16, z16;
  if (BITS <= 4 && p.tiled != nullptr) {
    const int t = n / kTileRows;
    s16 = _mm256_maskz_loadu_epi16(rows, p.tiled + p.tl.scales_offset(t, g));
    z16 = _mm256_maskz_loadu_epi16(rows, p.tiled + p.tl.zeros_offset(t, g));
  } else if (const size_t first = static_cast<size_t>(n) * p.G + g; g + 1 < p.G || more_rows) {
    // 32-bit gathers at element (n + r) G + g: the fp16 in the low half, the next element in the
    // high half (there is one: a later group of the row, or the next row, which a stacked product's
    // part has where the task has).
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(p.G));
    s16 = _mm512_cvtepi32_epi16(_mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rows, idx, p.scales + first, 2));
    z16 = _mm512_cvtepi32_epi16(_mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rows, idx, p.zeros + first, 2));
  } else {  // the last group of the task's last rows: a value at a time
    alignas(32) uint16_t a[16] = {}, b[16] = {};
    for (int r = 0; r < hr; ++r) {
      a[r] = p.scales[first + static_cast<size_t>(r) * p.G];
      b[r] = p.zeros[first + static_cast<size_t>(r) * p.G];
    }
    s16 = _mm256_load_si256(reinterpret_cast<const __m256i*>(a));
    z16 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b));
  }
  const __m512 sv = _mm512_cvtph_ps(s16);
  const __m512 zv = _mm512_cvtph_ps(z16);
  _mm512_store_ps(s, sv);
  _mm512_store_ps(sz, _mm512_mul_ps(sv, zv));
  _mm512_store_si512(zb, _mm512_mullo_epi32(_mm512_cvttps_epi32(zv), _mm512_set1_epi32(0x01010101)));
  const __mmask16 whole = _mm512_cmp_ps_mask(_mm512_roundscale_ps(zv, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC), zv, _CMP_EQ_OQ);
  const __mmask16 in_range =
      BITS == 8 ? _mm512_cmp_ps_mask(zv, _mm512_set1_ps(128.f), _CMP_EQ_OQ)
                : _mm512_cmp_ps_mask(zv, _mm512_set1_ps(0.f), _CMP_GE_OQ) &
                      _mm512_cmp_ps_mask(zv, _mm512_set1_ps(static_cast<float>((1 << BITS) - 1)), _CMP_LE_OQ);
  return static_cast<__mmask16>(whole & in_range & rows) == rows;
}

// The x-rows of one block of 16 weight rows (n, hr rows; B rows in wb, scales s / sz per group):
// per 16 x-rows all groups into 16 accumulator registers, written to y (+ bias b) once.
template <bool kSplit, bool kIntZ>
__attribute__((always_inline)) inline void amx_block_rows(const Problem& p, int n, __mmask16 k, __m512 b, int kq, int Kk,
                                                          int ng, const uint8_t* wb, const float* s, const float* sz) {
  alignas(64) int32_t c[2][2][16][16];  // two groups' tile sums: [group parity][hi / lo][x-row][weight row]
  const long xs = p.Kp;                  // bytes from one x-row to the next
  for (int m0 = 0; m0 < p.Mp; m0 += 16) {
    const int8_t* ah = p.xhi + static_cast<size_t>(m0) * xs;
    const uint8_t* al = kSplit ? p.xlo + static_cast<size_t>(m0) * xs : nullptr;
    const float* dx = p.xdxT + m0;
    const float* dxs = p.xdxsT + m0;
    __m512 y[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) y[i] = _mm512_setzero_ps();
    // Group j's products, then group j - 1's stores and epilogue (no lambdas: GCC kept the accumulators of a
    // capturing lambda on the stack).
    amx_group<0, kSplit, kIntZ>(kq, ah, al, wb, xs, imin(p.group, Kk) / 4);
    for (int j = 1; j < ng; ++j) {
      const int c0 = j * p.group, nkq = imin(p.group, Kk - c0) / 4;
      const uint8_t* alj = kSplit ? al + c0 : nullptr;
      if (j & 1) {
        amx_group<1, kSplit, kIntZ>(kq, ah + c0, alj, wb + static_cast<size_t>(c0) * 16, xs, nkq);
        amx_store<0, kSplit>(c[0]);
      } else {
        amx_group<0, kSplit, kIntZ>(kq, ah + c0, alj, wb + static_cast<size_t>(c0) * 16, xs, nkq);
        amx_store<1, kSplit>(c[1]);
      }
      amx_epilogue<kSplit, kIntZ>(c[(j - 1) & 1], _mm512_load_ps(s + 16 * (j - 1)), _mm512_load_ps(sz + 16 * (j - 1)),
                                  dx + static_cast<size_t>(j - 1) * p.Mp, dxs + static_cast<size_t>(j - 1) * p.Mp, y);
    }
    if ((ng - 1) & 1) amx_store<1, kSplit>(c[1]);
    else amx_store<0, kSplit>(c[0]);
    amx_epilogue<kSplit, kIntZ>(c[(ng - 1) & 1], _mm512_load_ps(s + 16 * (ng - 1)), _mm512_load_ps(sz + 16 * (ng - 1)),
                                dx + static_cast<size_t>(ng - 1) * p.Mp, dxs + static_cast<size_t>(ng - 1) * p.Mp, y);
    // y = sums + bias, as write_panel_output_avx512 adds them.
    float* yb = p.y + static_cast<size_t>(m0) * p.N + n;
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i)
      if (m0 + i < p.M) _mm512_mask_storeu_ps(yb + static_cast<size_t>(i) * p.N, k, _mm512_add_ps(y[i], b));
  }
}

// Rows [n0, n1) on tiles (n0 a multiple of 16: tasks are), int16 x (kSplit) or int8: per block of 16
// weight rows, the B rows of all of K (amx_weights, 16 bytes a column: L1 / L2) and the scales once,
// then amx_block_rows. (Per 256-column chunk with the sums through y in between, the 8-bit lm_head
// at M = 128 ran 1.16x slower than the first AMX kernel: its y is 25 MB.) A block whose zeros are
// all integers (RTN / GPTQ exports: always; 8 bits: the symmetric zero 128) multiplies x with
// code - z (signed B, tdpbssd / tdpbusd), one fp32 operation a sum less than the zero term after
// (1.1x the prefill at 1 thread) and exact where that term cancelled against the sums in fp32.
template <int BITS, bool kSplit>
LLMC_AMX_TARGET void amx_panel_rows(const Problem& p, int n0, int n1) {
  const int kq = p.group == 32 ? 8 : 16;
  const int Kk = p.Kb * kBlockCodes;           // columns up to the last block with real ones
  const int ng = (Kk + p.group - 1) / p.group;  // groups with real columns
  thread_local Scratch s_w, s_s;
  uint8_t* wb = reinterpret_cast<uint8_t*>(s_w.get(static_cast<size_t>(Kk) * 16 / 4));  // [Kk / 4][64]
  float* s = s_s.get(3 * static_cast<size_t>(ng) * 16);                                // [ng][16], then sz, zb
  float* sz = s + static_cast<size_t>(ng) * 16;
  int32_t* zb = reinterpret_cast<int32_t*>(sz + static_cast<size_t>(ng) * 16);
  amx_begin(kq);
  for (int n = n0; n < n1; n += 16) {
    const int hr = imin(16, n1 - n);
    const __mmask16 k = tail_mask(hr);
    bool intz = true;
    for (int j = 0; j < ng; ++j)
      intz &= amx_scales<BITS>(p, n, hr, n + hr < n1, j, s + 16 * j, sz + 16 * j, zb + 16 * j);
    for (int kc0 = 0; kc0 < Kk; kc0 += kKc)  // (a row-tiled copy's blocks panel by panel)
      amx_weights<BITS>(p, n, hr, kc0 / kBlockCodes, imin(Kk, kc0 + kKc) / kBlockCodes, wb + static_cast<size_t>(kc0) * 16,
                        intz ? zb : nullptr);
    const __m512 b = p.bias ? _mm512_maskz_loadu_ps(k, p.bias + n) : _mm512_setzero_ps();
    if (intz) amx_block_rows<kSplit, true>(p, n, k, b, kq, Kk, ng, wb, s, sz);
    else amx_block_rows<kSplit, false>(p, n, k, b, kq, Kk, ng, wb, s, sz);
  }
  amx_end();
}

// decode_panel<BITS, NR> for the int_panel_rows driver (its code type from wb).
template <int BITS, int NR>
auto panel_decoder(const Problem& p, const NaturalOrder& no) {
  return [&p, &no](int nb, int nr, int kc0, int kcn, auto* wb) { decode_panel<BITS, NR>(p, no, nb, nr, kc0, kcn, wb); };
}

// The panel kernel on AMX tiles where prepare_int_panel chose them (Problem::amx), else on int16 x
// (micro32<int16_t, int16_t>) or, where Problem::xq4 is set, int8 x (micro32<int8_t, uint8_t>).
template <int BITS, class Scales = std::nullptr_t>
void panel_rows_x(const Problem& p, const NaturalOrder& no, int n0, int n1, Scales scales = nullptr) {
  if (p.amx) {
    if (p.xlo != nullptr) amx_panel_rows<BITS, true>(p, n0, n1);  // (reads a tiled copy's scales itself)
    else amx_panel_rows<BITS, false>(p, n0, n1);
  } else if (p.xq4 != nullptr) {
    int_panel_rows<kNr, 32, int8_t, uint8_t>(p, p.xq4, n0, n1, panel_decoder<BITS, kNr>(p, no), micro32<int8_t, uint8_t>,
                                             scales);
  } else {
    int_panel_rows<kNr, 32, int16_t, int16_t>(p, p.xq2, n0, n1, panel_decoder<BITS, kNr>(p, no),
                                              micro32<int16_t, int16_t>, scales);
  }
}

template <int BITS>
void panel_rows(const Problem& p, int n0, int n1) {
  const NaturalOrder no = natural_order(BITS);
  if (p.tiled == nullptr) {
    panel_rows_x<BITS>(p, no, n0, n1);
    return;
  }
  // A row-tiled copy (qtiled.h; 2-4 bits).
  auto scales = [&](int nb, int nr, int g, uint16_t* s16, uint16_t* z16) { tiled_panel_scales(p, nb, nr, g, s16, z16); };
  panel_rows_x<BITS>(p, no, n0, n1, scales);
}

// The 4-bit tile kernel (qtiled.h): MT rows of x (m0..) times tile t, lanes = its 16 weight rows.
// Per tile block and word h (8 codes of each row): (w >> 4j) & 0x000f000f for j = 0..3 holds codes
// 4j + h and 4j + 16 + h of each row as two int16, and one vpdpwssd with the broadcast pair of x for
// those columns adds both products per row. Per group the int32 sums are scaled by s dx with s the
// tile's 16 scales (one vector), and s z dx sum(xq) is subtracted; y is stored 16 rows at a time.
template <int MT, int BPG>
void tile4_rows(const TiledProblem& p, int m0, int t) {
  const QTiledLayout& l = p.l;
  constexpr int bpg = BPG, gpp = kPanelBlocks / BPG;  // blocks per group, groups per tiled panel
  const __m512i mask = _mm512_set1_epi32(0x000f000f);
  // The products and the zero-point terms in two accumulators (one would chain two dependent
  // instructions per group).
  __m512 acc[MT], zacc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = zacc[m] = _mm512_setzero_ps();
  for (int pn = 0; pn < l.panels; ++pn) {
    // The panel's constants once (the layout's helpers divide by the group size).
    const TileSlice ts = tile_slice(p, pn, t);
    const int pg = ts.groups, pb = ts.blocks;
    const uint8_t *slice = ts.codes, *sc = ts.scales, *zr = ts.zeros;
    // Software prefetch of the next tile's slice (codes, scales, zeros: contiguous), spread over this
    // slice's groups. Without it the scales and zeros, a sparse stream next to the codes, missed:
    // bench_decode_stream from memory at group 32 0.60-0.78x the canonical kernel -> 1.30-1.73x,
    // group 64 1.27-1.28x -> 1.35-1.68x, group 128 2.47-2.66x -> 2.18-2.36x (Zen 4, 1 thread).
    const int lines = t + 1 < l.tiles ? static_cast<int>(ts.bytes / 64) : 0;
    const char* next = reinterpret_cast<const char*>(slice + ts.bytes);
    for (int gl = 0; gl < pg; ++gl) {
      const int g = pn * gpp + gl;
      for (int i = gl * lines / pg; i < (gl + 1) * lines / pg; ++i) _mm_prefetch(next + 64 * i, _MM_HINT_T0);
      __m512i Q[MT][4];
      for (int m = 0; m < MT; ++m)
        for (int j = 0; j < 4; ++j) Q[m][j] = _mm512_setzero_si512();
      const int kb0 = gl * bpg, kb1 = imin(kb0 + bpg, pb);  // blocks of the group in the panel
      for (int kbl = kb0; kbl < kb1; ++kbl) {
        const int kb = pn * kPanelBlocks + kbl;
        const uint8_t* tb = slice + static_cast<size_t>(kbl) * 4 * 64;
        for (int h = 0; h < 4; ++h) {
          __m512i w = _mm512_load_si512(tb + 64 * h);
          // One load into a register: GCC otherwise folds the load into each of the four shifts
          // and ands (4 loads of the same line; 1.2x slower, bench_decode_stream, Zen 4).
          asm("" : "+v"(w));
          const __m512i c[4] = {_mm512_and_si512(w, mask), _mm512_and_si512(_mm512_srli_epi32(w, 4), mask),
                                _mm512_and_si512(_mm512_srli_epi32(w, 8), mask), _mm512_and_si512(_mm512_srli_epi32(w, 12), mask)};
          for (int m = 0; m < MT; ++m) {
            const int32_t* pr = p.pairs + ((static_cast<size_t>(m0 + m) * l.blocks + kb) * 4 + h) * 4;
            for (int j = 0; j < 4; ++j) Q[m][j] = _mm512_dpwssd_epi32(Q[m][j], c[j], _mm512_set1_epi32(pr[j]));
          }
        }
      }
      const __m512 s = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(sc + gl * kTileRows * 2)));
      const __m512 z = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(zr + gl * kTileRows * 2)));
      for (int m = 0; m < MT; ++m) {
        const size_t xi = static_cast<size_t>(m0 + m) * l.groups + g;
        const __m512 f = _mm512_mul_ps(s, _mm512_set1_ps(p.dx[xi]));
        const __m512i q = _mm512_add_epi32(_mm512_add_epi32(Q[m][0], Q[m][1]), _mm512_add_epi32(Q[m][2], Q[m][3]));
        acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), f, acc[m]);
        zacc[m] = _mm512_fmadd_ps(_mm512_mul_ps(f, z), _mm512_set1_ps(p.xs[xi]), zacc[m]);
      }
    }
  }
  const int rows = imin(kTileRows, l.N - kTileRows * t);
  const __mmask16 k = tail_mask(rows);
  const __m512 b = p.bias ? _mm512_maskz_loadu_ps(k, p.bias + kTileRows * t) : _mm512_setzero_ps();
  for (int m = 0; m < MT; ++m)
    _mm512_mask_storeu_ps(p.y + static_cast<size_t>(m0 + m) * l.N + kTileRows * t, k, _mm512_add_ps(_mm512_sub_ps(acc[m], zacc[m]), b));
}

}  // namespace

void panel_rows_avx512_vnni(const Problem& p, int n0, int n1) {
  switch (p.bits) {
    case 2: panel_rows<2>(p, n0, n1); break;
    case 3: panel_rows<3>(p, n0, n1); break;
    case 4: panel_rows<4>(p, n0, n1); break;
    default: panel_rows<8>(p, n0, n1); break;  // the dispatcher sends only 2, 3, 4 and 8 bits here
  }
}

void fused_rows_avx512_vnni(const Problem& p, int n0, int n1) { fused_rows_any(p, n0, n1); }

// One (row, group) of x rounded to integers, round_to_int_scalar's bits for kQmax = 127 (int8) or
// 32767 (int16): dx = max|x| / kQmax over the group's n real columns, q = cvtps2dq(x * kQmax / max|x|)
// clamped to +-kQmax (the current rounding mode, as lrint); a non-finite group (NaN / inf: their |x|
// bits lie above every finite one's): inv = 0, so q = -kQmax where x is NaN / inf (cvtps2dq's INT_MIN,
// as lrint's LONG_MIN, clamped) and 0 elsewhere, dx = NaN. q[v] = columns 16v .. 16v + 15 (0 past n)
// for v < kGroup / 16; *sum = sum of q. Shared by the VNNI int8 panel's x and the AMX kernel's.
// kGroup a template argument and kFull (n == kGroup, every group but a short last one) without
// masks: the loops unroll and q stays in registers (with a run-time group the AMX kernel's x took
// ~58 cycles a group of 64, q stored and loaded back; the same bits either way).
template <int kQmax, int kGroup, bool kFull>
__attribute__((always_inline)) inline float round_group(const float* xr, int n, __m512i* q, int* sum) {
  constexpr int kV = kGroup / 16;
  const __m512i absm = _mm512_set1_epi32(0x7fffffff);
  __m512i am = _mm512_setzero_si512();
#pragma GCC unroll 8
  for (int v = 0; v < kV; ++v) {
    const int i = 16 * v;
    if (!kFull && i >= n) break;
    const __m512 xv = kFull ? _mm512_loadu_ps(xr + i) : _mm512_maskz_loadu_ps(tail_mask(n - i), xr + i);
    am = _mm512_max_epi32(am, _mm512_and_si512(_mm512_castps_si512(xv), absm));
  }
  const int32_t abits = _mm512_reduce_max_epi32(am);
  const bool finite = abits < 0x7f800000;
  float amax;
  std::memcpy(&amax, &abits, 4);
  const __m512 inv = _mm512_set1_ps(finite && amax > 0.f ? static_cast<float>(kQmax) / amax : 0.f);
  const __m512i qmin = _mm512_set1_epi32(-kQmax), qmax = _mm512_set1_epi32(kQmax);
  __m512i s = _mm512_setzero_si512();
#pragma GCC unroll 8
  for (int v = 0; v < kV; ++v) {
    const int left = n - 16 * v;
    const __mmask16 k = kFull ? static_cast<__mmask16>(0xffff) : (left > 0 ? tail_mask(left) : 0);
    const __m512 xv = kFull ? _mm512_loadu_ps(xr + 16 * v) : _mm512_maskz_loadu_ps(k, xr + 16 * v);
    const __m512i r = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(xv, inv)), qmax), qmin);
    q[v] = kFull ? r : _mm512_maskz_mov_epi32(k, r);
    s = _mm512_add_epi32(s, q[v]);
  }
  *sum = _mm512_reduce_add_epi32(s);
  return finite ? amax / static_cast<float>(kQmax) : __builtin_nanf("");
}

// round_group for a group of n <= kGroup columns.
template <int kQmax, int kGroup>
__attribute__((always_inline)) inline float round_group(const float* xr, int n, __m512i* q, int* sum) {
  return n == kGroup ? round_group<kQmax, kGroup, true>(xr, n, q, sum) : round_group<kQmax, kGroup, false>(xr, n, q, sum);
}

// f.template operator()<G>() for the group size G = p.group (32, 64 or 128: qformat's).
template <class F>
inline void with_group(int group, F&& f) {
  switch (group) {
    case 32: f(std::integral_constant<int, 32>()); break;
    case 64: f(std::integral_constant<int, 64>()); break;
    default: f(std::integral_constant<int, 128>()); break;
  }
}

// prepare_xq8_panel's rounding on AVX-512 (round_group<127>, bit for bit round_to_int8_scalar),
// stored as 32-bit quads of columns at stride Mp.
void xq8_panel_avx512(const float* x, const Problem& p, int8_t* xq4, float* dxT, float* dxsT) {
  const size_t Mp = static_cast<size_t>(p.Mp);
  std::memset(xq4, 0, static_cast<size_t>(p.Kp) * Mp);
  std::memset(dxT, 0, static_cast<size_t>(p.G) * Mp * sizeof(float));
  std::memset(dxsT, 0, static_cast<size_t>(p.G) * Mp * sizeof(float));
  __m512i q[kXqMaxGroup / 16];
  for (int m = 0; m < p.M; ++m) {
    const float* xr = x + static_cast<size_t>(m) * p.K;
    for (int g = 0; g < p.G; ++g) {
      const int k0 = g * p.group, n = imin(p.K, k0 + p.group) - k0;
      int sum = 0;
      float dx = 0.f;
      with_group(p.group, [&](auto G) { dx = round_group<127, decltype(G)::value>(xr + k0, n, q, &sum); });
      for (int i = 0; i < n; i += 16) {
        alignas(16) int32_t quads[4];
        _mm_store_si128(reinterpret_cast<__m128i*>(quads), _mm512_cvtepi32_epi8(q[i / 16]));
        const int nq = imin(4, (n - i + 3) / 4);
        for (int j = 0; j < nq; ++j)
          std::memcpy(xq4 + (static_cast<size_t>((k0 + i) / 4 + j) * Mp + m) * 4, &quads[j], 4);
      }
      dxT[static_cast<size_t>(g) * Mp + m] = dx;
      dxsT[static_cast<size_t>(g) * Mp + m] = dx * static_cast<float>(sum);
    }
  }
}

// The AMX kernel's x straight from x (Problem::xlo / xhi): round_group<32767> (int16) or <127>
// (int8) per (row, group), stored row-major, each 32-column block permuted to amx_column order by one
// vpermt2d: int16 as lo = q & 255 and hi = q >> 8, int8 as q (in hi). No column pairs or quads in
// between.
namespace {
struct XqRowsCtx {
  const float* x;
  const Problem* p;
  uint8_t* lo;
  int8_t* hi;
  float *dxT, *dxsT;
};

// Where byte j of 64 columns' x bytes goes (the bytes of one 32-column block in amx_column order,
// then the next block's) in the vector that packs their four int32 vectors a, b, c, d (columns 0-15,
// 16-31, ...) with vpack*sdw (a, b) and (c, d), then vpack*swb of those: per 128-bit lane L, column
// 16 v + 4 L + i (i < 4) lands in byte 16 L + 8 (v / 2) + 4 (v % 2) + i. vpermb with this index puts
// the packed bytes in order: 3 shuffles and a permute for 64 bytes where vpermt2d + vpmovdb took 12
// (port 5 bound: the x rounding was ~15% of each prefill GEMM's time).
struct PackedOrder {
  alignas(64) uint8_t idx[64];
};
inline PackedOrder packed_order(int bits) {
  PackedOrder t;
  for (int j = 0; j < 64; ++j) {
    const int e = 32 * (j / 32) + amx_column(bits, j % 32), v = e / 16, l = (e % 16) / 4, i = e % 4;
    t.idx[j] = static_cast<uint8_t>(16 * l + 8 * (v / 2) + 4 * (v % 2) + i);
  }
  return t;
}

// Per group: round_group, then x's bytes (int16: lo = q & 255 and hi = q >> 8; int8: q in hi) by
// packs (exact: the values fit the narrower types) and one vpermb per 64 columns (32 at group 32).
// AVX-512 VBMI: every AMX CPU has it (amx_available checks).
template <int kQmax, int kGroup>
LLMC_AMX_TARGET void xq_rows_block(const XqRowsCtx& c, int m0) {
  const Problem& p = *c.p;
  const size_t Mp = static_cast<size_t>(p.Mp), Kp = static_cast<size_t>(p.Kp);
  const PackedOrder po = packed_order(p.bits);
  const __m512i idx = _mm512_load_si512(po.idx), low8 = _mm512_set1_epi32(255);
  constexpr int kV = kGroup / 16;
  __m512i q[kV < 4 ? 4 : kV];
  for (int m = m0; m < m0 + 16; ++m) {
    int8_t* hr = c.hi + m * Kp;
    uint8_t* lr = kQmax > 127 ? c.lo + m * Kp : nullptr;
    if (m >= p.M) {
      std::memset(hr, 0, Kp);
      if (lr) std::memset(lr, 0, Kp);
      for (int g = 0; g < p.G; ++g) c.dxT[g * Mp + m] = c.dxsT[g * Mp + m] = 0.f;
      continue;
    }
    for (int g = 0; g < p.G; ++g) {
      const int k0 = g * kGroup, n = imin(p.K, k0 + kGroup) - k0;
      int sum = 0;
      const float dx = round_group<kQmax, kGroup>(c.x + static_cast<size_t>(m) * p.K + k0, n, q, &sum);
      if constexpr (kV < 4) q[2] = q[3] = _mm512_setzero_si512();  // group 32: 32 bytes of the 64
#pragma GCC unroll 2
      for (int i = 0; i < kGroup; i += 64) {
        const __m512i* v = q + i / 16;
        auto store = [&](auto* dst, __m512i bytes) {
          if constexpr (kGroup == 32) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k0 + i), _mm512_castsi512_si256(bytes));
          else _mm512_storeu_si512(dst + k0 + i, bytes);
        };
        if constexpr (kQmax > 127) {
          const __m512i lo = _mm512_packus_epi16(_mm512_packus_epi32(_mm512_and_si512(v[0], low8), _mm512_and_si512(v[1], low8)),
                                                 _mm512_packus_epi32(_mm512_and_si512(v[2], low8), _mm512_and_si512(v[3], low8)));
          store(lr, _mm512_permutexvar_epi8(idx, lo));
          const __m512i hi = _mm512_packs_epi16(_mm512_packs_epi32(_mm512_srai_epi32(v[0], 8), _mm512_srai_epi32(v[1], 8)),
                                                _mm512_packs_epi32(_mm512_srai_epi32(v[2], 8), _mm512_srai_epi32(v[3], 8)));
          store(hr, _mm512_permutexvar_epi8(idx, hi));
        } else {
          store(hr, _mm512_permutexvar_epi8(idx, _mm512_packs_epi16(_mm512_packs_epi32(v[0], v[1]), _mm512_packs_epi32(v[2], v[3]))));
        }
      }
      c.dxT[g * Mp + m] = dx;
      c.dxsT[g * Mp + m] = dx * static_cast<float>(sum);
    }
  }
}
}  // namespace

void xq_rows_avx512(const float* x, const Problem& p, int x_bits, uint8_t* lo, int8_t* hi, float* dxT, float* dxsT,
                    int nthreads) {
  XqRowsCtx c{x, &p, lo, hi, dxT, dxsT};
  // Blocks of 16 x-rows are independent: on the kernels' threads (serial, this was ~8% of a
  // 2-thread prefill).
  with_group(p.group, [&](auto G) {
    constexpr int kG = decltype(G)::value;
    if (x_bits == 8)
      parallel_for(nthreads, p.Mp / 16, [](void* v, int t) { xq_rows_block<127, kG>(*static_cast<const XqRowsCtx*>(v), 16 * t); }, &c);
    else
      parallel_for(nthreads, p.Mp / 16, [](void* v, int t) { xq_rows_block<32767, kG>(*static_cast<const XqRowsCtx*>(v), 16 * t); }, &c);
  });
}

template <int BPG>
void tiled4_tiles(const TiledProblem& p, int t0, int t1) {
  for (int t = t0; t < t1; ++t) {
    for (int m0 = 0; m0 < p.M; m0 += 4) {
      switch (imin(4, p.M - m0)) {
        case 1: tile4_rows<1, BPG>(p, m0, t); break;
        case 2: tile4_rows<2, BPG>(p, m0, t); break;
        case 3: tile4_rows<3, BPG>(p, m0, t); break;
        default: tile4_rows<4, BPG>(p, m0, t); break;
      }
    }
  }
}

void tiled4_tiles_vnni(const TiledProblem& p, int t0, int t1) {
  switch (p.l.group) {
    case 32: tiled4_tiles<1>(p, t0, t1); break;
    case 64: tiled4_tiles<2>(p, t0, t1); break;
    default: tiled4_tiles<4>(p, t0, t1); break;
  }
}

}  // namespace llmc::kernels::detail

#include "target_end.inc"
