#pragma once
// GGUF writer (version 3, the layout in gguf.h): metadata in the order it was set, tensors with
// their bytes already encoded in a ggml type, written to a temporary file that is renamed into
// place (an error or a kill never leaves a partial file at the destination). GGUFFile reads what
// this writes; llama.cpp's loader needs the same layout (alignment 32, tensors in order, each
// padded to the alignment).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "llmc/io/gguf.h"

namespace llmc {

// Metadata value constructors.
GGUFValue gguf_str(const std::string& s);
GGUFValue gguf_u32(uint32_t v);
GGUFValue gguf_i32(int32_t v);
GGUFValue gguf_f32(float v);
GGUFValue gguf_bool(bool v);
GGUFValue gguf_i32_array(const std::vector<int32_t>& v);
GGUFValue gguf_f32_array(const std::vector<float>& v);
GGUFValue gguf_str_array(const std::vector<std::string>& v);

// Appends the GGUF encoding of one value (no type tag) to `out`.
void gguf_encode_value(std::string& out, const GGUFValue& v);

class GGUFWriter {
 public:
  // Sets (or replaces, keeping its position) a metadata entry.
  void set(const std::string& key, GGUFValue value);
  bool has(const std::string& key) const;
  // Adds a tensor. ne: GGUF order (ne[0] fastest; the row length). `data` must hold exactly
  // numel / block_size * type_size bytes of `type`, and ne[0] must be a multiple of the block
  // size; throws llmc::Error naming the tensor otherwise, and for a repeated name.
  void add_tensor(const std::string& name, std::vector<int64_t> ne, GGMLType type, std::vector<uint8_t> data);
  size_t tensor_count() const { return tensors_.size(); }
  // Bytes of tensor data (without padding).
  uint64_t tensor_bytes() const;
  // Writes the file atomically (temp file + rename).
  void write(const std::string& path) const;
  // The whole file as bytes (for tests and for write()).
  std::string serialize() const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> ne;
    GGMLType type;
    std::vector<uint8_t> data;
  };
  std::vector<std::pair<std::string, GGUFValue>> kv_;
  std::vector<Tensor> tensors_;
};

// ---- ggml block encoders (fp32 -> blocks), ggml's reference quantizers ----
// Each takes n values (a multiple of 32) and returns n / 32 blocks.

// Q8_0 as ggml's quantize_row_q8_0_ref: d = amax / 127 (fp16), q = round(x / d).
std::vector<uint8_t> ggml_quantize_q8_0(const float* x, int64_t n);
// Q4_1 as ggml's quantize_row_q4_1_ref: d = (max - min) / 15, m = min (both fp16),
// q = min(15, (int)((x - min) / d + 0.5)).
std::vector<uint8_t> ggml_quantize_q4_1(const float* x, int64_t n);
// One Q4_1 block from its parts: fp16 bit patterns of d and m, 32 codes (< 16) in weight order.
void ggml_pack_q4_1_block(uint16_t d, uint16_t m, const uint8_t* codes, uint8_t* out /* 20 bytes */);
// One Q8_0 block from an fp16 scale and 32 int8 codes.
void ggml_pack_q8_0_block(uint16_t d, const int8_t* codes, uint8_t* out /* 34 bytes */);
// Plain element types.
std::vector<uint8_t> ggml_encode_f32(const float* x, int64_t n);
std::vector<uint8_t> ggml_encode_f16(const float* x, int64_t n);   // round to nearest even
std::vector<uint8_t> ggml_encode_bf16(const float* x, int64_t n);  // round to nearest even

}  // namespace llmc
