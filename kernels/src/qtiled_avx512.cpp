// AVX-512 kernel of the row-tiled 2/3-bit layout (qtiled.h). Compiled without -m flags; only
// called after the runtime CPUID check in qtiled.cpp (same rules as qgemm_avx512.cpp).
//
// Lane r of a tile block's word h is row r's word: shifting it right by 4k leaves, in bits 0-3,
// the codes i = 2k + h (bits 0-1) and 16 + i (bits 2-3) of that row, and vpermps only reads bits
// 0-3 of each index. So with a table T_i[idx] = ((idx & 3) - 1.5) x_i + ((idx >> 2) - 1.5) x_(16+i)
// one vpermps + one add accumulates 2 codes of 16 rows: per 32 codes x 16 rows, 16 lookups, 16
// adds and 14 shifts (~3 instructions per 32 codes, vs ~6 dequantize-and-FMA in qgemm_avx512.cpp).
// 3 bits add 8 lookups of 4 third bits each (T_j[idx] = sum_b (4 bit_b(idx) - 2) x_(4j+b)).
// A group's sum is scaled per row: y += s * sum + s * (c - z) * sum_group(x), c = 1.5 / 3.5.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "qgemm_impl.h"

#include "target_avx512_begin.inc"

namespace llmc::kernels::detail {
namespace {

inline int imin(int a, int b) { return a < b ? a : b; }
// Software prefetch distance in the (sequential) slice stream. On the 2-vCPU AMD EPYC (Zen 5) VM
// the hardware prefetcher alone left one thread at ~10 GB/s; bench_qgemm, M = 1, 2/3 bits, % of
// memcpy: 512 B 45-62%, 2 KB 77-104%, 4 KB 86-126%, 8 KB 82-126%, 16-32 KB 73-117%.
constexpr int kPrefetchBytes = 8192;
inline __mmask16 tail_mask(int r) { return static_cast<__mmask16>(r >= 16 ? 0xffffu : ((1u << r) - 1u)); }

template <int S>
inline __m512i shr4(__m512i v) {
  if constexpr (S == 0) {
    return v;
  } else {
    return _mm512_srli_epi32(v, 4 * S);
  }
}

// Accumulator chains per row of x: one row needs 4 to hide the add latency, more rows share it.
template <int MT>
constexpr int chains() {
  return MT == 1 ? 4 : 2;
}

// Word-pair step k of one tile block: codes (2k, 16 + 2k) from A and (2k + 1, 17 + 2k) from B.
template <int MT, int S>
inline void pair_step(__m512i A, __m512i B, const float* const* tb, __m512 (*acc)[chains<MT>()]) {
  constexpr int NA = chains<MT>();
  const __m512i ia = shr4<S>(A), ib = shr4<S>(B);
  for (int m = 0; m < MT; ++m) {
    __m512& a = acc[m][(2 * S) % NA];
    __m512& b = acc[m][(2 * S + 1) % NA];
    a = _mm512_add_ps(a, _mm512_permutexvar_ps(ia, _mm512_load_ps(tb[m] + 32 * S)));
    b = _mm512_add_ps(b, _mm512_permutexvar_ps(ib, _mm512_load_ps(tb[m] + 32 * S + 16)));
  }
}

// Third-bit step j: codes 4j .. 4j + 3 of every row.
template <int MT, int S>
inline void hi_step(__m512i H, const float* const* th, __m512 (*acc)[chains<MT>()]) {
  constexpr int NA = chains<MT>();
  const __m512i ih = shr4<S>(H);
  for (int m = 0; m < MT; ++m) {
    acc[m][S % NA] = _mm512_add_ps(acc[m][S % NA], _mm512_permutexvar_ps(ih, _mm512_load_ps(th[m] + 16 * S)));
  }
}

// Rows m0 .. m0 + MT - 1 of x, panel pi, tiles [t0, t1). Partial sums live in y: panel 0 starts
// from the bias (or 0), later panels add.
template <int BITS, int MT>
void panel_tiles(const TiledProblem& p, int m0, int pi, int t0, int t1) {
  constexpr int NA = chains<MT>();
  const QTiledLayout& l = p.l;
  const int bpg = l.group / 32;
  const int pb = l.panel_blocks(pi), pg = l.panel_groups(pi);
  const int kb0 = pi * kPanelBlocks, g0 = kb0 / bpg;
  const size_t slice = l.slice_bytes(pi);
  const __m512 centre = _mm512_set1_ps(BITS == 2 ? 1.5f : 3.5f);
  const uint8_t* sp = p.data + l.slice_offset(pi, t0);
  for (int t = t0; t < t1; ++t, sp += slice) {
    const __mmask16 km = tail_mask(l.N - 16 * t);
    float* yt[MT];
    __m512 tot[MT];
    for (int m = 0; m < MT; ++m) {
      yt[m] = p.y + static_cast<size_t>(m0 + m) * l.N + 16 * t;
      if (pi > 0) {
        tot[m] = _mm512_maskz_loadu_ps(km, yt[m]);
      } else {
        tot[m] = p.bias ? _mm512_maskz_loadu_ps(km, p.bias + 16 * t) : _mm512_setzero_ps();
      }
    }
    const auto* words = reinterpret_cast<const uint32_t*>(sp);
    const auto* scales = reinterpret_cast<const uint16_t*>(sp + static_cast<size_t>(pb) * BITS * 64);
    const uint16_t* zeros = scales + 16 * pg;
    for (int gl = 0; gl < pg; ++gl) {
      __m512 acc[MT][NA];
      for (int m = 0; m < MT; ++m)
        for (int a = 0; a < NA; ++a) acc[m][a] = _mm512_setzero_ps();
      const int j1 = imin(gl * bpg + bpg, pb);
      for (int j = gl * bpg; j < j1; ++j) {
        const uint32_t* wb = words + static_cast<size_t>(j) * BITS * 16;
        for (int o = 0; o < BITS * 64; o += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(wb) + kPrefetchBytes + o, _MM_HINT_T0);
        }
        const float* tb[MT];
        for (int m = 0; m < MT; ++m) tb[m] = p.tab2 + (static_cast<size_t>(m0 + m) * l.blocks + kb0 + j) * 256;
        const __m512i A = _mm512_load_si512(wb), B = _mm512_load_si512(wb + 16);
        pair_step<MT, 0>(A, B, tb, acc);
        pair_step<MT, 1>(A, B, tb, acc);
        pair_step<MT, 2>(A, B, tb, acc);
        pair_step<MT, 3>(A, B, tb, acc);
        pair_step<MT, 4>(A, B, tb, acc);
        pair_step<MT, 5>(A, B, tb, acc);
        pair_step<MT, 6>(A, B, tb, acc);
        pair_step<MT, 7>(A, B, tb, acc);
        if constexpr (BITS == 3) {
          const float* th[MT];
          for (int m = 0; m < MT; ++m) th[m] = p.tabh + (static_cast<size_t>(m0 + m) * l.blocks + kb0 + j) * 128;
          const __m512i H = _mm512_load_si512(wb + 32);
          hi_step<MT, 0>(H, th, acc);
          hi_step<MT, 1>(H, th, acc);
          hi_step<MT, 2>(H, th, acc);
          hi_step<MT, 3>(H, th, acc);
          hi_step<MT, 4>(H, th, acc);
          hi_step<MT, 5>(H, th, acc);
          hi_step<MT, 6>(H, th, acc);
          hi_step<MT, 7>(H, th, acc);
        }
      }
      _mm_prefetch(reinterpret_cast<const char*>(scales + 16 * gl) + kPrefetchBytes, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(zeros + 16 * gl) + kPrefetchBytes, _MM_HINT_T0);
      const __m512 s = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(scales + 16 * gl)));
      const __m512 z = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(zeros + 16 * gl)));
      const __m512 sc = _mm512_mul_ps(s, _mm512_sub_ps(centre, z));  // s * (c - z)
      for (int m = 0; m < MT; ++m) {
        __m512 sum = _mm512_add_ps(acc[m][0], acc[m][1]);
        if constexpr (NA == 4) sum = _mm512_add_ps(sum, _mm512_add_ps(acc[m][2], acc[m][3]));
        tot[m] = _mm512_fmadd_ps(sum, s, tot[m]);
        tot[m] = _mm512_fmadd_ps(sc, _mm512_set1_ps(p.xs[static_cast<size_t>(m0 + m) * l.groups + g0 + gl]), tot[m]);
      }
    }
    for (int m = 0; m < MT; ++m) _mm512_mask_storeu_ps(yt[m], km, tot[m]);
  }
}

