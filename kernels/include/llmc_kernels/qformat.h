// Packed format of weight-only quantized matrices (2, 3, 4 and 8 bits), shared by the CPU
// kernels, the CUDA kernels and everything that produces quantized weights.
//
// A quantized matrix W has N output rows and K input columns. Per row, groups of `group`
// consecutive columns (group in {32, 64, 128}) share a scale s and a zero point z, both stored as
// IEEE fp16 bit patterns (uint16_t). A code q is an unsigned `bits`-bit integer and dequantizes to
//
//     w = s * (q - z)                       (asymmetric; z need not be an integer)
//
// Padding: K_padded = round_up(K, group). Columns k in [K, K_padded) of every row exist in the
// packed data with code 0 (pack() and quantize_rtn() write 0) and belong to the row's last,
// partial group. They are never meaningful: every kernel treats x[k] = 0 for k >= K, so they add
// nothing; unpack()/dequantize() return only the K real columns. The scale and zero of a partial
// group come from its real columns only.
//
// Memory layout (all little-endian, rows are independent and contiguous):
//   codes : N rows of row_bytes = K_padded * bits / 8 bytes. A row is a sequence of blocks of
//           32 consecutive codes; block kb of row n (codes k = 32*kb .. 32*kb+31) starts at byte
//           n * row_bytes + kb * 4 * bits and is `bits` uint32 words (see Block2/3/4/8 below).
//   scales: N x groups_per_row uint16 (fp16), row-major: scale of (n, k) is scales[n*G + k/group]
//   zeros : same shape and indexing as scales.
// A group always consists of whole blocks (group is a multiple of 32).
//
// Pointer alignment: the CPU kernels accept any alignment. The CUDA kernels need `codes` 16-byte
// aligned (cudaMalloc and torch allocations are) and scales/zeros 2-byte aligned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "llmc_kernels/hd.h"

