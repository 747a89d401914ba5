// GGUF container: header, metadata and tensor infos (see include/llmc/io/gguf.h for the layout).
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "llmc/core/error.h"
#include "llmc/io/gguf.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host (GGUF files are little-endian)"
#endif

namespace llmc {

namespace {

constexpr uint32_t kMaxDims = 4;         // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;        // nested arrays: deeper is surely a corrupt file
constexpr uint64_t kDefaultAlignment = 32;

// Bounds-checked little-endian cursor over the mapped file. Every read checks the remaining size
// first, so a truncated or lying file throws instead of reading past the end.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& path) : data_(data), size_(size), path_(path) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  void need(uint64_t n, const char* what) const {
    if (n > left())
      fail("{}: truncated at offset {}: {} needs {} bytes, only {} left", path_, pos_, what, n, left());
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const char* what) {
    const uint64_t n = read<uint64_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& path_;
};

bool valid_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GGUFType::FLOAT64); }

// Smallest encoding of one value of type t: bounds an array's element count by the bytes left,
// so a lying count cannot make us reserve gigabytes.
uint64_t min_value_size(GGUFType t) {
  switch (t) {
    case GGUFType::UINT8:
    case GGUFType::INT8:
    case GGUFType::BOOL:
      return 1;
    case GGUFType::UINT16:
    case GGUFType::INT16:
      return 2;
    case GGUFType::UINT32:
    case GGUFType::INT32:
    case GGUFType::FLOAT32:
      return 4;
    case GGUFType::STRING:
    case GGUFType::UINT64:
    case GGUFType::INT64:
    case GGUFType::FLOAT64:
      return 8;
    case GGUFType::ARRAY:
      return 12;  // u32 type + u64 count
  }
  return 1;
}

GGUFValue read_value(Cursor& c, GGUFType type, const std::string& path, const std::string& key, int depth) {
  GGUFValue v;
  v.type = type;
  switch (type) {
    case GGUFType::UINT8: v.u = c.read<uint8_t>("a uint8 value"); break;
    case GGUFType::INT8: v.i = c.read<int8_t>("an int8 value"); break;
    case GGUFType::UINT16: v.u = c.read<uint16_t>("a uint16 value"); break;
    case GGUFType::INT16: v.i = c.read<int16_t>("an int16 value"); break;
    case GGUFType::UINT32: v.u = c.read<uint32_t>("a uint32 value"); break;
    case GGUFType::INT32: v.i = c.read<int32_t>("an int32 value"); break;
    case GGUFType::UINT64: v.u = c.read<uint64_t>("a uint64 value"); break;
    case GGUFType::INT64: v.i = c.read<int64_t>("an int64 value"); break;
    case GGUFType::FLOAT32: v.f = c.read<float>("a float32 value"); break;
    case GGUFType::FLOAT64: v.f = c.read<double>("a float64 value"); break;
    case GGUFType::BOOL: {
      const uint8_t b = c.read<uint8_t>("a bool value");
      if (b > 1) fail("{}: metadata '{}': bool value {} is neither 0 nor 1", path, key, b);
      v.u = b;
      break;
    }
    case GGUFType::STRING: v.str = c.read_string("a string value"); break;
    case GGUFType::ARRAY: {
      if (depth >= kMaxArrayDepth) fail("{}: metadata '{}': arrays nested deeper than {}", path, key, kMaxArrayDepth);
      const uint32_t et = c.read<uint32_t>("an array element type");
      if (!valid_value_type(et)) fail("{}: metadata '{}': unknown array element type {}", path, key, et);
      v.elem_type = static_cast<GGUFType>(et);
      const uint64_t n = c.read<uint64_t>("an array length");
      if (n > c.left() / min_value_size(v.elem_type))
        fail("{}: metadata '{}': array of {} {} elements runs past the end of the file", path, key, n,
             gguf_type_name(v.elem_type));
      v.array.reserve(static_cast<size_t>(n));
      for (uint64_t k = 0; k < n; ++k) v.array.push_back(read_value(c, v.elem_type, path, key, depth + 1));
      break;
    }
  }
  return v;
}

}  // namespace

const char* gguf_type_name(GGUFType t) {
  switch (t) {
    case GGUFType::UINT8: return "uint8";
    case GGUFType::INT8: return "int8";
    case GGUFType::UINT16: return "uint16";
    case GGUFType::INT16: return "int16";
    case GGUFType::UINT32: return "uint32";
    case GGUFType::INT32: return "int32";
    case GGUFType::FLOAT32: return "float32";
    case GGUFType::BOOL: return "bool";
    case GGUFType::STRING: return "string";
    case GGUFType::ARRAY: return "array";
    case GGUFType::UINT64: return "uint64";
    case GGUFType::INT64: return "int64";
    case GGUFType::FLOAT64: return "float64";
  }
  return "?";
}

