// AVX-512 (F, BW, VL, DQ) kernels. This file is compiled without -m flags: everything after the
// target pragma is generated for AVX-512 and only ever called after a runtime CPUID check
// (qgemm_cpu.cpp). All helpers live in an anonymous namespace (internal linkage), so no
// AVX-512-compiled copy of an inline/template function can be picked by the linker for code that
// runs on other CPUs; no standard-library template is instantiated below the pragma.
//
// Fused kernel (M < 16); every weight is dequantized (w = q*s + (-s*z), one rounding of the
// FMA plus that of s*z; no zero-point folding into sums of x), then one FMA per row of x:
//   2 bit : a block's two words broadcast (vpbroadcastq), one vpsrlvd puts codes i and 16+i in
//           the low nibble of lane i; vpermps with the per-group tables TA[c] = (c&3)*s - s*z and
//           TB[c] = (c>>2)*s - s*z yields 2 x 16 weights. 5 uops per 32 codes.
//   3 bit : as 2 bit for the low two bits; the bit-plane word gives lane masks (kmovw) and a
//           masked add of 4*s completes the weight. 9 uops per 32 codes.
//   4 bit : 128-bit block broadcast to 4 lanes, vpsrlvd, vpermps from T[c] = c*s - s*z.
//   8 bit : vpmovzxbd + vcvtdq2ps, q*s - s*z.
// (On this class of core, kmov k,m16 issues once per cycle while vector adds/FMAs issue twice,
// so a pure bit-plane "masked add of x" scheme is limited by mask loads; the tables avoid that.)
// Panel kernel (M >= 16): dequantize 12 rows x 256 columns to an L1 buffer (each weight once),
// then a 12 x 32 register-blocked outer-product micro kernel over x^T (lanes = rows of x).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "llmc_kernels/qformat.h"
#include "qgemm_impl.h"

#include "target_avx512_begin.inc"

namespace llmc::kernels::detail {
namespace {

constexpr int kGC = 64;  // groups whose scales/zeros are converted to fp32 at a time

inline int imin(int a, int b) { return a < b ? a : b; }

#include "fused_prefetch.inc"

inline __mmask16 tail_mask(int r) { return static_cast<__mmask16>(r >= 16 ? 0xffffu : ((1u << r) - 1u)); }

// fp16[cnt] -> fp32 (cnt <= kGC); lanes past cnt become 0.
inline void cvt_fp16(const uint16_t* src, int cnt, float* out) {
  for (int i = 0; i < cnt; i += 16) {
    const __m256i h = _mm256_maskz_loadu_epi16(tail_mask(cnt - i), src + i);
    _mm512_store_ps(out + i, _mm512_cvtph_ps(h));
  }
}

// kmovw k, m16 straight from memory (GCC compiles _load_mask16 to movzx + kmovw k, r32).
inline __mmask16 load_mask(const uint8_t* p) {
  __mmask16 k;
  __asm__("kmovw %1, %0" : "=k"(k) : "m"(*reinterpret_cast<const uint16_t*>(p)));
  return k;
}

// Sum of 16 lanes in a fixed order, the one the 4-row reduction of fused_tile follows too:
// 128-bit chunks (c0 + c2) + (c1 + c3), then lanes (l0 + l2) + (l1 + l3).
inline float hsum16(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 c = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  const __m128 d = _mm_add_ps(c, _mm_shuffle_ps(c, c, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm_cvtss_f32(_mm_add_ss(d, _mm_shuffle_ps(d, d, _MM_SHUFFLE(1, 1, 1, 1))));
}

inline __m512 iota16() { return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }

// 2/3-bit pair layout: lane i = 2k + h of a broadcast qword sees word h; shifting by 4k puts
// code i in bits 0-1 and code 16 + i in bits 2-3.
inline __m512i pair_shifts() { return _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28); }
inline __m512 idx_lo2() { return _mm512_setr_ps(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3); }
inline __m512 idx_hi2() { return _mm512_setr_ps(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3); }
inline __m512i load_pair_words(const uint8_t* blk) {
  int64_t v;
  __builtin_memcpy(&v, blk, 8);
  return _mm512_set1_epi64(v);
}

// Lane i of step j (codes 16j + i) of a 4-bit block broadcast to four 128-bit lanes: word i % 4,
// nibble 4j + i / 4.
inline __m512i shifts4(int j) {
  return _mm512_add_epi32(_mm512_set1_epi32(16 * j),
                          _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12));
}

// ---------------------------------------------------------------------------------------------
// Fused kernel: MT rows of x (m0..) times NT weight rows (n0..), whole K.
template <int BITS, int MT, int NT>
void fused_tile(const Problem& p, int m0, int n0) {
  const int bpg = p.group / kBlockCodes;
  const uint8_t* rows[NT];
  for (int n = 0; n < NT; ++n) rows[n] = p.codes + static_cast<size_t>(n0 + n) * p.row_bytes;
  const float* xr[MT];
  for (int m = 0; m < MT; ++m) xr[m] = p.xp + static_cast<size_t>(m0 + m) * p.Kp;

  __m512 acc[MT][NT];
  for (int m = 0; m < MT; ++m)
    for (int n = 0; n < NT; ++n) acc[m][n] = _mm512_setzero_ps();
  alignas(64) float sc[NT][kGC];
  alignas(64) float zc[NT][kGC];
  const __m512 iota = iota16();
  const __m512i sh0 = shifts4(0), sh1 = shifts4(1);
  const __m512 ilo = idx_lo2(), ihi = idx_hi2();
  const __m512i psh = pair_shifts();

  // Software prefetch of a tile about 4 KB ahead (fused_driver.inc): its scales/zeros now, its
  // codes a slice per block below.
  const TilePrefetch<BITS, NT> pf(p, n0, 4096);
  const bool pf_codes = pf.codes();
  if (pf.on) {
    const size_t g_lo = static_cast<size_t>(pf.row) * p.G, g_n = static_cast<size_t>(NT) * p.G;
    for (size_t b = 0; b < g_n * 2; b += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(p.scales + g_lo) + b, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p.zeros + g_lo) + b, _MM_HINT_T0);
    }
  }