namespace llmc::kernels {

constexpr int kBlockCodes = 32;  // codes per packed block

// ---- Block layouts (one block = 32 codes = `bits` uint32 words = 4*bits bytes) ---------------
//
// 2 bits: "pair" layout. Code c (i = c % 16, half = c / 16) sits in word (i % 2) at bits
//   [4*(i/2) + 2*half, +2). So nibble k of word h holds the codes i = 2k + h and 16 + i: a SIMD
//   lane holding word h shifted right by 4k has code i in bits 0-1 and code 16 + i in bits 2-3;
//   two 16-entry table lookups (vpermps) then dequantize both without another shift.
struct Block2 {
  uint32_t lo[2];
};
// 3 bits: the low 2 bits of every code in the 2-bit pair layout (lo[0], lo[1]), plus a bit
//   plane: bit c of `hi` is bit 2 of code c (a 16-bit half of it is directly an AVX-512 lane mask).
struct Block3 {
  uint32_t lo[2];
  uint32_t hi;
};
// 4 bits: nibble-interleaved. Code c sits in word (c % 4) at bits [4*(c/4), 4*(c/4)+4). A SIMD
//   lane (or CUDA thread) that holds word d and shifts by 4*f gets code 4*f + d, so a 128-bit load
//   broadcast over 4 lanes plus one variable shift yields 16 consecutive codes.
struct Block4 {
  uint32_t word[4];
};
// 8 bits: natural byte order, byte c is code c.
struct Block8 {
  uint8_t code[32];
};
static_assert(sizeof(Block2) == 8, "2-bit block is 32 codes in 8 bytes");
static_assert(sizeof(Block3) == 12, "3-bit block is 32 codes in 12 bytes");
static_assert(sizeof(Block4) == 16, "4-bit block is 32 codes in 16 bytes");
static_assert(sizeof(Block8) == 32, "8-bit block is 32 codes in 32 bytes");

LLMC_HD constexpr bool valid_bits(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }
LLMC_HD constexpr bool valid_group(int group) { return group == 32 || group == 64 || group == 128; }
LLMC_HD constexpr int block_bytes(int bits) { return 4 * bits; }
LLMC_HD constexpr int round_up(int v, int m) { return (v + m - 1) / m * m; }

// Code c (0..31) of a block given as its `BITS` words.
template <int BITS>
LLMC_HD inline uint32_t block_code(const uint32_t* words, int c) {
  static_assert(BITS == 2 || BITS == 3 || BITS == 4 || BITS == 8, "bits must be 2, 3, 4 or 8");
  if constexpr (BITS == 2 || BITS == 3) {
    const int i = c & 15;
    uint32_t q = (words[i & 1] >> (4 * (i >> 1) + 2 * (c >> 4))) & 3u;
    if constexpr (BITS == 3) q |= ((words[2] >> c) & 1u) << 2;
    return q;
  } else if constexpr (BITS == 4) {
    return (words[c & 3] >> (4 * (c >> 2))) & 0xfu;
  } else {
    return (words[c >> 2] >> (8 * (c & 3))) & 0xffu;
  }
}

// Stores code q (< 2^BITS) as code c of a block (the block must have been zeroed).
template <int BITS>
LLMC_HD inline void block_set_code(uint32_t* words, int c, uint32_t q) {
  if constexpr (BITS == 2 || BITS == 3) {
    const int i = c & 15;
    words[i & 1] |= (q & 3u) << (4 * (i >> 1) + 2 * (c >> 4));
    if constexpr (BITS == 3) words[2] |= ((q >> 2) & 1u) << c;
  } else if constexpr (BITS == 4) {
    words[c & 3] |= (q & 0xfu) << (4 * (c >> 2));
  } else {
    words[c >> 2] |= (q & 0xffu) << (8 * (c & 3));
  }
}

// Runtime-`bits` versions (bits must be valid).
LLMC_HD inline uint32_t block_code(int bits, const uint32_t* words, int c) {
  switch (bits) {
    case 2: return block_code<2>(words, c);
    case 3: return block_code<3>(words, c);
    case 4: return block_code<4>(words, c);
    default: return block_code<8>(words, c);
  }
}
LLMC_HD inline void block_set_code(int bits, uint32_t* words, int c, uint32_t q) {
  switch (bits) {
    case 2: block_set_code<2>(words, c, q); break;
    case 3: block_set_code<3>(words, c, q); break;
    case 4: block_set_code<4>(words, c, q); break;
    default: block_set_code<8>(words, c, q); break;
  }
}

// The dequantization every kernel implements: w = s * (q - z), in fp32.
LLMC_HD inline float dequant(uint32_t q, float scale, float zero) {
  return scale * (static_cast<float>(q) - zero);
}

// Reads the `bits` words of the block starting at p (host: any alignment; device: 4-byte aligned).
LLMC_HD inline void load_block_words(const uint8_t* p, int bits, uint32_t* words) {
#if defined(__CUDA_ARCH__)
  const uint32_t* w = reinterpret_cast<const uint32_t*>(p);
  for (int i = 0; i < bits; ++i) words[i] = w[i];
#else
  std::memcpy(words, p, static_cast<size_t>(bits) * sizeof(uint32_t));
#endif
}

// ---- Index math --------------------------------------------------------------------------------

LLMC_HD inline size_t row_bytes_for(int bits, int K_padded) {
  return static_cast<size_t>(K_padded) / 8 * static_cast<size_t>(bits);
}
// Byte offset of block kb of row n.
LLMC_HD inline size_t block_offset(size_t row_bytes, int bits, int n, int kb) {
  return static_cast<size_t>(n) * row_bytes + static_cast<size_t>(kb) * static_cast<size_t>(block_bytes(bits));
}
// Index into scales/zeros of column k of row n.
LLMC_HD inline size_t group_index(int groups_per_row, int group, int n, int k) {
  return static_cast<size_t>(n) * static_cast<size_t>(groups_per_row) + static_cast<size_t>(k / group);
}

// Sizes of a packed matrix. Build with make_layout() (validates) or QLayout::of() on the device.
struct QLayout {
  int bits = 0, group = 0, N = 0, K = 0;
  int K_padded = 0;         // round_up(K, group)
  int groups_per_row = 0;   // K_padded / group
  int blocks_per_row = 0;   // K_padded / 32
  // Blocks holding real columns, ceil(K / 32): every kernel stops there (the rest of a partial
  // last group is padding whose x is zero; K = 576 with g = 128: 18 of 20 blocks).
  int real_blocks = 0;
  size_t row_bytes = 0;     // K_padded * bits / 8
  size_t code_bytes = 0;    // N * row_bytes
  size_t scale_count = 0;   // N * groups_per_row (entries of scales, and of zeros)
  size_t scale_bytes = 0;   // scale_count * 2 (bytes of scales, and of zeros)

