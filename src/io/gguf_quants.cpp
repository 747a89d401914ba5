// ggml block formats and their fp32 dequantization.
//
// Each quantized type stores blocks of `block_size` weights. The block structs below mirror
// ggml's (ggml-common.h) byte for byte; their natural layout has no padding (all members are
// bytes or 16-bit halves at even offsets), which the static_asserts pin down. Blocks are copied
// out of the mapped file with memcpy, because a file's alignment only guarantees the tensor start
// is a multiple of general.alignment, not that 16-bit fields land on even addresses.
//
// The arithmetic follows ggml's reference dequantizers operation for operation (e.g. Q4_1 is
// q*d + m, Q6_K is (d*scale)*q), so results are bitwise what llama.cpp and gguf-py compute.
#include <cstring>
#include <vector>

#include "llmc/core/dtype.h"
#include "llmc/core/error.h"
#include "llmc/io/gguf.h"

namespace llmc {

namespace {

constexpr int QK4_0 = 32, QK4_1 = 32, QK5_0 = 32, QK5_1 = 32, QK8_0 = 32;
constexpr int QK_K = 256;      // super-block size of the k-quants
constexpr int K_SCALE_SIZE = 12;  // packed 6-bit scales and mins of Q4_K/Q5_K

// Q4_0: 32 weights = d * (q - 8), q 4-bit. qs[j] holds weight j (low nibble) and j+16 (high).
struct BlockQ4_0 {
  uint16_t d;  // fp16 scale
  uint8_t qs[QK4_0 / 2];
};
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block is 18 bytes");

// Q4_1: 32 weights = d * q + m, q 4-bit unsigned; nibble order as Q4_0.
struct BlockQ4_1 {
  uint16_t d;  // fp16 scale
  uint16_t m;  // fp16 offset (min)
  uint8_t qs[QK4_1 / 2];
};
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block is 20 bytes");

// Q5_0: 32 weights = d * (q - 16), q 5-bit: low 4 bits as Q4_0, bit 4 of weight j in bit j of qh
// (a little-endian u32).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[QK5_0 / 2];
};
static_assert(sizeof(BlockQ5_0) == 22, "Q5_0 block is 22 bytes");

// Q5_1: 32 weights = d * q + m, q 5-bit unsigned; bits as Q5_0.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[QK5_1 / 2];
};
static_assert(sizeof(BlockQ5_1) == 24, "Q5_1 block is 24 bytes");

// Q8_0: 32 weights = d * q, q int8.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[QK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block is 34 bytes");

// Q4_K: 256 weights in 8 sub-blocks of 32; weight = d*sc[s]*q - dmin*mn[s], q 4-bit, with 6-bit
// sub-block scales sc and mins mn packed into 12 bytes (see scale_min_k4). qs is laid out in
// 4 chunks of 32 bytes: chunk c holds sub-block 2c in the low nibbles, 2c+1 in the high ones.
struct BlockQ4_K {
  uint16_t d;     // fp16 super-block scale for the scales
  uint16_t dmin;  // fp16 super-block scale for the mins
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qs[QK_K / 2];
};
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block is 144 bytes");

// Q5_K: as Q4_K with a 5th bit per weight in qh: for chunk c, bit 2c of qh[l] is the high bit of
// the low-nibble weight l and bit 2c+1 that of the high-nibble weight.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qh[QK_K / 8];
  uint8_t qs[QK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 176, "Q5_K block is 176 bytes");

// Q6_K: 256 weights in 16 sub-blocks of 16; weight = d * scales[s] * (q - 32), q 6-bit: low 4 bits
// in ql, high 2 bits in qh; int8 sub-block scales. Two halves of 128 weights, each using 64 ql
// bytes, 32 qh bytes and 8 scales (see dequant_q6_k for the exact interleave).
struct BlockQ6_K {
  uint8_t ql[QK_K / 2];
  uint8_t qh[QK_K / 4];
  int8_t scales[QK_K / 16];
  uint16_t d;  // fp16 super-block scale
};
static_assert(sizeof(BlockQ6_K) == 210, "Q6_K block is 210 bytes");

template <typename Block>
Block load_block(const uint8_t* src, int64_t i) {
  Block b;
  std::memcpy(&b, src + i * static_cast<int64_t>(sizeof(Block)), sizeof(Block));
  return b;
}

// ---- plain element types (block size 1) ----

void dequant_f32(const uint8_t* src, float* dst, int64_t n) { std::memcpy(dst, src, static_cast<size_t>(n) * 4); }

void dequant_f16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    dst[i] = f16_to_f32(h);
  }
}

void dequant_bf16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    dst[i] = bf16_to_f32(h);
  }
}

template <typename T>
void dequant_plain(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + static_cast<int64_t>(sizeof(T)) * i, sizeof(T));
    dst[i] = static_cast<float>(v);
  }
}

