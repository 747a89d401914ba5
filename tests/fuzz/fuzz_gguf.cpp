// Fuzz target: a GGUF file (io/gguf.h) and everything read from one: metadata getters, every
// tensor dequantized (io/gguf_quants), the Llama config and the full HF conversion
// (model/gguf_llama.h), and the tokenizer from its metadata, which then encodes and decodes.
#include <cmath>
#include <memory>

#include "fuzz_common.h"
#include "llmc/io/gguf.h"
#include "llmc/model/gguf_llama.h"
#include "llmc/tokenizer/bpe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = llmc::fuzz::scratch_file("model.gguf", data, size);
  llmc::fuzz::run([&] {
    llmc::GGUFFile f(path);
    for (const auto& [k, v] : f.metadata()) {
      if (f.find_value(k) == nullptr) llmc::fuzz::bug("find_value misses key " + k);
    }
    double sum = 0;
    for (const auto& t : f.tensors()) {
      if (t.numel > (1 << 20)) continue;  // the reader checked the range; keep each run fast
      try {
        const std::vector<float> w = f.dequantize(t);
        if (static_cast<int64_t>(w.size()) != t.numel) llmc::fuzz::bug("dequantize size for " + t.name);
        for (float x : w) sum += std::isfinite(x) ? x : 0;
      } catch (const llmc::Error&) {
        // a type without a dequantizer: a rejection like any other
      }
    }
    if (sum == 12345.678) std::puts("");
  });
  std::unique_ptr<llmc::Tokenizer> tok;
  llmc::fuzz::run([&] {
    llmc::GGUFFile f(path);
    tok = llmc::tokenizer_from_gguf(f);
    std::vector<int32_t> all;
    for (int32_t i = 0; i < std::min(tok->vocab_size(), 64); ++i) all.push_back(i);
    tok->decode(all);
  });
  if (tok) {
    for (const char* text : {"ab a", " b\xC3\xA9 12\n", "", "<s>a</s><|im_start|>"}) {
      llmc::fuzz::run([&] {
        const auto ids = tok->encode(text, true);
        for (int32_t id : ids)
          if (id < 0 || id >= tok->vocab_size()) llmc::fuzz::bug("encode gave an id outside the vocabulary");
        tok->decode(ids);
      });
    }
  }
  llmc::fuzz::run([&] {
    llmc::GGUFFile f(path);
    const llmc::ModelConfig c = llmc::gguf_llama_config(f);
    // The full conversion dequantizes every tensor: only for small models.
    int64_t total = 0;
    for (const auto& t : f.tensors()) total += t.numel > 0 ? t.numel : 0;
    if (total <= (1 << 22) && c.hidden_size <= 4096) llmc::read_gguf_llama(f);
  });
  return 0;
}