bool GGUFValue::is_integer() const {
  switch (type) {
    case GGUFType::UINT8:
    case GGUFType::INT8:
    case GGUFType::UINT16:
    case GGUFType::INT16:
    case GGUFType::UINT32:
    case GGUFType::INT32:
    case GGUFType::UINT64:
    case GGUFType::INT64:
      return true;
    default:
      return false;
  }
}

std::string GGUFValue::to_string() const {
  switch (type) {
    case GGUFType::UINT8:
    case GGUFType::UINT16:
    case GGUFType::UINT32:
    case GGUFType::UINT64:
      return std::to_string(u);
    case GGUFType::INT8:
    case GGUFType::INT16:
    case GGUFType::INT32:
    case GGUFType::INT64:
      return std::to_string(i);
    case GGUFType::FLOAT32:
    case GGUFType::FLOAT64:
      return fmt::format("{}", f);
    case GGUFType::BOOL:
      return u ? "true" : "false";
    case GGUFType::STRING:
      return str.size() <= 60 ? fmt::format("\"{}\"", str) : fmt::format("\"{}...\" ({} bytes)", str.substr(0, 60), str.size());
    case GGUFType::ARRAY: {
      std::string s = fmt::format("{}[{}] [", gguf_type_name(elem_type), array.size());
      for (size_t k = 0; k < array.size() && k < 5; ++k) s += (k ? ", " : "") + array[k].to_string();
      return s + (array.size() > 5 ? ", ...]" : "]");
    }
  }
  return "?";
}

std::vector<int64_t> GGUFTensorInfo::shape() const { return std::vector<int64_t>(ne.rbegin(), ne.rend()); }

