// GGUF writer and ggml block encoders (see include/llmc/io/gguf_writer.h).
#include "llmc/io/gguf_writer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "llmc/core/dtype.h"
#include "llmc/core/error.h"
#include "llmc/core/files.h"

namespace llmc {

namespace {

constexpr uint64_t kAlignment = 32;  // GGUF_DEFAULT_ALIGNMENT; general.alignment is not written

void put_u32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void put_u64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
void put_str(std::string& s, const std::string& v) {
  put_u64(s, v.size());
  s += v;
}
void pad(std::string& s) { s.resize((s.size() + kAlignment - 1) / kAlignment * kAlignment, '\0'); }

}  // namespace

GGUFValue gguf_str(const std::string& s) {
  GGUFValue v;
  v.type = GGUFType::STRING;
  v.str = s;
  return v;
}
GGUFValue gguf_u32(uint32_t x) {
  GGUFValue v;
  v.type = GGUFType::UINT32;
  v.u = x;
  return v;
}
GGUFValue gguf_i32(int32_t x) {
  GGUFValue v;
  v.type = GGUFType::INT32;
  v.i = x;
  return v;
}
GGUFValue gguf_f32(float x) {
  GGUFValue v;
  v.type = GGUFType::FLOAT32;
  v.f = x;
  return v;
}
GGUFValue gguf_bool(bool x) {
  GGUFValue v;
  v.type = GGUFType::BOOL;
  v.u = x ? 1 : 0;
  return v;
}
GGUFValue gguf_i32_array(const std::vector<int32_t>& xs) {
  GGUFValue v;
  v.type = GGUFType::ARRAY;
  v.elem_type = GGUFType::INT32;
  for (int32_t x : xs) v.array.push_back(gguf_i32(x));
  return v;
}

GGUFValue gguf_f32_array(const std::vector<float>& xs) {
  GGUFValue v;
  v.type = GGUFType::ARRAY;
  v.elem_type = GGUFType::FLOAT32;
  v.array.reserve(xs.size());
  for (float x : xs) v.array.push_back(gguf_f32(x));
  return v;
}

GGUFValue gguf_str_array(const std::vector<std::string>& xs) {
  GGUFValue v;
  v.type = GGUFType::ARRAY;
  v.elem_type = GGUFType::STRING;
  v.array.reserve(xs.size());
  for (const auto& x : xs) v.array.push_back(gguf_str(x));
  return v;
}

void gguf_encode_value(std::string& s, const GGUFValue& v) {
  auto raw = [&](const void* p, size_t n) { s.append(static_cast<const char*>(p), n); };
  switch (v.type) {
    case GGUFType::UINT8:
    case GGUFType::BOOL: {
      uint8_t x = static_cast<uint8_t>(v.u);
      raw(&x, 1);
      break;
    }
    case GGUFType::INT8: {
      int8_t x = static_cast<int8_t>(v.i);
      raw(&x, 1);
      break;
    }
    case GGUFType::UINT16: {
      uint16_t x = static_cast<uint16_t>(v.u);
      raw(&x, 2);
      break;
    }
    case GGUFType::INT16: {
      int16_t x = static_cast<int16_t>(v.i);
      raw(&x, 2);
      break;
    }
    case GGUFType::UINT32: put_u32(s, static_cast<uint32_t>(v.u)); break;
    case GGUFType::INT32: {
      int32_t x = static_cast<int32_t>(v.i);
      raw(&x, 4);
      break;
    }
    case GGUFType::FLOAT32: {
      float x = static_cast<float>(v.f);
      raw(&x, 4);
      break;
    }
    case GGUFType::UINT64: put_u64(s, v.u); break;
    case GGUFType::INT64: raw(&v.i, 8); break;
    case GGUFType::FLOAT64: raw(&v.f, 8); break;
    case GGUFType::STRING: put_str(s, v.str); break;
    case GGUFType::ARRAY:
      put_u32(s, static_cast<uint32_t>(v.elem_type));
      put_u64(s, v.array.size());
      for (const auto& e : v.array) gguf_encode_value(s, e);
      break;
  }
}

void GGUFWriter::set(const std::string& key, GGUFValue value) {
  for (auto& kv : kv_)
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  kv_.emplace_back(key, std::move(value));
}

bool GGUFWriter::has(const std::string& key) const {
  return std::any_of(kv_.begin(), kv_.end(), [&](const auto& kv) { return kv.first == key; });
}

void GGUFWriter::add_tensor(const std::string& name, std::vector<int64_t> ne, GGMLType type,
                            std::vector<uint8_t> data) {
  const GGMLTypeInfo* info = ggml_type_info(static_cast<uint32_t>(type));
  LLMC_CHECK(info, "GGUF writer: tensor '{}' has an unknown ggml type {}", name, static_cast<uint32_t>(type));
  LLMC_CHECK(!ne.empty() && ne.size() <= 4, "GGUF writer: tensor '{}' must have 1 to 4 dimensions", name);
  for (const auto& t : tensors_) LLMC_CHECK(t.name != name, "GGUF writer: tensor '{}' added twice", name);
  int64_t numel = 1;
  for (int64_t d : ne) {
    LLMC_CHECK(d > 0, "GGUF writer: tensor '{}' has a dimension of {}", name, d);
    numel *= d;
  }
  LLMC_CHECK(ne[0] % info->block_size == 0, "GGUF writer: tensor '{}' row length {} is not a multiple of the {} block "
             "size {}", name, ne[0], info->name, info->block_size);
  const uint64_t want = static_cast<uint64_t>(numel / info->block_size) * info->type_size;
  LLMC_CHECK(data.size() == want, "GGUF writer: tensor '{}' ({}) has {} bytes, expected {}", name, info->name,
             data.size(), want);
  tensors_.push_back({name, std::move(ne), type, std::move(data)});
}

uint64_t GGUFWriter::tensor_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors_) n += t.data.size();
  return n;
}