// ---- 32-weight blocks ----

void dequant_q4_0(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += QK4_0) {
    const auto b = load_block<BlockQ4_0>(src, i);
    const float d = f16_to_f32(b.d);
    for (int j = 0; j < QK4_0 / 2; ++j) {
      const int x0 = (b.qs[j] & 0x0f) - 8;
      const int x1 = (b.qs[j] >> 4) - 8;
      y[j] = x0 * d;
      y[j + QK4_0 / 2] = x1 * d;
    }
  }
}

void dequant_q4_1(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += QK4_1) {
    const auto b = load_block<BlockQ4_1>(src, i);
    const float d = f16_to_f32(b.d), m = f16_to_f32(b.m);
    for (int j = 0; j < QK4_1 / 2; ++j) {
      const int x0 = b.qs[j] & 0x0f;
      const int x1 = b.qs[j] >> 4;
      y[j] = x0 * d + m;
      y[j + QK4_1 / 2] = x1 * d + m;
    }
  }
}

void dequant_q5_0(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += QK5_0) {
    const auto b = load_block<BlockQ5_0>(src, i);
    const float d = f16_to_f32(b.d);
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    for (int j = 0; j < QK5_0 / 2; ++j) {
      const uint8_t h0 = ((qh >> j) << 4) & 0x10;
      const uint8_t h1 = (qh >> (j + 12)) & 0x10;
      const int x0 = ((b.qs[j] & 0x0f) | h0) - 16;
      const int x1 = ((b.qs[j] >> 4) | h1) - 16;
      y[j] = x0 * d;
      y[j + QK5_0 / 2] = x1 * d;
    }
  }
}

void dequant_q5_1(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += QK5_1) {
    const auto b = load_block<BlockQ5_1>(src, i);
    const float d = f16_to_f32(b.d), m = f16_to_f32(b.m);
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    for (int j = 0; j < QK5_1 / 2; ++j) {
      const uint8_t h0 = ((qh >> j) << 4) & 0x10;
      const uint8_t h1 = (qh >> (j + 12)) & 0x10;
      const int x0 = (b.qs[j] & 0x0f) | h0;
      const int x1 = (b.qs[j] >> 4) | h1;
      y[j] = x0 * d + m;
      y[j + QK5_1 / 2] = x1 * d + m;
    }
  }
}

void dequant_q8_0(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += QK8_0) {
    const auto b = load_block<BlockQ8_0>(src, i);
    const float d = f16_to_f32(b.d);
    for (int j = 0; j < QK8_0; ++j) y[j] = b.qs[j] * d;
  }
}

// ---- k-quants (256-weight super-blocks) ----

// Scale and min of sub-block j (0..7) from the 12 packed bytes: sub-blocks 0-3 keep 6 bits in
// bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 keep their low 4 bits in the nibbles of bytes
// 8-11 and their top 2 bits in the spare top bits of bytes 0-7.
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void dequant_q4_k(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockQ4_K>(src, i);
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    const uint8_t* q = b.qs;
    for (int c = 0; c < 4; ++c, q += 32) {
      uint8_t sc, mn;
      scale_min_k4(2 * c, b.scales, &sc, &mn);
      const float d1 = d * sc, m1 = dmin * mn;
      scale_min_k4(2 * c + 1, b.scales, &sc, &mn);
      const float d2 = d * sc, m2 = dmin * mn;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0x0f) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
    }
  }
}

void dequant_q5_k(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockQ5_K>(src, i);
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    const uint8_t* ql = b.qs;
    uint8_t u1 = 1, u2 = 2;
    for (int c = 0; c < 4; ++c, ql += 32, u1 <<= 2, u2 <<= 2) {
      uint8_t sc, mn;
      scale_min_k4(2 * c, b.scales, &sc, &mn);
      const float d1 = d * sc, m1 = dmin * mn;
      scale_min_k4(2 * c + 1, b.scales, &sc, &mn);
      const float d2 = d * sc, m2 = dmin * mn;
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0x0f) + ((b.qh[l] & u1) ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + ((b.qh[l] & u2) ? 16 : 0)) - m2;
    }
  }
}

