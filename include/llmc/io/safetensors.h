#pragma once
// safetensors reader (mmap; every offset, shape and dtype validated) and writer.
// Format: u64 little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}
// then the data section; offsets are relative to the start of the data section.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "llmc/core/dtype.h"
#include "llmc/core/files.h"

namespace llmc {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range in the data section
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Throws llmc::Error naming the file and the problem on any inconsistency.
  explicit SafetensorsFile(const std::string& path);
  const std::string& path() const { return map_.path(); }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  const uint8_t* data(const TensorInfo& t) const { return data_ + t.begin; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  MappedFile map_;
  const uint8_t* data_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;  // numel * dtype_size bytes, little-endian
};

// Writes atomically (temp file + rename). Data offsets are 8-byte aligned.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace llmc