GGUFFile::GGUFFile(const std::string& path) : map_(path) {
  Cursor c(map_.data(), map_.size(), path);
  if (map_.size() < 4 || std::memcmp(map_.data(), "GGUF", 4) != 0)
    fail("{}: not a GGUF file (the first 4 bytes are not 'GGUF')", path);
  c.read<uint32_t>("the magic");
  version_ = c.read<uint32_t>("the version");
  if (version_ == 1) fail("{}: GGUF version 1 is not supported (only versions 2 and 3)", path);
  if (version_ != 2 && version_ != 3) {
    if ((version_ & 0xffffu) == 0 && version_ != 0)
      fail("{}: GGUF version field {:#x} looks byte-swapped: big-endian GGUF files are not supported", path, version_);
    fail("{}: unsupported GGUF version {} (only versions 2 and 3)", path, version_);
  }
  const uint64_t n_tensors = c.read<uint64_t>("the tensor count");
  const uint64_t n_kv = c.read<uint64_t>("the metadata count");
  // Each key/value takes at least 13 bytes (empty key, type, 1-byte value); each tensor info at
  // least 24: counts beyond what the file can hold are corrupt, not just large.
  if (n_kv > c.left() / 13) fail("{}: header claims {} metadata entries, more than the file can hold", path, n_kv);
  if (n_tensors > c.left() / 24) fail("{}: header claims {} tensors, more than the file can hold", path, n_tensors);

  kv_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.read_string("a metadata key");
    const uint32_t t = c.read<uint32_t>("a metadata value type");
    if (!valid_value_type(t)) fail("{}: metadata '{}' has unknown value type {}", path, key, t);
    GGUFValue v = read_value(c, static_cast<GGUFType>(t), path, key, 0);
    if (kv_index_.count(key)) fail("{}: metadata key '{}' appears twice", path, key);
    kv_index_[key] = kv_.size();
    kv_.emplace_back(std::move(key), std::move(v));
  }

  if (const GGUFValue* a = find_value("general.alignment")) {
    if (a->type != GGUFType::UINT32)
      fail("{}: metadata 'general.alignment' must be uint32, not {}", path, gguf_type_name(a->type));
    if (a->u == 0 || (a->u & (a->u - 1)) != 0)
      fail("{}: metadata 'general.alignment' = {} is not a power of two", path, a->u);
    alignment_ = a->u;
  } else {
    alignment_ = kDefaultAlignment;
  }

  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GGUFTensorInfo t;
    t.name = c.read_string("a tensor name");
    const uint32_t n_dims = c.read<uint32_t>("a tensor dimension count");
    if (n_dims > kMaxDims) fail("{}: tensor '{}' has {} dimensions (at most {})", path, t.name, n_dims, kMaxDims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = c.read<uint64_t>("a tensor dimension");
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail("{}: tensor '{}' dimension {} is {} (negative as int64)", path, t.name, d, ne);
      t.ne.push_back(static_cast<int64_t>(ne));
    }
    const uint32_t type = c.read<uint32_t>("a tensor type");
    const GGMLTypeInfo* info = ggml_type_info(type);
    if (!info) fail("{}: tensor '{}' has unknown ggml type {}", path, t.name, type);
    t.type = info->type;
    t.offset = c.read<uint64_t>("a tensor offset");

    // numel and byte size, refusing anything that overflows int64.
    uint64_t numel = 1;
    for (int64_t ne : t.ne) {
      const uint64_t u = static_cast<uint64_t>(ne);
      if (u != 0 && numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / u)
        fail("{}: tensor '{}' has too many elements", path, t.name);
      numel *= u;
    }
    t.numel = static_cast<int64_t>(numel);
    const int64_t row = t.ne.empty() ? 1 : t.ne[0];
    if (row % info->block_size != 0)
      fail("{}: tensor '{}' row length {} is not a multiple of the {} block size {}", path, t.name, row, info->name,
           info->block_size);
    const uint64_t blocks = numel / static_cast<uint64_t>(info->block_size);
    if (blocks != 0 && info->type_size > std::numeric_limits<uint64_t>::max() / blocks)
      fail("{}: tensor '{}' byte size overflows", path, t.name);
    t.nbytes = blocks * info->type_size;
    if (t.offset % alignment_ != 0)
      fail("{}: tensor '{}' offset {} is not a multiple of the alignment {}", path, t.name, t.offset, alignment_);
    if (tensor_index_.count(t.name)) fail("{}: tensor '{}' appears twice", path, t.name);
    tensor_index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment. A file without tensor data may
  // end before that padding.
  const uint64_t end = c.pos();
  const uint64_t pad = (alignment_ - end % alignment_) % alignment_;
  data_offset_ = end + pad;
  const uint64_t data_size = data_offset_ <= map_.size() ? map_.size() - data_offset_ : 0;
  for (const auto& t : tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail("{}: tensor '{}' ({} bytes at data offset {}) runs past the end of the file (data section is {} bytes)",
           path, t.name, t.nbytes, t.offset, data_size);
  }
  // As safetensors: no two tensors share bytes, and they follow each other with only the alignment
  // padding between them (what llama.cpp and gguf-py write). An offset changed to another aligned,
  // in-range value would otherwise read another tensor's bytes.
  std::vector<const GGUFTensorInfo*> sorted;
  for (const auto& t : tensors_)
    if (t.nbytes > 0) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  uint64_t next = 0;  // where the next tensor may start: the previous end rounded up to the alignment
  const GGUFTensorInfo* prev = nullptr;
  for (const auto* t : sorted) {
    if (t->offset < next && prev)
      fail("{}: tensors '{}' and '{}' overlap (data offsets {} and {})", path, prev->name, t->name, prev->offset,
           t->offset);
    if (t->offset > next)
      fail("{}: {} unused bytes before tensor '{}' (data offset {}; tensors follow each other with alignment {} "
           "padding only)",
           path, t->offset - next, t->name, t->offset, alignment_);
    const uint64_t end = t->offset + t->nbytes;
    next = end + (alignment_ - end % alignment_) % alignment_;
    prev = t;
  }
  if (data_offset_ > map_.size()) data_offset_ = map_.size();  // only zero-byte tensors remain
}