std::string GGUFWriter::serialize() const {
  std::string s = "GGUF";
  put_u32(s, 3);
  put_u64(s, tensors_.size());
  put_u64(s, kv_.size());
  for (const auto& [key, v] : kv_) {
    put_str(s, key);
    put_u32(s, static_cast<uint32_t>(v.type));
    gguf_encode_value(s, v);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    put_str(s, t.name);
    put_u32(s, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) put_u64(s, static_cast<uint64_t>(d));
    put_u32(s, static_cast<uint32_t>(t.type));
    put_u64(s, offset);
    offset += (t.data.size() + kAlignment - 1) / kAlignment * kAlignment;
  }
  pad(s);
  s.reserve(s.size() + offset);
  for (const auto& t : tensors_) {
    s.append(reinterpret_cast<const char*>(t.data.data()), t.data.size());
    pad(s);
  }
  return s;
}

void GGUFWriter::write(const std::string& path) const { write_file_atomic(path, serialize()); }

// ---- block encoders ----

void ggml_pack_q4_1_block(uint16_t d, uint16_t m, const uint8_t* q, uint8_t* out) {
  std::memcpy(out, &d, 2);
  std::memcpy(out + 2, &m, 2);
  for (int j = 0; j < 16; ++j) out[4 + j] = static_cast<uint8_t>((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
}

void ggml_pack_q8_0_block(uint16_t d, const int8_t* q, uint8_t* out) {
  std::memcpy(out, &d, 2);
  std::memcpy(out + 2, q, 32);
}

std::vector<uint8_t> ggml_quantize_q8_0(const float* x, int64_t n) {
  LLMC_CHECK(n % 32 == 0, "Q8_0: {} values is not a multiple of 32", n);
  std::vector<uint8_t> out(static_cast<size_t>(n / 32) * 34);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + b * 32;
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const uint16_t dh = f32_to_f16(amax / 127.0f);
    const float d = f16_to_f32(dh);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    int8_t q[32];
    for (int j = 0; j < 32; ++j) q[j] = static_cast<int8_t>(std::clamp(std::round(xb[j] * id), -128.0f, 127.0f));
    ggml_pack_q8_0_block(dh, q, &out[static_cast<size_t>(b) * 34]);
  }
  return out;
}

std::vector<uint8_t> ggml_quantize_q4_1(const float* x, int64_t n) {
  LLMC_CHECK(n % 32 == 0, "Q4_1: {} values is not a multiple of 32", n);
  std::vector<uint8_t> out(static_cast<size_t>(n / 32) * 20);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + b * 32;
    float lo = std::numeric_limits<float>::max(), hi = -std::numeric_limits<float>::max();
    for (int j = 0; j < 32; ++j) {
      lo = std::min(lo, xb[j]);
      hi = std::max(hi, xb[j]);
    }
    const float d = (hi - lo) / 15.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    uint8_t q[32];
    for (int j = 0; j < 32; ++j) q[j] = static_cast<uint8_t>(std::min(15, static_cast<int>((xb[j] - lo) * id + 0.5f)));
    ggml_pack_q4_1_block(f32_to_f16(d), f32_to_f16(lo), q, &out[static_cast<size_t>(b) * 20]);
  }
  return out;
}

std::vector<uint8_t> ggml_encode_f32(const float* x, int64_t n) {
  std::vector<uint8_t> out(static_cast<size_t>(n) * 4);
  if (n) std::memcpy(out.data(), x, out.size());
  return out;
}

std::vector<uint8_t> ggml_encode_f16(const float* x, int64_t n) {
  std::vector<uint8_t> out(static_cast<size_t>(n) * 2);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = f32_to_f16(x[i]);
    std::memcpy(&out[static_cast<size_t>(i) * 2], &h, 2);
  }
  return out;
}

std::vector<uint8_t> ggml_encode_bf16(const float* x, int64_t n) {
  std::vector<uint8_t> out(static_cast<size_t>(n) * 2);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = f32_to_bf16(x[i]);
    std::memcpy(&out[static_cast<size_t>(i) * 2], &h, 2);
  }
  return out;
}

}  // namespace llmc
