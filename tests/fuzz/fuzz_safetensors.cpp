// Fuzz target: a safetensors file (io/safetensors.h): header, offsets, dtypes, shapes; every tensor's
// bytes are read, so a range the reader accepted but that lies outside the mapping is an ASan report.
#include <cstring>

#include "fuzz_common.h"
#include "llmc/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = llmc::fuzz::scratch_file("model.safetensors", data, size);
  llmc::fuzz::run([&] {
    llmc::SafetensorsFile f(path);
    uint64_t sum = 0;
    for (const auto& t : f.tensors()) {
      if (f.find(t.name) != &t) llmc::fuzz::bug("find() disagrees with tensors() for " + t.name);
      const size_t n = static_cast<size_t>(t.end - t.begin);
      if (n != static_cast<size_t>(t.numel()) * llmc::dtype_size(t.dtype))
        llmc::fuzz::bug("accepted a byte range that disagrees with the shape: " + t.name);
      const uint8_t* p = f.data(t);
      for (size_t i = 0; i < n; ++i) sum += p[i];
    }
    for (const auto& [k, v] : f.metadata()) sum += k.size() + v.size();
    if (sum == 0xdeadbeef) std::puts("");
  });
  return 0;
}