template <int BITS>
void tiles(const TiledProblem& p, int t0, int t1) {
  for (int m0 = 0; m0 < p.M; m0 += 4) {
    const int mt = imin(4, p.M - m0);
    for (int pi = 0; pi < p.l.panels; ++pi) {
      switch (mt) {
        case 1: panel_tiles<BITS, 1>(p, m0, pi, t0, t1); break;
        case 2: panel_tiles<BITS, 2>(p, m0, pi, t0, t1); break;
        case 3: panel_tiles<BITS, 3>(p, m0, pi, t0, t1); break;
        default: panel_tiles<BITS, 4>(p, m0, pi, t0, t1); break;
      }
    }
  }
}

}  // namespace

void tiled_tables_avx512(const TiledProblem& p) {
  const __m512 clo = _mm512_setr_ps(-1.5f, -.5f, .5f, 1.5f, -1.5f, -.5f, .5f, 1.5f, -1.5f, -.5f, .5f, 1.5f, -1.5f, -.5f,
                                    .5f, 1.5f);
  const __m512 chi = _mm512_setr_ps(-1.5f, -1.5f, -1.5f, -1.5f, -.5f, -.5f, -.5f, -.5f, .5f, .5f, .5f, .5f, 1.5f, 1.5f,
                                    1.5f, 1.5f);
  __m512 bit[4];  // bit[v][idx] = 4 * bit v of idx - 2
  for (int v = 0; v < 4; ++v) {
    alignas(64) float b[16];
    for (int i = 0; i < 16; ++i) b[i] = ((i >> v) & 1) ? 2.f : -2.f;
    bit[v] = _mm512_load_ps(b);
  }
  const int bpg = p.l.group / 32;
  for (int m = 0; m < p.M; ++m) {
    const float* xr = p.x + static_cast<size_t>(m) * p.l.K;
    __m512 gsum = _mm512_setzero_ps();  // x summed over the current group (fp32 lanes: no serial chain)
    for (int kb = 0; kb < p.l.blocks; ++kb) {
      alignas(64) float xb[32];
      const int n = p.l.K - 32 * kb;  // real columns left (the block's tail past K reads as 0)
      const __m512 x0 = _mm512_maskz_loadu_ps(tail_mask(n), xr + 32 * kb);
      const __m512 x1 = _mm512_maskz_loadu_ps(tail_mask(n - 16 < 0 ? 0 : n - 16), xr + 32 * kb + 16);
      _mm512_store_ps(xb, x0);
      _mm512_store_ps(xb + 16, x1);
      gsum = _mm512_add_ps(gsum, _mm512_add_ps(x0, x1));
      if ((kb + 1) % bpg == 0 || kb + 1 == p.l.blocks) {
        p.xs[static_cast<size_t>(m) * p.l.groups + kb / bpg] = _mm512_reduce_add_ps(gsum);
        gsum = _mm512_setzero_ps();
      }
      float* t2 = p.tab2 + (static_cast<size_t>(m) * p.l.blocks + kb) * 256;
      for (int i = 0; i < 16; ++i) {
        _mm512_store_ps(t2 + 16 * i,
                        _mm512_fmadd_ps(clo, _mm512_set1_ps(xb[i]), _mm512_mul_ps(chi, _mm512_set1_ps(xb[16 + i]))));
      }
      if (p.l.bits == 3) {
        float* th = p.tabh + (static_cast<size_t>(m) * p.l.blocks + kb) * 128;
        for (int j = 0; j < 8; ++j) {
          __m512 v = _mm512_mul_ps(bit[0], _mm512_set1_ps(xb[4 * j]));
          v = _mm512_fmadd_ps(bit[1], _mm512_set1_ps(xb[4 * j + 1]), v);
          v = _mm512_fmadd_ps(bit[2], _mm512_set1_ps(xb[4 * j + 2]), v);
          v = _mm512_fmadd_ps(bit[3], _mm512_set1_ps(xb[4 * j + 3]), v);
          _mm512_store_ps(th + 16 * j, v);
        }
      }
    }
  }
}

void tiled_tiles_avx512(const TiledProblem& p, int t0, int t1) {
  if (p.l.bits == 2) {
    tiles<2>(p, t0, t1);
  } else {
    tiles<3>(p, t0, t1);
  }
}

}  // namespace llmc::kernels::detail

#include "target_end.inc"