void dequant_q6_k(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const auto b = load_block<BlockQ6_K>(src, i);
    const float d = f16_to_f32(b.d);
    const uint8_t* ql = b.ql;
    const uint8_t* qh = b.qh;
    const int8_t* sc = b.scales;
    // Each half of 128 weights: weight l (l < 32) of quarter k takes its low nibble from
    // ql[l] / ql[l+32] (low, then high nibbles) and its top 2 bits from bits 2k..2k+1 of qh[l].
    for (int half = 0; half < 2; ++half, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = static_cast<int8_t>((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = static_cast<int8_t>((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = static_cast<int8_t>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = static_cast<int8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
    }
  }
}

// Byte sizes of the types read only for their size: ggml-common.h's block structs.
const std::vector<GGMLTypeInfo>& table() {
  static const std::vector<GGMLTypeInfo> t = {
      {GGMLType::F32, "F32", 1, 4, dequant_f32},
      {GGMLType::F16, "F16", 1, 2, dequant_f16},
      {GGMLType::Q4_0, "Q4_0", QK4_0, sizeof(BlockQ4_0), dequant_q4_0},
      {GGMLType::Q4_1, "Q4_1", QK4_1, sizeof(BlockQ4_1), dequant_q4_1},
      {GGMLType::Q5_0, "Q5_0", QK5_0, sizeof(BlockQ5_0), dequant_q5_0},
      {GGMLType::Q5_1, "Q5_1", QK5_1, sizeof(BlockQ5_1), dequant_q5_1},
      {GGMLType::Q8_0, "Q8_0", QK8_0, sizeof(BlockQ8_0), dequant_q8_0},
      {GGMLType::Q8_1, "Q8_1", 32, 36, nullptr},
      {GGMLType::Q2_K, "Q2_K", QK_K, 84, nullptr},
      {GGMLType::Q3_K, "Q3_K", QK_K, 110, nullptr},
      {GGMLType::Q4_K, "Q4_K", QK_K, sizeof(BlockQ4_K), dequant_q4_k},
      {GGMLType::Q5_K, "Q5_K", QK_K, sizeof(BlockQ5_K), dequant_q5_k},
      {GGMLType::Q6_K, "Q6_K", QK_K, sizeof(BlockQ6_K), dequant_q6_k},
      {GGMLType::Q8_K, "Q8_K", QK_K, 292, nullptr},
      {GGMLType::IQ2_XXS, "IQ2_XXS", QK_K, 66, nullptr},
      {GGMLType::IQ2_XS, "IQ2_XS", QK_K, 74, nullptr},
      {GGMLType::IQ3_XXS, "IQ3_XXS", QK_K, 98, nullptr},
      {GGMLType::IQ1_S, "IQ1_S", QK_K, 50, nullptr},
      {GGMLType::IQ4_NL, "IQ4_NL", 32, 18, nullptr},
      {GGMLType::IQ3_S, "IQ3_S", QK_K, 110, nullptr},
      {GGMLType::IQ2_S, "IQ2_S", QK_K, 82, nullptr},
      {GGMLType::IQ4_XS, "IQ4_XS", QK_K, 136, nullptr},
      {GGMLType::I8, "I8", 1, 1, dequant_plain<int8_t>},
      {GGMLType::I16, "I16", 1, 2, dequant_plain<int16_t>},
      {GGMLType::I32, "I32", 1, 4, dequant_plain<int32_t>},
      {GGMLType::I64, "I64", 1, 8, nullptr},  // int64 -> fp32 would silently round ids
      {GGMLType::F64, "F64", 1, 8, dequant_plain<double>},
      {GGMLType::IQ1_M, "IQ1_M", QK_K, 56, nullptr},
      {GGMLType::BF16, "BF16", 1, 2, dequant_bf16},
      {GGMLType::TQ1_0, "TQ1_0", QK_K, 54, nullptr},
      {GGMLType::TQ2_0, "TQ2_0", QK_K, 66, nullptr},
      {GGMLType::MXFP4, "MXFP4", 32, 17, nullptr},
  };
  return t;
}

}  // namespace

const std::vector<GGMLTypeInfo>& ggml_type_table() { return table(); }

const GGMLTypeInfo* ggml_type_info(uint32_t type) {
  // Indexed once; the table is small and static.
  static const std::vector<const GGMLTypeInfo*> by_id = [] {
    std::vector<const GGMLTypeInfo*> v;
    for (const auto& e : table()) {
      const auto id = static_cast<size_t>(e.type);
      if (v.size() <= id) v.resize(id + 1, nullptr);
      v[id] = &e;
    }
    return v;
  }();
  return type < by_id.size() ? by_id[type] : nullptr;
}

void ggml_dequantize(GGMLType type, const void* src, float* dst, int64_t n) {
  const GGMLTypeInfo* info = ggml_type_info(static_cast<uint32_t>(type));
  if (!info) fail("ggml_dequantize: unknown ggml type {}", static_cast<uint32_t>(type));
  if (!info->dequantize) fail("ggml_dequantize: type {} cannot be dequantized", info->name);
  if (n < 0 || n % info->block_size != 0)
    fail("ggml_dequantize: {} elements is not a multiple of the {} block size {}", n, info->name, info->block_size);
  if (n == 0) return;
  info->dequantize(static_cast<const uint8_t*>(src), dst, n / info->block_size);
}

}  // namespace llmc