  for (int g0 = 0; g0 < p.G; g0 += kGC) {
    const int gc = imin(kGC, p.G - g0);
    for (int n = 0; n < NT; ++n) {
      cvt_fp16(p.scales + static_cast<size_t>(n0 + n) * p.G + g0, gc, sc[n]);
      cvt_fp16(p.zeros + static_cast<size_t>(n0 + n) * p.G + g0, gc, zc[n]);
      // zc <- -s*z: tables and weights become one FMA, c*s + (-s*z).
      for (int i = 0; i < gc; i += 16) {
        _mm512_store_ps(zc[n] + i, _mm512_mul_ps(_mm512_load_ps(sc[n] + i), _mm512_sub_ps(_mm512_setzero_ps(), _mm512_load_ps(zc[n] + i))));
      }
    }
    for (int gi = 0; gi < gc; ++gi) {
      const int kb0 = (g0 + gi) * bpg, kb1 = imin(kb0 + bpg, p.Kb);
      if constexpr (BITS <= 3) {
        __m512 TA[NT], TB[NT], S4[NT];
        for (int n = 0; n < NT; ++n) {
          const __m512 s = _mm512_set1_ps(sc[n][gi]), nsz = _mm512_set1_ps(zc[n][gi]);
          TA[n] = _mm512_fmadd_ps(ilo, s, nsz);
          TB[n] = _mm512_fmadd_ps(ihi, s, nsz);
          if constexpr (BITS == 3) S4[n] = _mm512_mul_ps(s, _mm512_set1_ps(4.f));
        }
        for (int kb = kb0; kb < kb1; ++kb) {
          if (pf_codes) pf.block(kb);
          __m512 x0[MT], x1[MT];
          for (int m = 0; m < MT; ++m) {
            x0[m] = _mm512_loadu_ps(xr[m] + kb * kBlockCodes);
            x1[m] = _mm512_loadu_ps(xr[m] + kb * kBlockCodes + 16);
          }
          for (int n = 0; n < NT; ++n) {
            const uint8_t* blk = rows[n] + static_cast<size_t>(kb) * (4 * BITS);
            const __m512i v = _mm512_srlv_epi32(load_pair_words(blk), psh);
            __m512 wa = _mm512_permutexvar_ps(v, TA[n]);
            __m512 wb = _mm512_permutexvar_ps(v, TB[n]);
            if constexpr (BITS == 3) {
              wa = _mm512_mask_add_ps(wa, load_mask(blk + 8), wa, S4[n]);
              wb = _mm512_mask_add_ps(wb, load_mask(blk + 10), wb, S4[n]);
            }
            for (int m = 0; m < MT; ++m) {
              acc[m][n] = _mm512_fmadd_ps(wa, x0[m], acc[m][n]);
              acc[m][n] = _mm512_fmadd_ps(wb, x1[m], acc[m][n]);
            }
          }
        }
      } else if constexpr (BITS == 4) {
        __m512 T[NT];
        for (int n = 0; n < NT; ++n) {
          T[n] = _mm512_fmadd_ps(iota, _mm512_set1_ps(sc[n][gi]), _mm512_set1_ps(zc[n][gi]));
        }
        for (int kb = kb0; kb < kb1; ++kb) {
          if (pf_codes) pf.block(kb);
          __m512i v[NT];
          for (int n = 0; n < NT; ++n) {
            v[n] = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[n] + kb * 16)));
          }
          for (int j = 0; j < 2; ++j) {
            __m512 xv[MT];
            for (int m = 0; m < MT; ++m) xv[m] = _mm512_loadu_ps(xr[m] + kb * kBlockCodes + 16 * j);
            for (int n = 0; n < NT; ++n) {
              const __m512 w = _mm512_permutexvar_ps(_mm512_srlv_epi32(v[n], j == 0 ? sh0 : sh1), T[n]);
              for (int m = 0; m < MT; ++m) acc[m][n] = _mm512_fmadd_ps(w, xv[m], acc[m][n]);
            }
          }
        }
      } else {
        __m512 s[NT], z[NT];
        for (int n = 0; n < NT; ++n) {
          s[n] = _mm512_set1_ps(sc[n][gi]);
          z[n] = _mm512_set1_ps(zc[n][gi]);
        }
        for (int kb = kb0; kb < kb1; ++kb) {
          if (pf_codes) pf.block(kb);
          for (int j = 0; j < 2; ++j) {
            __m512 xv[MT];
            for (int m = 0; m < MT; ++m) xv[m] = _mm512_loadu_ps(xr[m] + kb * kBlockCodes + 16 * j);
            for (int n = 0; n < NT; ++n) {
              const __m128i q8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[n] + kb * 32 + 16 * j));
              const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q8));
              const __m512 w = _mm512_fmadd_ps(q, s[n], z[n]);
              for (int m = 0; m < MT; ++m) acc[m][n] = _mm512_fmadd_ps(w, xv[m], acc[m][n]);
            }
          }
        }
      }
    }
  }

  for (int m = 0; m < MT; ++m) {
    float* y = p.y + static_cast<size_t>(m0 + m) * p.N + n0;
    if constexpr (NT == 4) {
      // The four rows' sums at once (14 instructions instead of four 8-instruction reductions; a
      // tile of K = 576 is only ~90 instructions of work per row). 128-bit chunks: a = [a0 a1 a2 a3].
      const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(acc[m][0], acc[m][1], _MM_SHUFFLE(1, 0, 1, 0)),
                                      _mm512_shuffle_f32x4(acc[m][0], acc[m][1], _MM_SHUFFLE(3, 2, 3, 2)));
      const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(acc[m][2], acc[m][3], _MM_SHUFFLE(1, 0, 1, 0)),
                                      _mm512_shuffle_f32x4(acc[m][2], acc[m][3], _MM_SHUFFLE(3, 2, 3, 2)));
      // ab = [a0+a2, a1+a3, b0+b2, b1+b3]; t = chunk sums [A, B, C, D], 4 lanes each.
      __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
      // Lanes (l0 + l2) + (l1 + l3): hsum16's order, so a row's sum has the same bits whichever
      // tile width computed it (qgemm_cpu_stacked cuts tiles at the parts' ends).
      t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(1, 0, 3, 2)));
      t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(2, 3, 0, 1)));
      __m128 v = _mm512_castps512_ps128(
          _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), t));
      if (p.bias) v = _mm_add_ps(v, _mm_loadu_ps(p.bias + n0));
      _mm_storeu_ps(y, v);
    } else {
      for (int n = 0; n < NT; ++n) {
        float v = hsum16(acc[m][n]);
        if (p.bias) v += p.bias[n0 + n];
        y[n] = v;
      }
    }
  }
}