  LLMC_HD static QLayout of(int bits, int group, int N, int K) {
    QLayout l;
    l.bits = bits;
    l.group = group;
    l.N = N;
    l.K = K;
    l.K_padded = round_up(K, group);
    l.groups_per_row = l.K_padded / group;
    l.blocks_per_row = l.K_padded / kBlockCodes;
    l.real_blocks = (K + kBlockCodes - 1) / kBlockCodes;
    l.row_bytes = row_bytes_for(bits, l.K_padded);
    l.code_bytes = static_cast<size_t>(N) * l.row_bytes;
    l.scale_count = static_cast<size_t>(N) * static_cast<size_t>(l.groups_per_row);
    l.scale_bytes = l.scale_count * sizeof(uint16_t);
    return l;
  }
  LLMC_HD size_t total_bytes() const { return code_bytes + 2 * scale_bytes; }
};

// Non-owning view of a packed matrix (host or device pointers).
struct QMatrixView {
  int bits = 0, group = 0, N = 0, K = 0;
  const uint8_t* codes = nullptr;    // QLayout::code_bytes bytes
  const uint16_t* scales = nullptr;  // QLayout::scale_count fp16
  const uint16_t* zeros = nullptr;   // QLayout::scale_count fp16
  LLMC_HD QLayout layout() const { return QLayout::of(bits, group, N, K); }
};

// Dequantized weight (n, k) of a view whose pointers are readable here; k may be in the padding.
LLMC_HD inline float dequant_at(const QMatrixView& w, int n, int k) {
  const QLayout l = w.layout();
  uint32_t words[8];
  load_block_words(w.codes + block_offset(l.row_bytes, w.bits, n, k / kBlockCodes), w.bits, words);
  const size_t gi = group_index(l.groups_per_row, w.group, n, k);
  return dequant(block_code(w.bits, words, k % kBlockCodes), fp16_to_fp32(w.scales[gi]), fp16_to_fp32(w.zeros[gi]));
}

// ---- Host API (qformat.cpp). Bad arguments throw std::invalid_argument naming the argument. ----

// Validated layout: bits in {2,3,4,8}, group in {32,64,128}, 1 <= N, K <= 2^30.
QLayout make_layout(int bits, int group, int N, int K);

// Checks a view's shape and non-null pointers; `who` prefixes the error message.
void validate(const QMatrixView& w, const char* who = "QMatrixView");

// Owning packed matrix.
struct QMatrix {
  QLayout layout;
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales;
  std::vector<uint16_t> zeros;
  QMatrixView view() const {
    return QMatrixView{layout.bits, layout.group, layout.N, layout.K, codes.data(), scales.data(), zeros.data()};
  }
};

// An owning copy of n (>= 1) matrices that share bits, group and K, stacked by rows in order (n = 1:
// a copy of one view): what a stacked product computes with, as one matrix.
QMatrix stacked_copy(const QMatrixView* parts, size_t n);

// Packs row-major uint8 codes [N][K] (each < 2^bits) into `out` (layout.code_bytes bytes).
void pack_codes(const QLayout& layout, const uint8_t* codes, uint8_t* out);
// Builds a QMatrix from codes [N][K] and fp16 scales/zeros [N][groups_per_row].
QMatrix pack(int bits, int group, int N, int K, const uint8_t* codes, const uint16_t* scales, const uint16_t* zeros);
// Inverse of pack_codes: row-major codes [N][K] (padding dropped).
void unpack_codes(const QMatrixView& w, uint8_t* out);
std::vector<uint8_t> unpack_codes(const QMatrixView& w);

// Reference quantizer: round-to-nearest, asymmetric min/max per group over the real columns.
//   lo = min(0, min w), hi = max(0, max w), s = fp16((hi - lo) / (2^bits - 1)) (1 if hi == lo;
//   clamped to the fp16 range), z = clamp(round(-lo / s), 0, 2^bits - 1),
//   q = clamp(round(w / s) + z, 0, 2^bits - 1).
// Because [lo, hi] contains 0, z is an integer and 0 is represented exactly.
QMatrix quantize_rtn(const float* w, int N, int K, int bits, int group);

// Reference dequantization to fp32 [N][K]: out[n*K + k] = dequant(q, s, z).
void dequantize(const QMatrixView& w, float* out);
std::vector<float> dequantize(const QMatrixView& w);

}  // namespace llmc::kernels
