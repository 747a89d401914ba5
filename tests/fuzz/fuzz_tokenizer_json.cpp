// Fuzz target: a Hugging Face tokenizer.json, optionally followed by a line "#####" and a
// tokenizer_config.json (tokenizer/bpe.h load_bpe_tokenizer_json); a tokenizer that loads encodes
// and decodes a few texts, and its ids must stay inside the vocabulary.
#include <memory>

#include "fuzz_common.h"
#include "llmc/tokenizer/bpe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  const std::string sep = "\n#####\n";
  const size_t cut = in.find(sep);
  const std::string tj = llmc::fuzz::scratch_file("tokenizer.json", in.substr(0, cut));
  std::string tc;
  if (cut != std::string::npos) tc = llmc::fuzz::scratch_file("tokenizer_config.json", in.substr(cut + sep.size()));
  std::unique_ptr<llmc::Tokenizer> tok;
  llmc::fuzz::run([&] { tok = llmc::load_bpe_tokenizer_json(tj, tc); });
  if (!tok) return 0;
  llmc::fuzz::check_encode_decode(*tok, {"ab abc 12 345", "  a\n\nb\tc", "<|endoftext|>ab<user>",
                                         "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80 's 'LL"});
  return 0;
}