// Weight rows per tile: as many as the 32 zmm registers allow for MT rows of x.
template <int BITS, int MT>
constexpr int fused_nt() {
  if constexpr (BITS <= 3) return MT <= 2 ? 4 : 2;
  return MT <= 3 ? 4 : 3;
}

#include "fused_driver.inc"

// ---------------------------------------------------------------------------------------------
// Panel kernel.
constexpr int kNr = kPanelNr512;
constexpr int kKc = kPanelKc;

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  __builtin_memcpy(&v, p, 2);
  return v;
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

// Dequantizes rows nb..nb+nr-1, columns kc0..kc0+kcn-1 into wb[r * kKc + k] (rows >= nr zeroed).
// TILED (2/3 bits): from the row-tiled copy, the same values as from the canonical layout.
template <int BITS, bool TILED = false>
void dequant_panel(const Problem& p, int nb, int nr, int kc0, int kcn, float* wb) {
  const int bpg = p.group / kBlockCodes;
  const __m512 iota = iota16();
  const __m512i sh0 = shifts4(0), sh1 = shifts4(1);
  const __m512 ilo = idx_lo2(), ihi = idx_hi2();
  const __m512i psh = pair_shifts();
  for (int r = 0; r < kNr; ++r) {
    float* dst = wb + r * kKc;
    if (r >= nr) {
      for (int k = 0; k < kcn; k += 16) _mm512_store_ps(dst + k, _mm512_setzero_ps());
      continue;
    }
    const int n = nb + r;
    const uint8_t* row = TILED ? nullptr : p.codes + static_cast<size_t>(n) * p.row_bytes;
    // Tiled copy (qtiled.h): row n is lane n % 16 of tile n / 16; word h of its block kb is uint32
    // h * 16 + lane of tile block (t, kb), its scale / zero entry `lane` of the tile's 16 per group.
    // Every column of one call lies in one tiled panel of 512 (kKc = 256 divides it): the row's slice
    // of that panel holds its codes, then the panel's scales and zeros.
    static_assert(kPanelBlocks * kBlockCodes % kKc == 0, "a panel-kernel chunk lies in one tiled panel");
    const uint8_t* slice = nullptr;
    const uint8_t* sc = nullptr;
    const uint8_t* zr = nullptr;
    int g0 = 0;
    if constexpr (TILED) {
      const int pn = kc0 / (kPanelBlocks * kBlockCodes), lane = n % kTileRows;
      slice = p.tiled + p.tl.slice_offset(pn, n / kTileRows) + 4 * lane;
      sc = p.tiled + p.tl.slice_offset(pn, n / kTileRows) + static_cast<size_t>(p.tl.panel_blocks(pn)) * BITS * 64 +
           2 * lane;
      zr = sc + static_cast<size_t>(p.tl.panel_groups(pn)) * kTileRows * 2;
      g0 = pn * (kPanelBlocks * kBlockCodes / p.group);
    }
    // Per-group constants, rebuilt only when the group changes.
    int cur_g = -1;
    __m512 s = _mm512_setzero_ps(), nsz = s, T = s, TA = s, TB = s, S4 = s;
    for (int kb = kc0 / kBlockCodes; kb < (kc0 + kcn) / kBlockCodes; ++kb) {
      if (kb / bpg != cur_g) {
        cur_g = kb / bpg;
        uint16_t hs, hz;
        if constexpr (TILED) {
          hs = load_u16(sc + (cur_g - g0) * kTileRows * 2);
          hz = load_u16(zr + (cur_g - g0) * kTileRows * 2);
        } else {
          const size_t gi = static_cast<size_t>(n) * p.G + cur_g;
          hs = p.scales[gi];
          hz = p.zeros[gi];
        }
        const float sf = _cvtsh_ss(hs);
        s = _mm512_set1_ps(sf);
        nsz = _mm512_set1_ps(-sf * _cvtsh_ss(hz));
        if constexpr (BITS <= 3) {
          TA = _mm512_fmadd_ps(ilo, s, nsz);
          TB = _mm512_fmadd_ps(ihi, s, nsz);
          S4 = _mm512_mul_ps(s, _mm512_set1_ps(4.f));
        } else if constexpr (BITS == 4) {
          T = _mm512_fmadd_ps(iota, s, nsz);
        }
      }
      float* out = dst + (kb * kBlockCodes - kc0);
      if constexpr (TILED) {
        static_assert(BITS <= 3, "tiled copies are 2 or 3 bits");
        const uint8_t* tb = slice + (kb % kPanelBlocks) * BITS * 64;
        const uint64_t pair = load_u32(tb) | static_cast<uint64_t>(load_u32(tb + 4 * kTileRows)) << 32;
        const __m512i v = _mm512_srlv_epi32(_mm512_set1_epi64(static_cast<int64_t>(pair)), psh);
        __m512 wa = _mm512_permutexvar_ps(v, TA);
        __m512 wb = _mm512_permutexvar_ps(v, TB);
        if constexpr (BITS == 3) {
          wa = _mm512_mask_add_ps(wa, load_mask(tb + 8 * kTileRows), wa, S4);  // the bit plane, word 2
          wb = _mm512_mask_add_ps(wb, load_mask(tb + 8 * kTileRows + 2), wb, S4);
        }
        _mm512_store_ps(out, wa);
        _mm512_store_ps(out + 16, wb);
        continue;
      }
      const uint8_t* blk = row + static_cast<size_t>(kb) * (4 * BITS);
      if constexpr (BITS <= 3) {
        const __m512i v = _mm512_srlv_epi32(load_pair_words(blk), psh);
        __m512 wa = _mm512_permutexvar_ps(v, TA);
        __m512 wb = _mm512_permutexvar_ps(v, TB);
        if constexpr (BITS == 3) {
          wa = _mm512_mask_add_ps(wa, load_mask(blk + 8), wa, S4);
          wb = _mm512_mask_add_ps(wb, load_mask(blk + 10), wb, S4);
        }
        _mm512_store_ps(out, wa);
        _mm512_store_ps(out + 16, wb);
      } else if constexpr (BITS == 4) {
        const __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
        _mm512_store_ps(out, _mm512_permutexvar_ps(_mm512_srlv_epi32(v, sh0), T));
        _mm512_store_ps(out + 16, _mm512_permutexvar_ps(_mm512_srlv_epi32(v, sh1), T));
      } else {
        for (int j = 0; j < 2; ++j) {
          const __m128i q8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * j));
          const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q8));
          _mm512_store_ps(out + 16 * j, _mm512_fmadd_ps(q, s, nsz));
        }
      }
    }
  }
}

