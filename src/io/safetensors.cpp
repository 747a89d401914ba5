#include "llmc/io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"

namespace llmc {

using json = nlohmann::json;

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : map_(path) {
  const size_t size = map_.size();
  if (size < 8) fail("{}: not a safetensors file (only {} bytes, need an 8-byte header length)", path, size);
  uint64_t hlen = 0;
  std::memcpy(&hlen, map_.data(), 8);
  if (hlen > size - 8) fail("{}: header length {} runs past end of file ({} bytes)", path, hlen, size);
  if (hlen > (100u << 20)) fail("{}: header length {} is implausibly large", path, hlen);
  json header;
  try {
    header = json::parse(map_.data() + 8, map_.data() + 8 + hlen);
  } catch (const json::exception& e) {
    fail("{}: header is not valid JSON ({})", path, e.what());
  }
  if (!header.is_object()) fail("{}: header is not a JSON object", path);
  data_ = map_.data() + 8 + hlen;
  const uint64_t data_size = size - 8 - hlen;

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail("{}: __metadata__ is not an object", path);
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail("{}: __metadata__.{} is not a string", path, m.key());
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail("{}: tensor '{}' needs dtype, shape and data_offsets", path, name);
    TensorInfo t;
    t.name = name;
    if (!v["dtype"].is_string() || !dtype_from_name(v["dtype"].get<std::string>(), &t.dtype))
      fail("{}: tensor '{}' has unknown dtype {}", path, name, v["dtype"].dump());
    if (!v["shape"].is_array()) fail("{}: tensor '{}' shape is not an array", path, name);
    for (const auto& d : v["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        fail("{}: tensor '{}' has invalid shape {}", path, name, v["shape"].dump());
      t.shape.push_back(d.get<int64_t>());
    }
    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail("{}: tensor '{}' data_offsets must be two non-negative integers", path, name);
    t.begin = off[0].get<uint64_t>();
    t.end = off[1].get<uint64_t>();
    if (t.begin > t.end || t.end > data_size)
      fail("{}: tensor '{}' data_offsets [{}, {}] out of range (data section is {} bytes)", path, name, t.begin,
           t.end, data_size);
    // Overflow-safe size check: numel * elem must equal the byte range.
    uint64_t expect = dtype_size(t.dtype);
    for (auto d : t.shape) {
      if (d != 0 && expect > (uint64_t(1) << 62) / static_cast<uint64_t>(d))
        fail("{}: tensor '{}' shape is too large", path, name);
      expect *= static_cast<uint64_t>(d);
    }
    if (expect != t.end - t.begin)
      fail("{}: tensor '{}' has {} bytes but dtype {} and shape {} need {}", path, name, t.end - t.begin,
           dtype_name(t.dtype), v["shape"].dump(), expect);
    tensors_.push_back(std::move(t));
  }
  std::vector<const TensorInfo*> sorted;
  for (const auto& t : tensors_) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i]->begin < sorted[i - 1]->end && sorted[i]->begin != sorted[i]->end)
      fail("{}: tensors '{}' and '{}' overlap", path, sorted[i - 1]->name, sorted[i]->name);
  // The tensors fill the data section from its first byte to its last, with at most alignment
  // padding (< 8 bytes, as write_safetensors leaves) between them. A header length that is off by
  // a few bytes still parses when the header ends in padding spaces, but then every tensor would
  // be read from the wrong place: the section's size no longer matches its tensors.
  uint64_t end = 0;
  for (const auto* t : sorted) {
    if (t->begin == t->end) continue;
    if (t->begin > end + 7)
      fail("{}: {} unused bytes before tensor '{}' in the data section (a wrong header length or offsets?)", path,
           t->begin - end, t->name);
    end = std::max(end, t->end);
  }
  if (end != data_size)
    fail("{}: the data section is {} bytes but its tensors end at byte {} (header length {} is wrong, or bytes were "
         "added or cut)",
         path, data_size, end, hlen);
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t off = 0;
  std::vector<uint64_t> offsets;
  for (const auto& t : tensors) {
    uint64_t n = dtype_size(t.dtype);
    for (auto d : t.shape) n *= static_cast<uint64_t>(d);
    off = (off + 7) / 8 * 8;
    offsets.push_back(off);
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string h = header.dump();
  h.resize((h.size() + 8 + 7) / 8 * 8 - 8, ' ');  // pad so the data section is 8-byte aligned
  std::string out;
  out.reserve(8 + h.size() + off);
  uint64_t hlen = h.size();
  out.append(reinterpret_cast<const char*>(&hlen), 8);
  out += h;
  for (size_t i = 0; i < tensors.size(); ++i) {
    uint64_t n = dtype_size(tensors[i].dtype);
    for (auto d : tensors[i].shape) n *= static_cast<uint64_t>(d);
    out.resize(8 + h.size() + offsets[i], '\0');
    out.append(static_cast<const char*>(tensors[i].data), n);
  }
  write_file_atomic(path, out);
}

}  // namespace llmc