const GGUFValue* GGUFFile::find_value(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GGUFValue& GGUFFile::get(const std::string& key) const {
  const GGUFValue* v = find_value(key);
  if (!v) fail("{}: metadata key '{}' is missing", path(), key);
  return *v;
}

namespace {

[[noreturn]] void wrong_type(const std::string& path, const std::string& key, const GGUFValue& v, const char* want) {
  std::string have = v.type == GGUFType::ARRAY ? fmt::format("array of {}", gguf_type_name(v.elem_type))
                                               : std::string(gguf_type_name(v.type));
  fail("{}: metadata key '{}' is {}, expected {}", path, key, have, want);
}

// Integer value as int64 when it is one and fits; `ok` false otherwise.
int64_t int_value(const GGUFValue& v, bool* ok) {
  *ok = true;
  switch (v.type) {
    case GGUFType::UINT8:
    case GGUFType::UINT16:
    case GGUFType::UINT32:
      return static_cast<int64_t>(v.u);
    case GGUFType::UINT64:
      if (v.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) break;
      return static_cast<int64_t>(v.u);
    case GGUFType::INT8:
    case GGUFType::INT16:
    case GGUFType::INT32:
    case GGUFType::INT64:
      return v.i;
    default:
      break;
  }
  *ok = false;
  return 0;
}

}  // namespace

std::string GGUFFile::get_string(const std::string& key) const {
  const GGUFValue& v = get(key);
  if (v.type != GGUFType::STRING) wrong_type(path(), key, v, "string");
  return v.str;
}

int64_t GGUFFile::get_i64(const std::string& key) const {
  const GGUFValue& v = get(key);
  bool ok;
  int64_t x = int_value(v, &ok);
  if (!ok) {
    if (v.type == GGUFType::UINT64) fail("{}: metadata key '{}' = {} does not fit in int64", path(), key, v.u);
    wrong_type(path(), key, v, "an integer");
  }
  return x;
}

uint32_t GGUFFile::get_u32(const std::string& key) const {
  const GGUFValue& v = get(key);
  if (!v.is_integer()) wrong_type(path(), key, v, "an integer");
  bool ok;
  const int64_t x = int_value(v, &ok);
  if (!ok || x < 0 || x > static_cast<int64_t>(std::numeric_limits<uint32_t>::max()))
    fail("{}: metadata key '{}' = {} is out of the uint32 range", path(), key, v.to_string());
  return static_cast<uint32_t>(x);
}

double GGUFFile::get_f64(const std::string& key) const {
  const GGUFValue& v = get(key);
  if (!v.is_float()) wrong_type(path(), key, v, "float32 or float64");
  return v.f;
}

float GGUFFile::get_f32(const std::string& key) const { return static_cast<float>(get_f64(key)); }

bool GGUFFile::get_bool(const std::string& key) const {
  const GGUFValue& v = get(key);
  if (v.type != GGUFType::BOOL) wrong_type(path(), key, v, "bool");
  return v.u != 0;
}

std::vector<std::string> GGUFFile::get_string_array(const std::string& key) const {
  const GGUFValue& v = get(key);
  if (v.type != GGUFType::ARRAY || v.elem_type != GGUFType::STRING) wrong_type(path(), key, v, "an array of strings");
  std::vector<std::string> out;
  out.reserve(v.array.size());
  for (const auto& e : v.array) out.push_back(e.str);
  return out;
}

std::vector<float> GGUFFile::get_f32_array(const std::string& key) const {
  const GGUFValue& v = get(key);
  if (v.type != GGUFType::ARRAY || (v.elem_type != GGUFType::FLOAT32 && v.elem_type != GGUFType::FLOAT64))
    wrong_type(path(), key, v, "an array of floats");
  std::vector<float> out;
  out.reserve(v.array.size());
  for (const auto& e : v.array) out.push_back(static_cast<float>(e.f));
  return out;
}

std::vector<int32_t> GGUFFile::get_i32_array(const std::string& key) const {
  const GGUFValue& v = get(key);
  if (v.type != GGUFType::ARRAY) wrong_type(path(), key, v, "an array of integers");
  std::vector<int32_t> out;
  out.reserve(v.array.size());
  for (size_t k = 0; k < v.array.size(); ++k) {
    bool ok;
    const int64_t x = int_value(v.array[k], &ok);
    if (!ok) wrong_type(path(), key, v, "an array of integers");
    if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max())
      fail("{}: metadata key '{}' element {} = {} is out of the int32 range", path(), key, k, x);
    out.push_back(static_cast<int32_t>(x));
  }
  return out;
}

std::string GGUFFile::get_string_or(const std::string& key, const std::string& dflt) const {
  return has(key) ? get_string(key) : dflt;
}
uint32_t GGUFFile::get_u32_or(const std::string& key, uint32_t dflt) const { return has(key) ? get_u32(key) : dflt; }
float GGUFFile::get_f32_or(const std::string& key, float dflt) const { return has(key) ? get_f32(key) : dflt; }
bool GGUFFile::get_bool_or(const std::string& key, bool dflt) const { return has(key) ? get_bool(key) : dflt; }

const GGUFTensorInfo* GGUFFile::find(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::vector<float> GGUFFile::dequantize(const GGUFTensorInfo& t) const {
  const GGMLTypeInfo* info = ggml_type_info(static_cast<uint32_t>(t.type));
  if (!info || !info->dequantize)
    fail("{}: tensor '{}' has type {}, which cannot be dequantized (supported: F32, F16, BF16, F64, I8, I16, I32, "
         "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)",
         path(), t.name, info ? info->name : "?");
  std::vector<float> out(static_cast<size_t>(t.numel));
  if (out.empty()) return out;
  // The constructor checked nbytes == numel / block_size * type_size and the byte range.
  info->dequantize(data(t), out.data(), t.numel / info->block_size);
  return out;
}

}  // namespace llmc