// acc[r][v] (r < 12 weight rows, v < MV 16-lane vectors of x rows) over kcn columns.
template <int MV>
void micro(const float* xT, int Mp, const float* wb, int kcn, float* yT, int nr, bool first) {
  __m512 acc[kNr][MV];
  for (int r = 0; r < kNr; ++r) {
    for (int v = 0; v < MV; ++v) {
      acc[r][v] = (first || r >= nr) ? _mm512_setzero_ps() : _mm512_loadu_ps(yT + static_cast<size_t>(r) * Mp + 16 * v);
    }
  }
  for (int k = 0; k < kcn; ++k) {
    const float* xk = xT + static_cast<size_t>(k) * Mp;
    __m512 xv[MV];
    for (int v = 0; v < MV; ++v) xv[v] = _mm512_load_ps(xk + 16 * v);
    for (int r = 0; r < kNr; ++r) {
      const __m512 w = _mm512_set1_ps(wb[r * kKc + k]);
      for (int v = 0; v < MV; ++v) acc[r][v] = _mm512_fmadd_ps(xv[v], w, acc[r][v]);
    }
  }
  for (int r = 0; r < nr; ++r) {
    for (int v = 0; v < MV; ++v) _mm512_storeu_ps(yT + static_cast<size_t>(r) * Mp + 16 * v, acc[r][v]);
  }
}

