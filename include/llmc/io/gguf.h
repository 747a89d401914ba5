#pragma once
// GGUF (llama.cpp's single-file model format, versions 2 and 3) reader, fp32 dequantization of the
// common ggml block formats, and a mapping of Llama-architecture files to Hugging Face tensor names.
//
// File layout (all little-endian):
//   "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x   { string key | u32 value type | value }
//   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml type | u64 offset }
//   padding to `general.alignment` (default 32) | tensor data (offsets relative to here)
// where string = u64 length + bytes (no terminator) and an array value = u32 element type + u64
// count + elements. ne[0] is the fastest-varying dimension, so the row-major (PyTorch) shape is ne
// reversed: a linear layer stored as ne = [in, out] is the [out, in] matrix of HF checkpoints.
//
// Every length, count, offset and size is checked against the file (overflow-safe) before it is
// used; malformed files throw llmc::Error naming the file and the problem.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "llmc/core/files.h"

namespace llmc {

// Metadata value types (gguf_type in llama.cpp).
enum class GGUFType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
const char* gguf_type_name(GGUFType t);

// One metadata value. Unsigned integers and bools are held in `u`, signed integers in `i`, floats
// in `f`, strings in `str`, arrays in `array` (elements all of `elem_type`; arrays may nest).
struct GGUFValue {
  GGUFType type = GGUFType::UINT8;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0.0;
  std::string str;
  GGUFType elem_type = GGUFType::UINT8;
  std::vector<GGUFValue> array;

  bool is_integer() const;
  bool is_float() const { return type == GGUFType::FLOAT32 || type == GGUFType::FLOAT64; }
  // Short human-readable rendering (arrays show their first few elements), for dumps and errors.
  std::string to_string() const;
};

// ggml tensor types. Values are fixed by the file format; gaps are types llama.cpp removed.
enum class GGMLType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
};

// The one table describing every ggml type this reader knows: elements per block, bytes per
// block, and the dequantizer (nullptr: the size is known, so files holding the type open and list
// fine, but dequantize() throws a clear "not supported" error).
struct GGMLTypeInfo {
  GGMLType type;
  const char* name;
  int64_t block_size;
  uint64_t type_size;
  // Dequantizes n_blocks consecutive blocks from `src` (no alignment required) into
  // n_blocks * block_size floats.
  void (*dequantize)(const uint8_t* src, float* dst, int64_t n_blocks);
};
// nullptr when `type` is not a known ggml type.
const GGMLTypeInfo* ggml_type_info(uint32_t type);
// All known types, in enum order (for listings and tests).
const std::vector<GGMLTypeInfo>& ggml_type_table();
// Dequantizes n elements (a multiple of the block size) of `type` from `src`. Throws llmc::Error
// for unknown or unsupported types and bad n.
void ggml_dequantize(GGMLType type, const void* src, float* dst, int64_t n);

struct GGUFTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // GGUF order: ne[0] fastest-varying; 0..4 dims
  GGMLType type = GGMLType::F32;
  uint64_t offset = 0;  // byte offset relative to the start of the data section
  uint64_t nbytes = 0;  // validated: offset + nbytes lies inside the file
  int64_t numel = 0;
  // Row-major (PyTorch-order) shape: ne reversed.
  std::vector<int64_t> shape() const;
};

class GGUFFile {
 public:
  // Maps and parses the file. Throws llmc::Error naming the file and the problem on any
  // inconsistency (bad magic, unsupported version, truncation, bad types, out-of-range tensors).
  explicit GGUFFile(const std::string& path);

  const std::string& path() const { return map_.path(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section

  // Metadata in file order.
  const std::vector<std::pair<std::string, GGUFValue>>& metadata() const { return kv_; }
  bool has(const std::string& key) const { return kv_index_.count(key) != 0; }
  const GGUFValue* find_value(const std::string& key) const;  // nullptr when absent
  const GGUFValue& get(const std::string& key) const;         // throws when absent

  // Typed lookups. Each throws llmc::Error ("<file>: metadata key 'k' ...") when the key is
  // missing or holds a type that cannot represent the request. Integer getters accept any integer
  // type whose value fits; get_f32/get_f64 accept FLOAT32 and FLOAT64.
  std::string get_string(const std::string& key) const;
  uint32_t get_u32(const std::string& key) const;
  int64_t get_i64(const std::string& key) const;
  float get_f32(const std::string& key) const;
  double get_f64(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<float> get_f32_array(const std::string& key) const;    // FLOAT32/FLOAT64 elements
  std::vector<int32_t> get_i32_array(const std::string& key) const;  // integer elements fitting int32
  // The same with a default for an absent key (a present key of the wrong type still throws).
  std::string get_string_or(const std::string& key, const std::string& dflt) const;
  uint32_t get_u32_or(const std::string& key, uint32_t dflt) const;
  float get_f32_or(const std::string& key, float dflt) const;
  bool get_bool_or(const std::string& key, bool dflt) const;

  const std::vector<GGUFTensorInfo>& tensors() const { return tensors_; }
  const GGUFTensorInfo* find(const std::string& name) const;  // nullptr when absent
  const uint8_t* data(const GGUFTensorInfo& t) const { return map_.data() + data_offset_ + t.offset; }
  // The tensor as fp32, row-major (numel values). Throws for types without a dequantizer.
  std::vector<float> dequantize(const GGUFTensorInfo& t) const;

 private:
  MappedFile map_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GGUFValue>> kv_;
  std::map<std::string, size_t> kv_index_;
  std::vector<GGUFTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// GGUF vocabulary token types (tokenizer.ggml.token_type; llama.cpp's llama_token_type).
enum class GGUFTokenType : int32_t {
  UNDEFINED = 0,
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,       // special tokens: BOS/EOS/<|im_start|>...; matched in text, dropped by decode
  USER_DEFINED = 4,  // added non-special tokens: matched in text, decoded verbatim
  UNUSED = 5,
  BYTE = 6,  // SentencePiece byte-fallback pieces <0xXX>
};

}  // namespace llmc