template <int BITS, bool TILED = false>
void panel_rows(const Problem& p, int n0, int n1) {
  alignas(64) float wb[kNr * kKc];
  const int Kk = p.Kb * kBlockCodes;  // columns up to the last block with real ones
  for (int kc0 = 0; kc0 < Kk; kc0 += kKc) {
    const int kcn = imin(kKc, Kk - kc0);
    const float* xT = p.xT + static_cast<size_t>(kc0) * p.Mp;
    for (int nb = n0; nb < n1; nb += kNr) {
      const int nr = imin(kNr, n1 - nb);
      dequant_panel<BITS, TILED>(p, nb, nr, kc0, kcn, wb);
      float* yT = p.yT + static_cast<size_t>(nb) * p.Mp;
      int m0 = 0;
      for (; m0 + 32 <= p.Mp; m0 += 32) micro<2>(xT + m0, p.Mp, wb, kcn, yT + m0, nr, kc0 == 0);
      if (m0 < p.Mp) micro<1>(xT + m0, p.Mp, wb, kcn, yT + m0, nr, kc0 == 0);
    }
  }
  write_panel_output_avx512(p, n0, n1);
}

#include "transpose16.inc"

// In-place transpose of a 16 x 16 matrix of floats (row i = r[i]): the words moved as they are.
inline void transpose16_ps(__m512 r[16]) {
  __m512i v[16];
  for (int i = 0; i < 16; ++i) v[i] = _mm512_castps_si512(r[i]);
  transpose16_epi32(v);
  for (int i = 0; i < 16; ++i) r[i] = _mm512_castsi512_ps(v[i]);
}

}  // namespace

// As write_panel_output_avx2 with 16 x 16 blocks.
void write_panel_output_avx512(const Problem& p, int n0, int n1) {
  const int nv = n0 + (n1 - n0) / 16 * 16;  // whole blocks of 16 outputs up to here
  for (int m0 = 0; m0 < p.M; m0 += 16) {  // Mp is a multiple of 16
    const int mb = imin(16, p.M - m0);
    float* y = p.y + static_cast<size_t>(m0) * p.N;
    for (int n = n0; n < nv; n += 16) {
      __m512 v[16];  // v[j]: yT[n + j][m0 .. m0 + 15]; after the transpose v[i]: y[m0 + i][n .. n + 15]
      for (int j = 0; j < 16; ++j) v[j] = _mm512_loadu_ps(p.yT + static_cast<size_t>(n + j) * p.Mp + m0);
      transpose16_ps(v);
      const __m512 b = p.bias ? _mm512_loadu_ps(p.bias + n) : _mm512_setzero_ps();
      for (int i = 0; i < mb; ++i) _mm512_storeu_ps(y + static_cast<size_t>(i) * p.N + n, _mm512_add_ps(v[i], b));
    }
  }
  write_panel_output(p, nv, n1);  // the outputs past the last whole block: the scalar reference
}

void fused_rows_avx512(const Problem& p, int n0, int n1) { fused_rows_any(p, n0, n1); }

void panel_rows_avx512(const Problem& p, int n0, int n1) {
  if (p.tiled != nullptr) {
    if (p.bits == 2) panel_rows<2, true>(p, n0, n1);
    else panel_rows<3, true>(p, n0, n1);
    return;
  }
  switch (p.bits) {
    case 2: panel_rows<2>(p, n0, n1); break;
    case 3: panel_rows<3>(p, n0, n1); break;
    case 4: panel_rows<4>(p, n0, n1); break;
    default: panel_rows<8>(p, n0, n1); break;
  }
}

}  // namespace llmc::kernels::detail

#include "target_end.inc"
